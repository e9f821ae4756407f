/**
 * A chain of backups: full, then three incrementals with random writes, discards, a grow and a
 * shrink between them; every backup restores to exactly its source snapshot's bytes and size. The
 * same across clusters (site-a → site-b, agent to agent over mutual TLS), within one pool, and across
 * pools of one cluster. Source snapshots: only what the chain needs stays; foreign ones are never touched.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { ClientError, Status } from "nice-grpc";
import type { Image } from "../../../agents/ceph";
import { BackupMode, type BackupResult, RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import type { ImageRef } from "../../../src/gen/rbdbackup/v1/common";
import { type RunningAgent, startAgents } from "../../helpers/agents";
import { uniqueName } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";

const scenarios = [
  { name: "across clusters (site-a → site-b)", remote: true, destPool: "backups" },
  { name: "same pool (site-a rbd → rbd)", remote: false, destPool: "rbd" },
  { name: "another pool (site-a rbd → backups)", remote: false, destPool: "backups" },
];

describe("backup chains", () => {
  let a: RunningAgent;
  let b: RunningAgent;
  const vols = new Volumes();

  before(async () => {
    [a, b] = (await startAgents("site-a", "site-b")) as [RunningAgent, RunningAgent];
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await vols.cleanup();
  });

  for (const sc of scenarios) {
    describe(sc.name, () => {
      let vol: ImageRef;
      const results: BackupResult[] = [];
      const shas: string[] = [];
      const destCluster = sc.remote ? "site-b" : "site-a";
      // The agent holding the backups.
      const holder = () => (sc.remote ? b : a);

      const doBackup = async () => {
        const r = await a.client.backup({
          backupId: randomUUID(),
          source: { $case: "volume", value: vol },
          destination: { address: sc.remote ? b.transferAddress : "", clusterFsid: sc.remote ? b.fsid : "" },
          destinationPool: sc.destPool,
          volumeId: "vol-id-1",
          volumeMetadata: { owner: "test", round: String(results.length) },
        });
        results.push(r);
        // Record the source snapshot's bytes now: hygiene removes it at the next backup.
        shas.push(await sha("site-a", spec(vol, r.snapshot)));
        return r;
      };

      it("full backup", async () => {
        vol = await vols.create("site-a", "rbd", 48, 24);
        const io = await vols.io("site-a", "rbd");
        const img = await io.imageOpen(vol.image);
        await img.snapCreate("keep-me");
        await img.snapCreate(`bbbackup.${randomUUID()}.snap.1`);
        await img.close();
        const r = await doBackup();
        assert.equal(r.incremental, false);
        assert.match(r.forcedFullReason, /no earlier backup/);
        assert.equal(r.imageSize, 48 * MiB);
        assert.equal(await sha(destCluster, `${sc.destPool}/${r.baseImage}@${r.snapshot}`), shas[0]);
      });

      it("incremental after writes and discards", async () => {
        await vols.change(vol, "site-a", { writes: 30, discards: 6, maxWrite: 256 * 1024 });
        const r = await doBackup();
        assert.equal(r.incremental, true);
        assert.equal(r.parentSnapshot, results[0]?.snapshot);
        assert.equal(r.baseImage, results[0]?.baseImage);
        assert.equal(r.forcedFullReason, "");
        console.log(
          `${sc.name}: incremental sent ${r.dataBytesSent} data bytes in ${r.dataChunks} chunks + ${r.zeroRanges} zero ranges (${r.zeroBytes} bytes, not on the wire), ${r.extents} extents changed, read ${r.bytesRead}`,
        );
      });

      it("incremental after a grow with data in the new tail", async () => {
        await vols.change(vol, "site-a", { resizeMiB: 64, writes: 20, discards: 3 });
        const r = await doBackup();
        assert.equal(r.incremental, true);
        assert.equal(r.imageSize, 64 * MiB);
      });

      it("incremental after a shrink", async () => {
        await vols.change(vol, "site-a", { resizeMiB: 40, writes: 10, discards: 2 });
        const r = await doBackup();
        assert.equal(r.incremental, true);
        assert.equal(r.imageSize, 40 * MiB);
        assert.equal(r.parentSnapshot, results[2]?.snapshot);
      });

      it("the source keeps only the snapshot the chain needs, and never touches foreign ones", async () => {
        const names = await vols.snapNames("site-a", vol);
        const ours = names.filter((n) => n.startsWith("backup."));
        assert.deepEqual(ours, [results[3]?.snapshot]);
        assert.ok(names.includes("keep-me"));
        assert.ok(names.some((n) => n.startsWith("bbbackup.")));
        // Each backup removed its predecessor.
        for (let i = 1; i < 4; i++) assert.deepEqual(results[i]?.sourceSnapshotsRemoved, [results[i - 1]?.snapshot]);
      });

      it("the base image holds all four backup snapshots", async () => {
        const snaps = await holder().client.listBackupSnapshots({
          image: { pool: sc.destPool, namespace: "", image: results[0]?.baseImage as string },
        });
        assert.deepEqual(
          snaps.snapshots.map((s) => s.name),
          results.map((r) => r.snapshot),
        );
        assert.deepEqual(
          snaps.snapshots.map((s) => s.backupId),
          results.map((r) => r.backupId),
        );
      });

      it("each of the four backups restores to a new volume byte for byte", async () => {
        for (let i = 0; i < 4; i++) {
          const r = results[i] as BackupResult;
          const target = { pool: "rbd", namespace: "", image: uniqueName(`restored-${i}`) };
          vols.track("site-a", "rbd", target.image);
          const rr = await holder().client.restore({
            backupId: r.backupId,
            backupPool: sc.destPool,
            targetAgent: { address: sc.remote ? a.transferAddress : "", clusterFsid: "" },
            target,
            mode: RestoreMode.RESTORE_MODE_NEW,
          });
          assert.equal(rr.imageSize, r.imageSize);
          assert.equal(rr.volumeId, "vol-id-1");
          assert.deepEqual(rr.volumeMetadata, { owner: "test", round: String(i) });
          assert.equal(await sha("site-a", spec(target)), shas[i], `restore of backup ${i + 1}`);
        }
      });

      if (sc.remote) {
        it("restore over the original volume after it was overwritten and grown", async () => {
          await vols.change(vol, "site-a", { resizeMiB: 72, writes: 40 });
          const r = results[1] as BackupResult;
          const restore = () =>
            b.client.restore({
              backupId: r.backupId,
              backupPool: sc.destPool,
              targetAgent: { address: a.transferAddress, clusterFsid: a.fsid },
              target: vol,
              mode: RestoreMode.RESTORE_MODE_ORIGINAL,
            });
          // While another client has the volume open read-write (as a VM would): refused, nothing changed.
          const changed = await sha("site-a", spec(vol));
          const user = await (await vols.io("site-a", "rbd")).imageOpen(vol.image);
          try {
            await assert.rejects(
              restore(),
              (e: unknown) =>
                e instanceof ClientError &&
                e.code === Status.FAILED_PRECONDITION &&
                /is in use \(watched by client\.\d+ at /.test(e.details),
            );
          } finally {
            await user.close();
          }
          assert.equal(await sha("site-a", spec(vol)), changed, "the volume in use was not touched");
          const rr = await restore();
          assert.equal(rr.imageSize, 48 * MiB);
          assert.equal(await sha("site-a", spec(vol)), shas[1]);
        });

        it("a full backup on request starts a new chain; AUTO continues the newest one", async () => {
          const full = await a.client.backup({
            backupId: randomUUID(),
            source: { $case: "volume", value: vol },
            destination: { address: b.transferAddress, clusterFsid: "" },
            destinationPool: sc.destPool,
            mode: BackupMode.BACKUP_MODE_FULL,
          });
          assert.equal(full.incremental, false);
          assert.equal(full.forcedFullReason, "");
          assert.notEqual(full.baseImage, results[0]?.baseImage);
          const next = await a.client.backup({
            backupId: randomUUID(),
            source: { $case: "volume", value: vol },
            destination: { address: b.transferAddress, clusterFsid: "" },
            destinationPool: sc.destPool,
          });
          assert.equal(next.incremental, true);
          assert.equal(next.baseImage, full.baseImage);
          assert.equal(
            await sha("site-b", `${sc.destPool}/${next.baseImage}@${next.snapshot}`),
            await sha("site-a", spec(vol, next.snapshot)),
          );
        });
      }
    });
  }

  /** Runs `f` on the volume opened read-write, then flushes and closes it. */
  const withVolume = async (vol: ImageRef, f: (img: Image) => Promise<unknown>) => {
    const img = await (await vols.io("site-a", vol.pool)).imageOpen(vol.image);
    try {
      await f(img);
      await img.flush();
    } finally {
      await img.close();
    }
  };
  /** A backup of the volume into site-b's backups pool (AUTO: incremental when a chain is there). */
  const backupToSiteB = (vol: ImageRef) =>
    a.client.backup({
      backupId: randomUUID(),
      source: { $case: "volume", value: vol },
      destination: { address: b.transferAddress, clusterFsid: b.fsid },
      destinationPool: "backups",
    });

  // `rbd snap rollback` to a snapshot older than the last backup's (Cinder's revert to snapshot): the
  // object map then says "not written since" of objects that changed (agents/ceph/pruned-diff.ts). The
  // next incremental must still send them.
  it("an incremental after the volume was rolled back to an older snapshot holds the rolled-back data", async () => {
    const vol = await vols.create("site-a", "rbd", 24, 0, "rollback");
    const write = (f: (img: Image) => Promise<unknown>) => withVolume(vol, f);
    const OBJ = 4 * MiB;
    await write((img) => img.write(randomBytes(24 * MiB), 0));
    const backup = () => backupToSiteB(vol);
    // Two snapshots, nothing written between: every object is "clean" in the second's object map (and
    // stays so: the first, kept, is what a removed snapshot's "written" marks would merge into).
    await write(async (img) => {
      await img.snapCreate("user-1");
      await img.snapCreate("revert-point");
    });
    const first = await backup();
    vols.track("site-b", "backups", first.baseImage);
    await write(async (img) => {
      await img.write(randomBytes(64 * 1024), OBJ + 4096);
      await img.write(randomBytes(OBJ), 3 * OBJ);
    });
    const second = await backup();
    assert.equal(second.incremental, true);
    await write((img) => img.snapRollback("revert-point"));
    const third = await backup();
    assert.equal(third.incremental, true);
    assert.equal(third.parentSnapshot, second.snapshot);
    const source = await sha("site-a", spec(vol, third.snapshot));
    assert.equal(source, await sha("site-a", spec(vol, "revert-point")), "the rollback took");
    assert.equal(await sha("site-b", `backups/${third.baseImage}@${third.snapshot}`), source);
  });

  // The same on the destination: a base image rolled back (by hand) to an older backup's snapshot. The
  // next incremental must find its head differs from the chain's newest snapshot (the object map says
  // "same" of what the older snapshot's map marks clean) and roll it back before writing.
  it("an incremental onto a base image rolled back to an older backup's snapshot holds the right data", async () => {
    const vol = await vols.create("site-a", "rbd", 24, 0, "base-rollback");
    const write = (offset: number, length: number) => withVolume(vol, (img) => img.write(randomBytes(length), offset));
    const OBJ = 4 * MiB;
    await write(0, 24 * MiB);
    const backup = () => backupToSiteB(vol);
    const first = await backup();
    vols.track("site-b", "backups", first.baseImage);
    // Nothing changed: the second backup writes nothing, so its snapshot's object map marks no object
    // written — rolled back to, it tells no change of the head from any later snapshot.
    const second = await backup();
    await write(3 * OBJ, OBJ); // object 3: the third's
    const third = await backup();
    assert.equal(third.incremental, true);
    // By hand on the backup cluster: object 3 goes back to the first backup's data, and the second
    // backup's object map (nothing written) becomes the head's.
    const base = await (await vols.io("site-b", "backups")).imageOpen(third.baseImage);
    try {
      await base.snapRollback(second.snapshot);
    } finally {
      await base.close();
    }
    await write(5 * OBJ, 4096); // object 5: the fourth's
    const fourth = await backup();
    assert.equal(fourth.incremental, true);
    assert.equal(fourth.parentSnapshot, third.snapshot);
    assert.equal(
      await sha("site-b", `backups/${fourth.baseImage}@${fourth.snapshot}`),
      await sha("site-a", spec(vol, fourth.snapshot)),
    );
    assert.match(fourth.warnings.join("\n"), /rolled the head of .* back to /);
  });

  // Thin volumes: the walks are pruned to the objects that exist at either snapshot (pruned-diff.ts), so
  // an object that exists only at the older end — made after the revert point, removed by the rollback —
  // must still be found (the 24 MiB volumes above are fully written: walked whole).
  it("a thin volume: an object made after the revert point and removed by the rollback is zeros in the next incremental", async () => {
    const vol = await vols.create("site-a", "rbd", 128, 0, "rollback-thin");
    const OBJ = 4 * MiB;
    await withVolume(vol, async (img) => {
      await img.write(randomBytes(OBJ), 0);
      await img.snapCreate("revert-point");
    });
    const first = await backupToSiteB(vol);
    vols.track("site-b", "backups", first.baseImage);
    await withVolume(vol, (img) => img.write(randomBytes(OBJ), 20 * OBJ)); // object 20, far from object 0
    const second = await backupToSiteB(vol);
    assert.equal(second.incremental, true);
    await withVolume(vol, (img) => img.snapRollback("revert-point"));
    const third = await backupToSiteB(vol);
    assert.equal(third.incremental, true);
    const source = await sha("site-a", spec(vol, third.snapshot));
    assert.equal(source, await sha("site-a", spec(vol, "revert-point")), "the rollback took");
    assert.equal(await sha("site-b", `backups/${third.baseImage}@${third.snapshot}`), source);
  });

  it("a thin volume's base image rolled back to before an object was made: the next incremental rolls its head forward first", async () => {
    const vol = await vols.create("site-a", "rbd", 128, 0, "base-rollback-thin");
    const OBJ = 4 * MiB;
    await withVolume(vol, (img) => img.write(randomBytes(OBJ), 0));
    const first = await backupToSiteB(vol);
    vols.track("site-b", "backups", first.baseImage);
    await withVolume(vol, (img) => img.write(randomBytes(OBJ), 20 * OBJ)); // object 20: the second's
    const second = await backupToSiteB(vol);
    assert.equal(second.incremental, true);
    // By hand on the backup cluster: the head goes back to the first backup, object 20 removed from it.
    const base = await (await vols.io("site-b", "backups")).imageOpen(second.baseImage);
    try {
      await base.snapRollback(first.snapshot);
    } finally {
      await base.close();
    }
    await withVolume(vol, (img) => img.write(randomBytes(4096), 0)); // object 0: the third's
    const third = await backupToSiteB(vol);
    assert.equal(third.incremental, true);
    assert.equal(third.parentSnapshot, second.snapshot);
    assert.equal(
      await sha("site-b", `backups/${third.baseImage}@${third.snapshot}`),
      await sha("site-a", spec(vol, third.snapshot)),
    );
    assert.match(third.warnings.join("\n"), /rolled the head of .* back to /);
  });
});
