/**
 * What an incremental's diff walk costs (agents/ceph/pruned-diff.ts), side by side in one run: on a thin
 * volume with a few objects changed between two snapshots, the exact walk an incremental takes (librbd's
 * rbd_diff_iterate2 through the addon, every object asked) against the walk pruned by the object map
 * (which full backups take, and incrementals took until a rollback was found to fool it), and the Ceph CLI
 * doing each: `rbd diff --from-snap` (exact; the Cinder driver's `rbd export-diff` walks the same way)
 * and `rbd diff --whole-object --from-snap` (object map). Wall time and CPU (this process's; the CLI's
 * from its children's), medians of the rounds, and ratios ours/CLI. The OSDs answer every exact walk
 * from memory (memstore): on disks the exact walk costs more.
 *
 *   node dist/test/bench/diff-walk.js [--gib 64] [--objects 128] [--rounds 3]
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { Image } from "../../agents/ceph";
import { changedRuns } from "../../agents/ceph/pruned-diff";
import { connectLab, labCluster, uniqueName } from "../helpers/lab";
import { arg, childrenCpu, median } from "./measure";

const execFileP = promisify(execFile);
const gib = Number(arg("gib", "64"));
const objects = Number(arg("objects", "128"));
const rounds = Number(arg("rounds", "3"));
const OBJ = 4 << 20;

type Cost = { ms: number; cpuMs: number };

async function cost(f: () => Promise<unknown>, cpu: () => number): Promise<Cost> {
  const c0 = cpu();
  const t0 = performance.now();
  await f();
  return { ms: performance.now() - t0, cpuMs: cpu() - c0 };
}

const ownCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function main(): Promise<void> {
  const c = await connectLab("site-a");
  const io = await c.openIoCtx("rbd");
  const name = uniqueName("bench-diff-walk");
  const conf = labCluster("site-a").conf;
  await io.imageCreate(name, gib * 2 ** 30);
  let at: Image | undefined;
  try {
    const img = await io.imageOpen(name);
    const buf = Buffer.alloc(4096, 7);
    const total = (gib * 2 ** 30) / OBJ;
    // `objects` objects spread over the image before s1, and as many others changed before s2.
    for (const [seed, snap] of [
      [1, "s1"],
      [5, "s2"],
    ] as const) {
      for (let i = 0; i < objects; i++) await img.write(buf, ((i * 127 + seed) % total) * OBJ);
      await img.flush();
      await img.snapCreate(snap);
    }
    await img.close();
    at = await io.imageOpen(name, { snapshot: "s2", readOnly: true });
    const snapAt = at;
    const count = async (it: AsyncIterable<unknown[]>) => {
      let n = 0;
      for await (const b of it) n += b.length;
      return n;
    };
    const walks: Record<string, () => Promise<unknown>> = {
      exact: () => count(snapAt.diff({ fromSnapshot: "s1" })),
      pruned: async () => {
        for (const [offset, length] of await changedRuns(snapAt, { fromSnapshot: "s1" }, OBJ))
          await count(snapAt.diff({ fromSnapshot: "s1", offset, length }));
      },
      "rbd diff": () => execFileP("rbd", ["-c", conf, "diff", "--from-snap", "s1", `rbd/${name}@s2`]),
      "rbd diff --whole-object": () =>
        execFileP("rbd", ["-c", conf, "diff", "--whole-object", "--from-snap", "s1", `rbd/${name}@s2`]),
    };
    const got: Record<string, Cost[]> = {};
    for (let r = 0; r < rounds; r++)
      for (const [k, f] of Object.entries(walks)) {
        const costs = got[k] ?? [];
        got[k] = costs;
        costs.push(await cost(f, k.startsWith("rbd") ? () => childrenCpu() * 1000 : ownCpu));
      }
    const med = (k: string, f: keyof Cost) => median((got[k] ?? []).map((x) => x[f]));
    console.log(`diff walk of a thin ${gib} GiB image, ${objects} objects changed, ${rounds} rounds (medians):`);
    for (const k of Object.keys(walks))
      console.log(
        `  ${k.padEnd(24)} ${med(k, "ms").toFixed(0).padStart(6)} ms  ${med(k, "cpuMs").toFixed(0).padStart(6)} CPU-ms`,
      );
    console.log(
      `  ratios ours/CLI: exact ${(med("exact", "ms") / med("rbd diff", "ms")).toFixed(2)}× time, pruned ${(med("pruned", "ms") / med("rbd diff --whole-object", "ms")).toFixed(2)}× time; exact/pruned ${(med("exact", "ms") / med("pruned", "ms")).toFixed(1)}×`,
    );
  } finally {
    await at?.close();
    const img = await io.imageOpen(name).catch(() => null);
    if (img) {
      for (const s of await img.snapList()) await img.snapRemove(s.name);
      await img.close();
    }
    await io.imageRemove(name);
    await io.close();
    await c.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
