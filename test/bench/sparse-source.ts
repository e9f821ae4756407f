/**
 * The sparse scenario's source side alone (issue 16): a 4 GiB image with 64 MiB written in 256 KiB random
 * writes (`rbd bench`, as test/bench/scenarios/sparse.ts makes it), its full diff read as a transfer's
 * source streams it (rbdMessages: diff walk, reads, zero detection; no network, no destination) against
 * `rbd export-diff IMAGE@SNAP - | wc -c`, alternating who goes first. On memstore every written object
 * reads back from 0 to its last written byte (~490 MiB here): both read it all; only ours skips the zeros.
 * Figures only.
 *
 *   node dist/test/bench/sparse-source.js [--runs 3] [--reads-in-flight 8] [--chunk-mib 2]
 */
import { spawnSync } from "node:child_process";
import { newStats, rbdMessages } from "../../agents/transfer/source";
import { FramePool } from "../../agents/transfer/wire";
import type { TransferHeader } from "../../src/gen/rbdbackup/v1/transfer";
import { connectLab, labCluster, rbd, uniqueName } from "../helpers/lab";
import { arg, median } from "./measure";

const MiB = 1 << 20;

async function main(): Promise<void> {
  const runs = Number(arg("runs", "3"));
  const readsInFlight = Number(arg("reads-in-flight", "8"));
  const chunkSize = Number(arg("chunk-mib", "2")) * MiB;
  const conf = labCluster("site-a").conf;
  const c = await connectLab("site-a");
  const io = await c.openIoCtx("rbd");
  const vol = uniqueName("bench-sparse-src");
  const spec = `rbd/${vol}`;
  try {
    await io.imageCreate(vol, 4096 * MiB);
    await rbd("site-a", [
      "bench",
      "--io-type",
      "write",
      "--io-size",
      "256K",
      "--io-pattern",
      "rand",
      "--io-total",
      "64M",
      spec,
    ]);
    await rbd("site-a", ["snap", "create", `${spec}@s`]);
    const img = await io.imageOpen(vol, { snapshot: "s" });
    const ours: number[] = [];
    const cli: number[] = [];
    try {
      for (let r = 0; r < runs; r++) {
        for (const who of r % 2 ? ["cli", "ours"] : ["ours", "cli"]) {
          const t = process.hrtime.bigint();
          let bytes = 0;
          if (who === "ours") {
            const opts = {
              readsInFlight,
              maxReadsInFlight: Math.ceil(1.5 * readsInFlight),
              chunkSize,
              frames: new FramePool(),
            };
            const header = { imageSize: 4096 * MiB } as TransferHeader;
            for await (const m of rbdMessages(img, header, { fullCopy: false }, opts, newStats()))
              if (m.body?.$case === "chunk") bytes += m.body.value.data.length;
          } else {
            const p = spawnSync("bash", ["-c", `rbd -c ${conf} export-diff ${spec}@s - | wc -c`], { encoding: "utf8" });
            if (p.status !== 0) throw new Error(`rbd export-diff failed: ${p.stderr}`);
            bytes = Number(p.stdout.trim());
          }
          const s = Number(process.hrtime.bigint() - t) / 1e9;
          (who === "ours" ? ours : cli).push(s);
          console.log(`${who}: ${s.toFixed(3)} s, ${(bytes / MiB).toFixed(1)} MiB out`);
        }
      }
    } finally {
      await img.close();
    }
    const o = median(ours);
    const k = median(cli);
    console.log(
      `source alone: ours ${o.toFixed(3)} s, rbd export-diff ${k.toFixed(3)} s (medians of ${runs}): ${(k / o).toFixed(2)}× the CLI's export`,
    );
  } finally {
    await rbd("site-a", ["snap", "purge", "--no-progress", spec]).catch(() => {});
    await io.imageRemove(vol).catch((e: unknown) => console.error(e));
    await io.close();
    await c.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
