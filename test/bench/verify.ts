/**
 * FULL verification of a backup against `rbd export` of the same snapshot to /dev/null, side by side:
 * a volume fully written with random data is backed up (site-a agent → site-b agent), then, rounds
 * alternating in order, the backup's snapshot on site-b is read by the VERIFY operation
 * (agents/engine/verify.ts, in this process: reads in flight, CRC-32C per block, compared with the map)
 * and by `rbd export <base>@<snap> -` piped to /dev/null. Prints medians and the ratio of throughputs
 * (verify / export; the issue asks ≥ 0.8).
 *
 *   node dist/test/bench/verify.js [--mib 1024] [--rounds 3]
 */
import { spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import type { EngineContext } from "../../agents/engine/context";
import { newProgress } from "../../agents/engine/progress";
import { verifyBackup } from "../../agents/engine/verify";
import { logger } from "../../src/common/log";
import { VerifyMode, VerifyRequest } from "../../src/gen/rbdbackup/v1/agent";
import { startAgent } from "../helpers/agents";
import { connectLab, labCluster, uniqueName } from "../helpers/lab";
import { arg, median } from "./measure";

const MiB = 1 << 20;
const mib = Number(arg("mib", "1024"));
const rounds = Number(arg("rounds", "3"));

async function timed<T>(f: () => Promise<T>): Promise<[number, T]> {
  const t = process.hrtime.bigint();
  const r = await f();
  return [Number(process.hrtime.bigint() - t) / 1e9, r];
}

/** `rbd export <spec> -` with stdout on /dev/null (bounded: 10 minutes). */
function rbdExportToNull(cluster: string, spec: string): Promise<void> {
  const c = labCluster(cluster);
  const out = openSync("/dev/null", "w");
  return new Promise<void>((resolve, reject) => {
    const p = spawn("rbd", ["-c", c.conf, "export", "--no-progress", spec, "-"], {
      stdio: ["ignore", out, "pipe"],
      timeout: 600_000,
    });
    let err = "";
    p.stderr?.on("data", (d) => {
      err += d;
    });
    p.on("error", reject);
    p.on("close", (code) => {
      closeSync(out);
      if (code === 0) resolve();
      else reject(new Error(`rbd export ${spec} exited ${code}: ${err.trim()}`));
    });
  });
}

async function main(): Promise<void> {
  const [agentA, agentB] = await Promise.all([startAgent("site-a"), startAgent("site-b")]);
  const ca = await connectLab("site-a");
  const cb = await connectLab("site-b");
  const ioA = await ca.openIoCtx("rbd");
  const vol = uniqueName("bench-verify");
  let backupId = "";
  try {
    await ioA.imageCreate(vol, mib * MiB);
    const img = await ioA.imageOpen(vol);
    const buf = randomBytes(4 * MiB);
    for (let off = 0; off < mib * MiB; off += 64 * MiB) {
      await Promise.all(
        Array.from({ length: 16 }, (_, i) => (off + i * 4 * MiB < mib * MiB ? img.write(buf, off + i * 4 * MiB) : 0)),
      );
    }
    await img.flush();
    await img.close();
    backupId = randomUUID();
    const r = await agentA.client.backup({
      backupId,
      source: { $case: "volume", value: { pool: "rbd", namespace: "", image: vol } },
      destination: { address: agentB.transferAddress, clusterFsid: "" },
      destinationPool: "backups",
    });
    const ctx = { cluster: cb, log: logger({ bench: "verify" }) } as unknown as EngineContext;
    const req = VerifyRequest.fromPartial({
      backupId,
      mode: VerifyMode.VERIFY_MODE_FULL,
      backupPool: "backups",
      baseImage: r.baseImage,
      snapshot: r.snapshot,
      imageDigest: r.imageDigest,
    });
    const ours: number[] = [];
    const cli: number[] = [];
    for (let k = 0; k < rounds; k++) {
      const order = k % 2 === 0 ? ["ours", "cli"] : ["cli", "ours"];
      for (const which of order) {
        if (which === "ours") {
          const [s, v] = await timed(() => verifyBackup(ctx, req, AbortSignal.timeout(600_000), newProgress()));
          if (!v.ok || v.bytesRead !== mib * MiB) throw new Error(`verify did not pass: ${v.reason}`);
          ours.push(s);
        } else {
          const [s] = await timed(() => rbdExportToNull("site-b", `backups/${r.baseImage}@${r.snapshot}`));
          cli.push(s);
        }
      }
    }
    const mibps = (s: number) => mib / s;
    const row = (name: string, xs: number[]) =>
      `${name.padEnd(34)} ${median(xs).toFixed(2).padStart(7)} s  ${mibps(median(xs)).toFixed(0).padStart(5)} MiB/s   (${xs.map((x) => x.toFixed(2)).join(", ")})`;
    console.log(`FULL verify vs rbd export, ${mib} MiB of random data, ${rounds} rounds (median)`);
    console.log(row("rbdbackup VERIFY FULL", ours));
    console.log(row("rbd export … - > /dev/null", cli));
    console.log(`ratio (verify / export throughput): ${(median(cli) / median(ours)).toFixed(2)}  (aim ≥ 0.8)`);
  } finally {
    if (backupId) await agentB.client.deleteBackup({ backupId, pool: "backups" }).catch(() => {});
    const left = await ioA.imageOpen(vol).catch(() => null);
    for (const s of (await left?.snapList().catch(() => [])) ?? []) await left?.snapRemove(s.name).catch(() => {});
    await left?.close().catch(() => {});
    await ioA.imageRemove(vol).catch(() => {});
    await ioA.close().catch(() => {});
    await Promise.all([agentA.stop(), agentB.stop()]);
    await Promise.all([ca.close(), cb.close()]);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
