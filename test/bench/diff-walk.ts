/**
 * What an incremental's diff walk costs (agents/ceph/pruned-diff.ts), side by side in one run: on a thin
 * volume with a few objects changed between two snapshots (and its first `--allocated` % of objects
 * holding data before them), librbd's exact walk (rbd_diff_iterate2 through the addon, every object asked), the
 * walk incrementals take — exact, over the objects that exist at either snapshot (prunedDiff) — and the
 * walk pruned by the object map's "written since" (unsafe after a rollback: reference only), against
 * the Ceph CLI doing each: `rbd diff --from-snap` (exact; the Cinder driver's `rbd export-diff` walks the
 * same way) and `rbd diff --whole-object --from-snap` (object map). Wall time and CPU (this process's;
 * the CLI's from its children's), medians of the rounds, and ratios ours/CLI; the extents of the exact
 * and the pruned walk compared. The OSDs answer every exact walk from memory (memstore): on disks the
 * exact walk costs more.
 *
 *   node dist/test/bench/diff-walk.js [--gib 64] [--objects 128] [--allocated 0] [--rounds 3]
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { Image } from "../../agents/ceph";
import { changedRuns, prunedDiff } from "../../agents/ceph/pruned-diff";
import { connectLab, labCluster, uniqueName } from "../helpers/lab";
import { arg, childrenCpu, median } from "./measure";

const execFileP = promisify(execFile);
const gib = Number(arg("gib", "64"));
const objects = Number(arg("objects", "128"));
const rounds = Number(arg("rounds", "3"));
const allocated = Number(arg("allocated", "0"));
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
    // The volume's data before any snapshot: its first --allocated % of objects, 4 KiB each (a filled
    // filesystem's; spread evenly instead, objects fewer than RUN_GAP_OBJECTS apart are walked as one run).
    if (allocated > 0) {
      const writes: Promise<unknown>[] = [];
      for (let k = 0; k < Math.floor((total * allocated) / 100); k++) {
        writes.push(img.write(buf, k * OBJ));
        if (writes.length >= 32) await Promise.all(writes.splice(0));
      }
      await Promise.all(writes);
      await img.flush();
      await img.snapCreate("s0");
    }
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
    const collect = async (it: AsyncIterable<unknown[]>) => {
      const out: unknown[] = [];
      for await (const b of it) out.push(...b);
      return out;
    };
    const sameExtents =
      JSON.stringify(await collect(snapAt.diff({ fromSnapshot: "s1" }))) ===
      JSON.stringify(await collect(prunedDiff(snapAt, { fromSnapshot: "s1" })));
    const walks: Record<string, () => Promise<unknown>> = {
      exact: () => collect(snapAt.diff({ fromSnapshot: "s1" })),
      "pruned by existence": () => collect(prunedDiff(snapAt, { fromSnapshot: "s1" })),
      "by 'written since'": async () => {
        for (const [offset, length] of await changedRuns(snapAt, { fromSnapshot: "s1" }, OBJ))
          await collect(snapAt.diff({ fromSnapshot: "s1", offset, length }));
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
    console.log(
      `diff walk of a thin ${gib} GiB image, ${allocated}% of its objects allocated, ${objects} objects changed, ${rounds} rounds (medians); exact and pruned extents the same: ${sameExtents ? "yes" : "NO"}`,
    );
    for (const k of Object.keys(walks))
      console.log(
        `  ${k.padEnd(24)} ${med(k, "ms").toFixed(0).padStart(6)} ms  ${med(k, "cpuMs").toFixed(0).padStart(6)} CPU-ms`,
      );
    console.log(
      `  ratios: exact/rbd diff ${(med("exact", "ms") / med("rbd diff", "ms")).toFixed(2)}× time, pruned by existence/rbd diff ${(med("pruned by existence", "ms") / med("rbd diff", "ms")).toFixed(2)}× time and ${(med("pruned by existence", "cpuMs") / med("rbd diff", "cpuMs")).toFixed(2)}× CPU; exact/pruned by existence ${(med("exact", "ms") / med("pruned by existence", "ms")).toFixed(1)}×`,
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
