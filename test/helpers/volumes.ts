/** Test volumes on the lab clusters: create, fill and change them through the addon; identify them by `rbd export` checksums. */
import { randomBytes } from "node:crypto";
import { type Cluster, type IoCtx, isCephError } from "../../agents/ceph";
import { delay } from "../../src/common/retry";
import type { ImageRef } from "../../src/gen/rbdbackup/v1/common";
import { connectLab, rbdExportSha256, uniqueName } from "./lab";
import { waitFor } from "./wait";
import { rng } from "./zero-oracle";

export const MiB = 1 << 20;

/**
 * Where change() writes and discards (and other tests' layouts): a seeded generator in [0, 1), its seed
 * printed once per process, so a failure's layout can be replayed (RBDBACKUP_TEST_SEED=<n>); the bytes
 * written stay random.
 */
const layoutSeed = Number(process.env.RBDBACKUP_TEST_SEED ?? Date.now() % 2 ** 31);
let layoutRng: (() => number) | undefined;
export function layoutRandom(): number {
  if (!layoutRng) {
    console.log(`# volume layouts: seed ${layoutSeed} (RBDBACKUP_TEST_SEED=${layoutSeed} replays them)`);
    layoutRng = rng(layoutSeed);
  }
  return layoutRng();
}

export class Volumes {
  #clusters = new Map<string, Cluster>();
  #io = new Map<string, IoCtx>();
  readonly made: Array<{ cluster: string; pool: string; image: string }> = [];

  async io(cluster: string, pool: string): Promise<IoCtx> {
    const key = `${cluster}/${pool}`;
    let io = this.#io.get(key);
    if (!io) {
      let c = this.#clusters.get(cluster);
      if (!c) {
        c = await connectLab(cluster);
        this.#clusters.set(cluster, c);
      }
      io = await c.openIoCtx(pool);
      this.#io.set(key, io);
    }
    return io;
  }

  /** A new image with `mib` MiB of size and `writes` random writes (up to 1 MiB each). */
  async create(cluster: string, pool: string, mib: number, writes = 20, prefix = "vol"): Promise<ImageRef> {
    const image = uniqueName(prefix);
    const io = await this.io(cluster, pool);
    await io.imageCreate(image, mib * MiB);
    this.made.push({ cluster, pool, image });
    await this.change({ pool, namespace: "", image }, cluster, { writes });
    return { pool, namespace: "", image };
  }

  /** Random writes (4 KiB..1 MiB, unaligned), discards, and an optional resize. */
  async change(
    v: ImageRef,
    cluster: string,
    o: { writes?: number; discards?: number; resizeMiB?: number; maxWrite?: number },
  ): Promise<void> {
    const io = await this.io(cluster, v.pool);
    const img = await io.imageOpen(v.image);
    try {
      if (o.resizeMiB) await img.resize(o.resizeMiB * MiB);
      const size = (await img.stat()).size;
      const maxWrite = o.maxWrite ?? MiB;
      const rnd = (n: number) => Math.floor(layoutRandom() * n);
      const ops: Promise<unknown>[] = [];
      for (let i = 0; i < (o.writes ?? 0); i++) {
        const len = 4096 + rnd(maxWrite - 4096);
        ops.push(img.write(randomBytes(len), rnd(size - len)));
      }
      for (let i = 0; i < (o.discards ?? 0); i++) {
        const len = 4096 + rnd(2 * MiB);
        ops.push(img.discard(rnd(size - len), len));
      }
      // Every op settles before the handle closes, even when one fails: librbd aborts the process
      // (AsyncOpTracker) when a handle is closed under its own ops.
      const failed = (await Promise.allSettled(ops)).find((r) => r.status === "rejected");
      if (failed) throw failed.reason;
      await img.flush();
    } finally {
      await img.close();
    }
  }

  async snapNames(cluster: string, v: ImageRef): Promise<string[]> {
    const io = await this.io(cluster, v.pool);
    const img = await io.imageOpen(v.image, { readOnly: true });
    try {
      return (await img.snapList()).map((s) => s.name);
    } finally {
      await img.close();
    }
  }

  /**
   * Waits until the volume's backup snapshots are exactly `want` (in creation order): the coordinator's
   * snapshot hygiene removes what no chain needs right after a backup job ends, not within it.
   */
  async settledBackupSnaps(cluster: string, v: ImageRef, want: string[], timeoutMs = 30_000): Promise<void> {
    let seen: string[] = [];
    await waitFor(
      async () => {
        seen = (await this.snapNames(cluster, v)).filter((s) => s.startsWith("backup."));
        return JSON.stringify(seen) === JSON.stringify(want);
      },
      {
        what: () => `backup snapshots of ${v.pool}/${v.image} to be ${want.join(", ")} (seen: ${seen.join(", ")})`,
        timeoutMs,
      },
    );
  }

  async exists(cluster: string, pool: string, image: string): Promise<boolean> {
    return (await (await this.io(cluster, pool)).imageList()).includes(image);
  }

  /**
   * The chains' base images of the volumes this helper made (`<image>.backup.<id>`, in the lab's backup
   * pools of every cluster it used and site-b's), so that backups made through an API leave the lab too.
   */
  async #baseImages(): Promise<Array<{ cluster: string; pool: string; image: string }>> {
    const volumes = this.made.filter((m) => !m.image.includes(".backup."));
    const clusters = new Set([...this.made.map((m) => m.cluster), "site-a", "site-b"]);
    const tracked = new Set(this.made.map((m) => `${m.cluster}/${m.pool}/${m.image}`));
    const out: Array<{ cluster: string; pool: string; image: string }> = [];
    for (const cluster of clusters)
      for (const pool of ["backups", "rbd"]) {
        const io = await this.io(cluster, pool).catch(() => null);
        const names = io ? await io.imageList().catch(() => []) : [];
        for (const image of names)
          if (
            volumes.some((v) => image.startsWith(`${v.image}.backup.`)) &&
            !tracked.has(`${cluster}/${pool}/${image}`)
          )
            out.push({ cluster, pool, image });
      }
    return out;
  }

  /**
   * Removes every image this helper made (with its snapshots) and its volumes' base images, then
   * disconnects. An image already gone is fine; one that still has watchers (an agent killed with it
   * open: its watch lingers until the OSD times it out, osd_client_watch_timeout, 30 s) is tried again
   * for up to 45 s; any other failure is thrown once everything else was tried, so a test that leaves
   * images behind fails where it did, not in the run's leftover check.
   */
  async cleanup(): Promise<void> {
    const failures: string[] = [];
    /** Notes a failure (an image already gone is none); returns null for the caller's `?? skip`. */
    const note = (what: string, e: unknown): null => {
      if (!isCephError(e, "ENOENT")) failures.push(`${what}: ${(e as Error).message}`);
      return null;
    };
    // Base images last (their snapshots may be the parents of clones made earlier).
    this.made.unshift(...(await this.#baseImages().catch((e) => note("listing base images", e) ?? [])));
    // Newest first: a clone (tracked after the backup it was made from) goes before the base image
    // whose protected snapshot it depends on.
    for (const m of [...this.made].reverse()) {
      const where = `${m.cluster}/${m.pool}/${m.image}`;
      const io = await this.io(m.cluster, m.pool).catch((e) => note(where, e));
      if (!io) continue;
      const img = await io.imageOpen(m.image).catch((e) => note(where, e));
      if (img) {
        try {
          for (const s of await img.snapList()) {
            if (s.protected) await img.snapUnprotect(s.name);
            await img.snapRemove(s.name);
          }
        } catch (e) {
          note(`${where} snapshots`, e);
        } finally {
          await img.close().catch((e) => note(`${where} close`, e));
        }
      }
      // A name the binding refuses throws before any promise: caught too, so one bad entry cannot stop the rest.
      const deadline = Date.now() + 45_000;
      for (;;) {
        try {
          await Promise.resolve().then(() => io.imageRemove(m.image));
          break;
        } catch (e) {
          if (isCephError(e, "EBUSY") && Date.now() < deadline) {
            await delay(500);
            continue;
          }
          note(`${where} remove`, e);
          break;
        }
      }
    }
    for (const io of this.#io.values()) await io.close().catch(() => {});
    for (const c of this.#clusters.values()) await c.close().catch(() => {});
    if (failures.length > 0) throw new Error(`Volumes.cleanup left images behind:\n  ${failures.join("\n  ")}`);
  }

  /** Adds an image to remove at cleanup; "" (a FAILED backup's base image, never made) is nothing to track. */
  track(cluster: string, pool: string, image: string): void {
    if (image) this.made.push({ cluster, pool, image });
  }
}

export async function sha(cluster: string, spec: string): Promise<string> {
  const r = await rbdExportSha256(cluster, spec);
  return `${r.sha256}:${r.bytes}`;
}

export function spec(v: ImageRef, snap?: string): string {
  return `${v.pool}/${v.namespace ? `${v.namespace}/` : ""}${v.image}${snap ? `@${snap}` : ""}`;
}
