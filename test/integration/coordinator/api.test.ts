/**
 * The public API end to end: a real coordinator and real agents (separate processes, mutual TLS) on the
 * lab clusters. Backups, restores and deletes go through BackupService only; data is compared with
 * checksums of `rbd export`.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { metaObjectName } from "../../../src/common/ids";
import { BackupMode, RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import { BackupStatus, type Job, type JobEvent, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import { startCoordinatorProcess } from "../../../src/lab/coordinator-process";
import { startAgent } from "../../helpers/agents";
import {
  backupRequest,
  type Deployment,
  deploy,
  removeBackups,
  succeeded,
  waitAgents,
  waitJob,
} from "../../helpers/coordinator";
import { grpcStatus } from "../../helpers/grpc-status";
import { rbd, uniqueName } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";

const volRef = (cluster: string, v: { pool: string; namespace: string; image: string }): VolumeRef => ({
  cluster,
  ...v,
});

describe("coordinator: public API", () => {
  let d: Deployment;
  const vols = new Volumes();

  before(async () => {
    d = await deploy({ scheduler: { perClusterLimit: 4 } });
  });
  after(async () => {
    // The backups this file made leave the lab with it (their base images, snapshots, metadata).
    if (d) await removeBackups(d.client).catch((e) => console.log(`# cleanup: ${(e as Error).message}`));
    await d?.stop();
    await vols.cleanup();
  });

  it("full, incremental, restore to new volumes on either site, delete — byte-identical", async () => {
    const c = d.client;
    const v = await vols.create("site-a", "rbd", 32, 30);
    const vol = volRef("site-a", v);
    const j1 = await c.createBackup(
      backupRequest(vol, { volumeId: "cinder-vol-1", volumeMetadata: { owner: "tenant-1" } }),
    );
    assert.equal(j1.kind, JobKind.JOB_KIND_BACKUP);
    const done1 = await succeeded(c, j1.id);
    const b1 = done1.backup;
    assert.ok(b1);
    assert.equal(b1.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.equal(b1.incremental, false);
    assert.match(b1.forcedFullReason, /no earlier backup/);
    const sum1 = await sha("site-a", spec(v, b1.snapshot));

    await vols.change(v, "site-a", { writes: 10, discards: 2 });
    const j2 = await c.createBackup(
      backupRequest(vol, {
        location: { cluster: "site-b", pool: "", namespace: "" },
        mode: BackupMode.BACKUP_MODE_INCREMENTAL,
        volumeId: "cinder-vol-1",
      }),
    );
    const b2 = (await succeeded(c, j2.id)).backup;
    assert.ok(b2);
    assert.equal(b2.incremental, true);
    assert.equal(b2.parentSnapshot, b1.snapshot);
    assert.equal(b2.baseImage, b1.baseImage);
    assert.equal(b2.location?.pool, "backups", "the default pool is resolved and recorded");
    assert.ok(b2.dataBytesSent < 32 * MiB, "an incremental sends only changed data");
    const sum2 = await sha("site-a", spec(v, b2.snapshot));
    // Only the chain's newest snapshot stays on the volume: the coordinator's hygiene removes the
    // parent once the job has ended (the job did not wait for it).
    await vols.settledBackupSnaps("site-a", v, [b2.snapshot]);
    // The volume's backup snapshots, as its agent sees them now, through the API.
    const snaps = await c.listBackupSnapshots({ volume: vol });
    assert.deepEqual(
      snaps.snapshots.map((s) => s.backupId),
      [b2.id],
    );

    // Restore the incremental to a new volume on site-b (same cluster as the backup) and on site-a.
    for (const [cluster, pool] of [
      ["site-b", "rbd"],
      ["site-a", "rbd"],
    ] as const) {
      const target = { cluster, pool, namespace: "", image: uniqueName("restored") };
      vols.track(cluster, pool, target.image);
      const rj = await c.restoreBackup({
        backupId: b2.id,
        target,
        mode: RestoreMode.RESTORE_MODE_NEW,
        idempotencyKey: "",
      });
      const r = await succeeded(c, rj.id);
      assert.equal(r.restore?.volumeId, "cinder-vol-1");
      assert.equal(await sha(cluster, spec(target)), sum2, `restore on ${cluster} is byte-identical`);
    }
    // The full one restores too (one pass from its own snapshot).
    const t1 = { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName("restored") };
    vols.track("site-b", "rbd", t1.image);
    await succeeded(
      c,
      (await c.restoreBackup({ backupId: b1.id, target: t1, mode: RestoreMode.RESTORE_MODE_NEW, idempotencyKey: "" }))
        .id,
    );
    assert.equal(await sha("site-b", spec(t1)), sum1);

    // The catalog lists both, newest first.
    const list = await c.listBackups({
      cluster: "site-a",
      pool: "",
      image: v.image,
      volumeId: "",
      locationCluster: "",
      status: 0,
      pageSize: 0,
      pageToken: "",
    });
    assert.deepEqual(
      list.backups.map((b) => b.id),
      [b2.id, b1.id],
    );

    // Delete both; the base image goes with the last one.
    for (const b of [b1, b2]) {
      const dj = await c.deleteBackup({ backupId: b.id, idempotencyKey: "" });
      await succeeded(c, dj.id);
      assert.equal((await c.getBackup({ backupId: b.id })).status, BackupStatus.BACKUP_STATUS_DELETED);
    }
    assert.equal(await vols.exists("site-b", "backups", b1.baseImage), false, "base image removed");
  });

  it("WatchJob streams progress and ends with the result; CancelJob stops a transfer, nothing left", async () => {
    const c = d.client;
    const v = await vols.create("site-a", "rbd", 256, 0);
    await vols.change(v, "site-a", { writes: 200, maxWrite: 4 * MiB });
    const job = await c.createBackup(backupRequest(volRef("site-a", v), { mode: BackupMode.BACKUP_MODE_FULL }));
    const events: JobEvent[] = [];
    for await (const e of c.watchJob({ jobId: job.id })) events.push(e);
    const last = events.at(-1)?.job as Job;
    assert.equal(last.state, JobState.JOB_STATE_SUCCEEDED, `${last.errorCode}: ${last.errorMessage}`);
    assert.ok(events.length >= 2, "at least the initial state and the result");
    assert.ok(
      events.some((e) => e.job?.state === JobState.JOB_STATE_RUNNING),
      "a RUNNING event was streamed",
    );
    const withBytes = events.filter((e) => (e.job?.progress?.bytesTotal ?? 0) > 0);
    assert.ok(withBytes.length > 0, "progress carried bytes");
    assert.equal(withBytes.at(-1)?.job?.progress?.bytesTotal, 256 * MiB);

    // Cancel a second (full) backup mid-transfer. A cancel that reaches the destination after it had
    // every byte cannot stop the commit (the job SUCCEEDS: CancelJob in backup_service.proto); on a
    // loaded machine the first progress report may come that late, so up to three tries.
    let end: Job | undefined;
    let seconds = 0;
    for (let tries = 0; tries < 3 && end?.state !== JobState.JOB_STATE_CANCELLED; tries++) {
      const job2 = await c.createBackup(backupRequest(volRef("site-a", v), { mode: BackupMode.BACKUP_MODE_FULL }));
      for await (const e of c.watchJob({ jobId: job2.id })) {
        if ((e.job?.progress?.bytesDone ?? 0) > 0) break;
      }
      const t0 = Date.now();
      await c.cancelJob({ jobId: job2.id });
      end = await waitJob(c, job2.id, 30_000);
      seconds = (Date.now() - t0) / 1000;
      if (end.state === JobState.JOB_STATE_SUCCEEDED) console.log("# the cancel came after the commit; again");
    }
    assert.ok(end);
    assert.equal(end.state, JobState.JOB_STATE_CANCELLED);
    assert.ok(seconds < 15, `cancelled in ${seconds} s`);
    console.log(`# cancel → CANCELLED in ${seconds.toFixed(2)} s`);
    const b = await c.getBackup({ backupId: end.backupId });
    assert.equal(b.status, BackupStatus.BACKUP_STATUS_FAILED);
    // Nothing left, checked once, the moment the job reports CANCELLED (no polling): a running job
    // ends CANCELLED only after both agents cleaned up (CancelJob in backup_service.proto).
    assert.deepEqual(
      (await vols.snapNames("site-a", v)).filter((s) => s.includes(end.backupId)),
      [],
      "no snapshot of the cancelled backup on the volume",
    );
    const io = await vols.io("site-b", "backups");
    const images = await io.imageList();
    assert.deepEqual(
      images.filter((i) => i.endsWith(end.backupId)),
      [],
      "no base image of the cancelled backup at the destination",
    );
    await assert.rejects(
      io.objStat(metaObjectName(end.backupId)),
      (e: unknown) => (e as { code?: string }).code === "ENOENT",
      "no metadata object of the cancelled backup",
    );
    assert.ok(
      images.some((i) => i.endsWith(job.backupId)),
      "the first backup remains",
    );
  });

  it("the same idempotency key twice gives one job and one backup; another request with it is refused", async () => {
    const c = d.client;
    const v = await vols.create("site-a", "rbd", 8, 5);
    const req = {
      volume: volRef("site-a", v),
      location: { cluster: "site-b", pool: "backups", namespace: "" },
      mode: BackupMode.BACKUP_MODE_AUTO,
      volumeId: "",
      volumeMetadata: { a: "1", b: "2" },
      idempotencyKey: `key-${v.image}`,
      maxSnapshots: 0,
    };
    const [x, y] = await Promise.all([
      c.createBackup(req),
      c.createBackup({ ...req, volumeMetadata: { b: "2", a: "1" } }),
    ]);
    assert.equal(x.id, y.id);
    const again = await c.createBackup(req);
    assert.equal(again.id, x.id);
    await succeeded(c, x.id);
    const list = await c.listBackups({
      cluster: "site-a",
      pool: "rbd",
      image: v.image,
      volumeId: "",
      locationCluster: "",
      status: 0,
      pageSize: 0,
      pageToken: "",
    });
    assert.equal(list.backups.length, 1);
    await assert.rejects(
      c.createBackup({ ...req, mode: BackupMode.BACKUP_MODE_FULL }),
      grpcStatus(Status.ALREADY_EXISTS, /idempotency/),
    );
  });

  it("two backups of one volume at once are serialized and both correct", async () => {
    const c = d.client;
    const v = await vols.create("site-a", "rbd", 32, 20);
    const mk = () => c.createBackup(backupRequest(volRef("site-a", v)));
    const [j1, j2] = await Promise.all([mk(), mk()]);
    const [r1, r2] = await Promise.all([succeeded(c, j1.id), succeeded(c, j2.id)]);
    const first = (r1.startedAt?.getTime() ?? 0) < (r2.startedAt?.getTime() ?? 0) ? r1 : r2;
    const second = first === r1 ? r2 : r1;
    assert.ok(
      (second.startedAt?.getTime() ?? 0) >= (first.finishedAt?.getTime() ?? Number.POSITIVE_INFINITY),
      "the second started after the first finished",
    );
    assert.equal(second.backup?.incremental, true);
    assert.equal(second.backup?.parentSnapshot, first.backup?.snapshot);
    for (const r of [r1, r2]) {
      const b = r.backup;
      assert.ok(b);
      const target = { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName("restored") };
      vols.track("site-b", "rbd", target.image);
      await succeeded(
        c,
        (await c.restoreBackup({ backupId: b.id, target, mode: RestoreMode.RESTORE_MODE_NEW, idempotencyKey: "" })).id,
      );
      // Both backups were of the same unchanged data.
      assert.equal(await sha("site-b", spec(target)), await sha("site-b", `backups/${b.baseImage}@${b.snapshot}`));
    }
  });

  it("30 backups of 30 volumes at once with a per-cluster limit of 4: never more than 4 run, all succeed", async () => {
    const c = d.client;
    const volumes = await Promise.all(Array.from({ length: 30 }, () => vols.create("site-a", "rbd", 4, 3, "many")));
    const jobs = await Promise.all(volumes.map((v) => c.createBackup(backupRequest(volRef("site-a", v)))));
    const ids = new Set(jobs.map((j) => j.id));
    let maxRunning = 0;
    let samples = 0;
    const deadline = Date.now() + 300_000;
    for (;;) {
      const page = await c.listJobs({ state: 0, kind: 0, backupId: "", pageSize: 1000, pageToken: "" });
      const mine = page.jobs.filter((j) => ids.has(j.id));
      const running = mine.filter((j) => j.state === JobState.JOB_STATE_RUNNING).length;
      maxRunning = Math.max(maxRunning, running);
      samples++;
      if (mine.every((j) => j.state >= JobState.JOB_STATE_SUCCEEDED)) break;
      assert.ok(Date.now() < deadline, "30 small backups finish within 5 minutes");
      await new Promise((r) => setTimeout(r, 50));
    }
    console.log(`# 30 backups, per-cluster limit 4: at most ${maxRunning} running at once (${samples} samples)`);
    assert.ok(maxRunning <= 4, `at most 4 running, saw ${maxRunning}`);
    assert.ok(maxRunning >= 2, "the jobs ran in parallel up to the limit");
    for (const j of jobs) {
      const r = await c.getJob({ jobId: j.id });
      assert.equal(r.state, JobState.JOB_STATE_SUCCEEDED, `${r.errorCode}: ${r.errorMessage}`);
    }
  });

  it("backups kept in an RBD namespace, restored into another namespace", async () => {
    const c = d.client;
    const ns = uniqueName("ns");
    await rbd("site-b", ["namespace", "create", `backups/${ns}`]);
    await rbd("site-b", ["namespace", "create", `rbd/${ns}`]);
    try {
      const v = await vols.create("site-a", "rbd", 8, 6);
      const j = await succeeded(
        c,
        (
          await c.createBackup(
            backupRequest(volRef("site-a", v), { location: { cluster: "site-b", pool: "backups", namespace: ns } }),
          )
        ).id,
      );
      assert.equal(j.backup?.location?.namespace, ns);
      const target = { cluster: "site-b", pool: "rbd", namespace: ns, image: uniqueName("restored") };
      await succeeded(
        c,
        (
          await c.restoreBackup({
            backupId: j.backupId,
            target,
            mode: RestoreMode.RESTORE_MODE_NEW,
            idempotencyKey: "",
          })
        ).id,
      );
      assert.equal(await sha("site-b", spec(target)), await sha("site-a", spec(v, j.backup?.snapshot)));
      await rbd("site-b", ["rm", "--no-progress", spec(target)]);
      await succeeded(c, (await c.deleteBackup({ backupId: j.backupId, idempotencyKey: "" })).id);
    } finally {
      await rbd("site-b", ["namespace", "remove", `backups/${ns}`]).catch(() => {});
      await rbd("site-b", ["namespace", "remove", `rbd/${ns}`]).catch(() => {});
    }
  });

  it("an exported record imported into a fresh coordinator restores that backup", async () => {
    const c = d.client;
    const v = await vols.create("site-a", "rbd", 16, 10);
    const j = await c.createBackup(
      backupRequest(volRef("site-a", v), { volumeId: "vol-x", volumeMetadata: { k: "v" } }),
    );
    const b = (await succeeded(c, j.id)).backup;
    assert.ok(b);
    const record = await c.exportBackupRecord({ backupId: b.id });
    const sum = await sha("site-a", spec(v, b.snapshot));

    const fresh = await startCoordinatorProcess();
    const agentB2 = await startAgent("site-b", { coordinator: fresh.address, agentId: "agent-site-b-2" });
    try {
      await waitAgents(fresh.client, 1);
      // Made by a policy of the exporting coordinator: none manages it here (a same-named policy's
      // retention would delete it).
      if (record.backup) record.backup.policy = "gold";
      const imported = await fresh.client.importBackupRecord({ record });
      assert.equal(imported.id, b.id);
      assert.equal(imported.policy, "");
      assert.match(imported.warnings.join("\n"), /made by policy gold of the coordinator it was exported from/);
      assert.equal(imported.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
      await assert.rejects(fresh.client.importBackupRecord({ record }), grpcStatus(Status.ALREADY_EXISTS));
      const target = { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName("restored") };
      vols.track("site-b", "rbd", target.image);
      const rj = await fresh.client.restoreBackup({
        backupId: b.id,
        target,
        mode: RestoreMode.RESTORE_MODE_NEW,
        idempotencyKey: "",
      });
      const r = await succeeded(fresh.client, rj.id);
      assert.equal(r.restore?.volumeId, "vol-x");
      assert.equal(await sha("site-b", spec(target)), sum);
    } finally {
      await agentB2.stop();
      await fresh.stop();
    }
  });
});
