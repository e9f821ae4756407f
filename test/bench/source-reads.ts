/**
 * The source's read path alone, A/B in one run (issue 16): the message stream of a diff (rbdMessages,
 * no network, no destination) with the read plan of today — many small reads in flight within the
 * window's byte budget, nearby small extents read together — against the plan before it (one read per
 * extent, 8 in flight: the same code with readsInFlight 1, whose count bound is 8 small reads, as a full
 * copy, which never reads two extents together; its zero ranges cost no I/O) and against 8 in flight
 * reading nearby extents together,
 * alternating which goes first. Two diffs of a 1 GiB image on site-a: ~2% changed in 64 KiB extents
 * (idle), and a few seconds of `rbd bench --io-type write --io-size 4K --io-pattern rand` — read while
 * that writer keeps writing.
 *
 *   node dist/test/bench/source-reads.js [--runs 5]
 */
import type { ChildProcess } from "node:child_process";
import type { Image } from "../../agents/ceph";
import { newStats, rbdMessages } from "../../agents/transfer/source";
import { FramePool } from "../../agents/transfer/wire";
import type { TransferHeader } from "../../src/gen/rbdbackup/v1/transfer";
import { connectLab, rbd, uniqueName } from "../helpers/lab";
import { randomWriter } from "./ceph-cli";
import { arg, median } from "./measure";
import { MiB, scatterExtents } from "./scenarios/backup-timing";

const runs = Number(arg("runs", "5"));

/** The read plans compared: before (one read per extent, 8 in flight), 8 in flight reading nearby extents together, and today's. */
const VARIANTS = {
  before: { readsInFlight: 1, together: false },
  together8: { readsInFlight: 1, together: true },
  together16: { readsInFlight: 2, together: true },
  now: { readsInFlight: 8, together: true },
} as const;
type Variant = keyof typeof VARIANTS;

async function stream(img: Image, from: string, v: Variant): Promise<{ s: number; chunks: number }> {
  const header = { imageSize: 1024 * MiB } as TransferHeader;
  const { readsInFlight, together } = VARIANTS[v];
  const opts = { readsInFlight, chunkSize: 4 * MiB, frames: new FramePool() };
  const stats = newStats();
  const t = process.hrtime.bigint();
  let chunks = 0;
  for await (const m of rbdMessages(img, header, { fromSnapshot: from, fullCopy: !together }, opts, stats))
    if (m.body?.$case === "chunk") chunks++;
  return { s: Number(process.hrtime.bigint() - t) / 1e9, chunks };
}

async function ab(label: string, img: Image, from: string): Promise<void> {
  const names = Object.keys(VARIANTS) as Variant[];
  const times = new Map<Variant, number[]>(names.map((n) => [n, []]));
  let chunks = 0;
  for (let i = 0; i < runs; i++) {
    // Rotate who goes first.
    const order = names.map((_, k) => names[(k + i) % names.length] as Variant);
    for (const v of order) {
      const r = await stream(img, from, v);
      times.get(v)?.push(r.s);
      chunks = r.chunks;
    }
  }
  const parts = names.map((n) => {
    const xs = times.get(n) ?? [];
    return `${n} ${median(xs).toFixed(3)} s [${xs.map((x) => x.toFixed(2)).join(" ")}]`;
  });
  console.log(`${label}: ${chunks} chunks — ${parts.join(", ")}`);
}

async function main(): Promise<void> {
  const c = await connectLab("site-a");
  const io = await c.openIoCtx("rbd");
  const vol = uniqueName("bench-reads");
  const spec = `rbd/${vol}`;
  let w: ChildProcess | null = null;
  try {
    await io.imageCreate(vol, 1024 * MiB);
    await rbd("site-a", ["snap", "create", `${spec}@s0`]);
    await scatterExtents(io, vol, 1024 * MiB, 328, 64 * 1024);
    await rbd("site-a", ["snap", "create", `${spec}@s1`]);
    const at1 = await io.imageOpen(vol, { snapshot: "s1" });
    await ab("idle, 328 extents of 64 KiB", at1, "s0");
    await at1.close();
    if (arg("only", "") === "idle") return;
    // The writer's changes of ~5 s, then read while it keeps writing.
    w = randomWriter(spec, 2 ** 40);
    await new Promise((r) => setTimeout(r, 5000));
    await rbd("site-a", ["snap", "create", `${spec}@s2`]);
    const at2 = await io.imageOpen(vol, { snapshot: "s2" });
    await ab("under rbd bench 4 KiB random writes, its changes since s1", at2, "s1");
    await at2.close();
  } finally {
    if (w && w.exitCode === null) {
      const exited = new Promise((r) => w?.on("exit", r));
      w.kill("SIGKILL");
      await exited;
    }
    // The killed writer's watch and lock time out on the OSD; removal retries until then.
    for (let i = 0; i < 20; i++) {
      const ok = await rbd("site-a", ["snap", "purge", "--no-progress", spec])
        .then(() => rbd("site-a", ["rm", "--no-progress", spec]))
        .then(
          () => true,
          () => false,
        );
      if (ok) break;
      await new Promise((r) => setTimeout(r, 3000));
    }
    await io.close();
    await c.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
