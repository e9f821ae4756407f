/**
 * Snapshot hygiene and restore fidelity end to end: a real coordinator and real agents on the lab.
 *
 *  - A seeded random sequence of backups (AUTO and FULL, into two locations) and deletes of one 16 MiB
 *    volume: after each step the volume holds only backup snapshots of AVAILABLE backups, at most one
 *    per location, and the newest backup of each location, while AVAILABLE, keeps its snapshot (its next
 *    incremental starts there); after deleting everything, no backup snapshot and no base image is left.
 *    The seed is printed; RBDBACKUP_HYGIENE_SEED=<n> replays a sequence.
 *  - A source created with stripe unit 64 KiB × 4 is restored to a new volume with the same order,
 *    stripe unit/count and features (`rbd info --format json`), byte-identical.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { parseBackupSnap } from "../../../src/common/ids";
import { BackupMode, RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import { backupRequest, type Deployment, deploy, succeeded } from "../../helpers/coordinator";
import { rbd, rbdJson, uniqueName } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";
import { waitFor } from "../../helpers/wait";

/** mulberry32: a small seeded PRNG in [0, 1). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const LOCATIONS = [
  { cluster: "site-b", pool: "backups", namespace: "" },
  { cluster: "site-a", pool: "backups", namespace: "" },
];
const locKey = (l: { cluster: string; pool: string }) => `${l.cluster}/${l.pool}`;

interface Made {
  id: string;
  loc: string;
  snapshot: string;
  baseImage: string;
  live: boolean;
}

describe("coordinator: source snapshot hygiene and restore fidelity", () => {
  let d: Deployment;
  const vols = new Volumes();
  const made: Made[] = [];

  before(async () => {
    d = await deploy({});
  });
  after(async () => {
    // Whatever a failed test left: its backups deleted through the API (best effort), then the volumes.
    for (const m of made.filter((x) => x.live)) {
      await d?.client
        .deleteBackup({ backupId: m.id, idempotencyKey: "" })
        .then((j) => succeeded(d.client, j.id))
        .catch(() => {});
    }
    await d?.stop();
    await vols.cleanup();
  });

  it("after a random sequence of backups and deletes, the source holds only what live chains need", async () => {
    const seed = Number(process.env.RBDBACKUP_HYGIENE_SEED ?? Date.now() % 2 ** 31);
    console.log(`snapshot hygiene sequence: seed ${seed} (RBDBACKUP_HYGIENE_SEED=${seed} replays it)`);
    const rnd = prng(seed);
    const c = d.client;
    const v = await vols.create("site-a", "rbd", 16, 4, "hyg");
    const vol: VolumeRef = { cluster: "site-a", ...v };
    const steps: string[] = [];

    const sourceBackupSnaps = async () =>
      (await vols.snapNames("site-a", v)).filter((n) => parseBackupSnap(n)).map((n) => parseBackupSnap(n)?.backupId);

    /** The invariant; "" when it holds, else what is wrong. */
    const violation = async (): Promise<string> => {
      const onSource = await sourceBackupSnaps();
      const byId = new Map(made.map((m) => [m.id, m]));
      const perLoc = new Map<string, number>();
      for (const id of onSource) {
        const m = byId.get(id as string);
        if (!m?.live) return `snapshot of ${m ? "deleted" : "unknown"} backup ${id} on the source`;
        perLoc.set(m.loc, (perLoc.get(m.loc) ?? 0) + 1);
      }
      for (const [loc, n] of perLoc) if (n > 1) return `${n} snapshots of location ${loc} on the source`;
      for (const l of LOCATIONS) {
        const newest = made.filter((m) => m.loc === locKey(l)).at(-1);
        if (newest?.live && !onSource.includes(newest.id))
          return `the newest backup of ${locKey(l)} (${newest.id}) lost its source snapshot`;
      }
      return "";
    };
    const settled = async (step: string) => {
      let last = "";
      await waitFor(
        async () => {
          last = await violation();
          return last === "";
        },
        {
          what: () =>
            `the source snapshots to settle after ${step} (seed ${seed}; steps: ${steps.join("; ")}): ${last}`,
          timeoutMs: 60_000,
          intervalMs: 250,
        },
      );
    };

    const ops = 12;
    for (let i = 0; i < ops; i++) {
      const live = made.filter((m) => m.live);
      const r = rnd();
      if (live.length > 0 && (r < 0.3 || i === ops - 1)) {
        const victim = live[Math.floor(rnd() * live.length)] as Made;
        steps.push(`delete ${victim.id.slice(0, 8)}@${victim.loc}`);
        await succeeded(c, (await c.deleteBackup({ backupId: victim.id, idempotencyKey: "" })).id);
        victim.live = false;
      } else {
        const loc = LOCATIONS[Math.floor(rnd() * LOCATIONS.length)] as (typeof LOCATIONS)[number];
        const full = rnd() < 0.2;
        await vols.change(v, "site-a", { writes: 3 });
        const j = await c.createBackup(
          backupRequest(vol, { location: loc, mode: full ? BackupMode.BACKUP_MODE_FULL : BackupMode.BACKUP_MODE_AUTO }),
        );
        const b = (await succeeded(c, j.id)).backup;
        assert.ok(b);
        made.push({ id: b.id, loc: locKey(loc), snapshot: b.snapshot, baseImage: b.baseImage, live: true });
        steps.push(`${full ? "full" : b.incremental ? "incr" : "auto-full"} ${b.id.slice(0, 8)}@${locKey(loc)}`);
      }
      await settled(steps.at(-1) as string);
    }
    console.log(`steps: ${steps.join("; ")}`);

    // Everything deleted: no backup snapshot on the source, no base image of the volume in either pool.
    for (const m of made.filter((x) => x.live)) {
      await succeeded(c, (await c.deleteBackup({ backupId: m.id, idempotencyKey: "" })).id);
      m.live = false;
    }
    await waitFor(async () => (await sourceBackupSnaps()).length === 0, {
      what: `no backup snapshot left on the source (seed ${seed})`,
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    for (const l of LOCATIONS) {
      const left = (await rbdJson<string[]>(l.cluster, ["ls", l.pool])).filter((n) =>
        n.startsWith(`${v.image}.backup.`),
      );
      assert.deepEqual(left, [], `base images left in ${locKey(l)} (seed ${seed})`);
    }
  });

  it("a restore to a new volume re-creates stripe unit 64 KiB × 4, order and features; byte-identical", async () => {
    const c = d.client;
    const image = uniqueName("striped");
    await rbd("site-a", ["create", "--size", "16M", "--stripe-unit", "64K", "--stripe-count", "4", `rbd/${image}`]);
    vols.track("site-a", "rbd", image);
    const v = { pool: "rbd", namespace: "", image };
    await vols.change(v, "site-a", { writes: 12 });
    const vol: VolumeRef = { cluster: "site-a", ...v };
    interface RbdInfo {
      size: number;
      order: number;
      stripe_unit: number;
      stripe_count: number;
      features: string[];
    }
    const facts = async (cluster: string, what: string) => {
      const i = await rbdJson<RbdInfo>(cluster, ["info", what]);
      const { size, order, stripe_unit, stripe_count } = i;
      return { size, order, stripe_unit, stripe_count, features: [...i.features].sort() };
    };
    /** A backup of the volume, with the layout and checksum of the volume at its snapshot. */
    const backupNow = async () => {
      const b = (await succeeded(c, (await c.createBackup(backupRequest(vol))).id)).backup;
      assert.ok(b);
      // The job's end starts the removal of the older source snapshot (snapshot hygiene); while librbd
      // removes it, it sits in the snapshot trash and `rbd info` lists the feature "operations"
      // (op_features snap-trash), which a restore never carries. The layout is read once that is over.
      await waitFor(
        async () => (await rbdJson<{ op_features: string[] }>("site-a", ["info", spec(v)])).op_features.length === 0,
        { what: `no snapshot removal in flight on ${spec(v)}`, timeoutMs: 60_000, intervalMs: 100 },
      );
      made.push({ id: b.id, loc: "site-b/backups", snapshot: b.snapshot, baseImage: b.baseImage, live: true });
      return { b, layout: await facts("site-a", spec(v, b.snapshot)), sum: await sha("site-a", spec(v, b.snapshot)) };
    };
    const first = await backupNow();
    await vols.change(v, "site-a", { writes: 6, discards: 1 });
    const second = await backupNow();
    assert.equal(second.b.incremental, true);
    assert.deepEqual(
      [first.layout.stripe_unit, first.layout.stripe_count, first.layout.order],
      [65536, 4, 22],
      "the source is striped",
    );
    assert.ok(first.layout.features.includes("striping"));
    for (const [cluster, { b, layout, sum }] of [
      ["site-a", second],
      ["site-b", first],
    ] as const) {
      const target = { cluster, pool: "rbd", namespace: "", image: uniqueName("restored") };
      vols.track(cluster, "rbd", target.image);
      const rj = await c.restoreBackup({
        backupId: b.id,
        target,
        mode: RestoreMode.RESTORE_MODE_NEW,
        idempotencyKey: "",
      });
      const done = await succeeded(c, rj.id);
      assert.deepEqual(done.restore?.warnings ?? [], [], "nothing dropped on a cluster that supports it all");
      const got = await facts(cluster, spec(target));
      // Both in the message, on one line: the run's failure summary prints the message line, not YAML blocks.
      assert.deepEqual(
        got,
        layout,
        `the restore on ${cluster} has the backup's layout: got ${JSON.stringify(got)}, want ${JSON.stringify(layout)}`,
      );
      assert.equal(await sha(cluster, spec(target)), sum, `the restore on ${cluster} is byte-identical`);
      assert.equal(layout.size, 16 * MiB);
    }
  });
});
