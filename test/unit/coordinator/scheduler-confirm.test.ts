/**
 * A backup becomes AVAILABLE only when an agent of its destination confirms it: the fake destination
 * agents answer from what the harness says they hold (`committed`). Confirmed, denied, unreachable and
 * then back, an answer that does not come, and the lock a confirming job keeps.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { BackupStatus, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { FakeAgentSession } from "../../helpers/fake-agent";
import { backupResult, Harness, vol } from "./harness";

const { JOB_STATE_QUEUED: QUEUED, JOB_STATE_RUNNING: RUNNING } = JobState;
const { JOB_STATE_SUCCEEDED: SUCCEEDED, JOB_STATE_FAILED: FAILED } = JobState;

/** The source reports the backup made: as committed at the destination, if it was. */
function reportMade(h: Harness, agent: FakeAgentSession, jobId: string): boolean {
  const backupId = h.job(jobId).backupId;
  const value = h.committed.get(backupId)?.result ?? backupResult(backupId);
  return h.outcome(agent, jobId, Status.OK, "", { $case: "backup", value });
}

/** The calls the coordinator sent an agent. */
const callsTo = (s: FakeAgentSession): CallRequest[] =>
  s.sent.flatMap((m) => (m.$case === "call" && m.value.request ? [m.value.request] : []));

describe("scheduler: backups are confirmed by their destination", () => {
  let h: Harness;
  let a1: FakeAgentSession;
  let b1: FakeAgentSession;
  beforeEach(() => {
    h = new Harness();
    a1 = h.connect("a1", "a");
    b1 = h.connect("b1", "b");
  });
  afterEach(() => h.close());

  it("confirmed: the destination is asked for the snapshot and the metadata object, then AVAILABLE", async () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    const r = backupResult(j.backupId);
    h.commit(j, r);
    assert.equal(reportMade(h, a1, j.id), true);
    const confirming = h.job(j.id);
    assert.equal(confirming.state, RUNNING, "not SUCCEEDED on the source's word");
    assert.equal(confirming.lease, null);
    assert.equal(h.backup(j.backupId).status, BackupStatus.BACKUP_STATUS_CREATING);
    assert.match(confirming.waitingReason, /^confirming backup /);
    await h.settle();
    assert.deepEqual(callsTo(b1), [
      { $case: "snapshots", value: { image: { pool: "backups", namespace: "", image: r.baseImage } } },
      { $case: "metadata", value: { backupId: j.backupId, pool: "backups", namespace: "" } },
    ]);
    assert.deepEqual(callsTo(a1), [], "the source is not asked");
    const done = h.job(j.id);
    assert.equal(done.state, SUCCEEDED);
    assert.equal(done.confirming, null);
    assert.equal(done.waitingReason, "");
    const b = h.backup(j.backupId);
    assert.equal(b.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.equal(b.snapshot, r.snapshot);
  });

  it("denied: the destination has no such snapshot → DATA_LOSS, the job FAILED, no AVAILABLE backup", async () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    reportMade(h, a1, j.id);
    await h.settle();
    const f = h.job(j.id);
    assert.equal(f.state, FAILED);
    assert.equal(f.attempts, 1, "no retry: the data the source vouched for is not there");
    assert.equal(f.errorCode, "DATA_LOSS");
    assert.match(f.errorMessage, /^the source reported success but the destination has no snapshot backup\./);
    assert.match(f.errorMessage, /agent b1 of cluster b/);
    const b = h.backup(j.backupId);
    assert.equal(b.status, BackupStatus.BACKUP_STATUS_FAILED);
    assert.match(b.error, /^DATA_LOSS: /);
    const available = h.catalog
      .backupsOfVolume("a", "rbd", "", "v1")
      .filter((x) => x.status === BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.deepEqual(available, []);
  });

  it("denied: the snapshot is there but the metadata object names another volume", async () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    const c = h.commit(j);
    c.meta = c.meta.replace('"image":"v1"', '"image":"production"');
    reportMade(h, a1, j.id);
    await h.settle();
    const f = h.job(j.id);
    assert.equal(f.state, FAILED);
    assert.equal(f.errorCode, "DATA_LOSS");
    assert.match(f.errorMessage, /meta names source rbd\/\/production, not volume rbd\/\/v1/);
  });

  it("denied: the metadata object names the volume's pool and image on another cluster (its fsid)", async () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    const c = h.commit(j);
    const m = JSON.parse(c.meta);
    c.meta = JSON.stringify({ ...m, source: { ...m.source, cluster_fsid: "11111111-2222-3333-4444-555555555555" } });
    reportMade(h, a1, j.id);
    await h.settle();
    const f = h.job(j.id);
    assert.equal(f.state, FAILED);
    assert.equal(f.errorCode, "DATA_LOSS");
    assert.match(
      f.errorMessage,
      /meta names source cluster a \(fsid 11111111-2222-3333-4444-555555555555\), not a \(fsid /,
    );
  });

  it("confirmed: an older agent's metadata object names no cluster_name; an import's names no fsid", async () => {
    for (const drop of ["cluster_name", "cluster_fsid"] as const) {
      const j = h.queueBackup(vol(`older-${drop}`));
      h.tick();
      const c = h.commit(j);
      const m = JSON.parse(c.meta);
      c.meta = JSON.stringify({ ...m, source: { ...m.source, [drop]: drop === "cluster_fsid" ? "" : undefined } });
      reportMade(h, a1, j.id);
      await h.settle();
      assert.equal(h.job(j.id).state, SUCCEEDED, `${drop}: ${h.job(j.id).errorMessage}`);
    }
  });

  it("denied: no metadata object", async () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.commit(j);
    b1.answer = (req) =>
      req.$case === "metadata"
        ? { $case: "metadata", value: { found: false, json: "" } }
        : h.destinationAnswer("b", req);
    reportMade(h, a1, j.id);
    await h.settle();
    assert.equal(h.job(j.id).errorCode, "DATA_LOSS");
    assert.match(h.job(j.id).errorMessage, /has no metadata object backup\.[0-9a-f-]+\.meta in backups/);
  });

  it("unreachable: no destination agent → the job waits RUNNING, then succeeds when one comes back", async () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.commit(j);
    h.disconnect(b1);
    reportMade(h, a1, j.id);
    await h.settle();
    for (let i = 0; i < 3; i++) {
      h.advance(h.cfg.backoffMaxMs);
      h.tick();
      await h.settle();
      const w = h.job(j.id);
      assert.equal(w.state, RUNNING);
      assert.match(w.waitingReason, /waiting for an agent of cluster b to connect$/);
    }
    assert.equal(h.backup(j.backupId).status, BackupStatus.BACKUP_STATUS_CREATING);
    const b2 = h.connect("b2", "b");
    h.tick();
    await h.settle();
    assert.equal(callsTo(b2).length, 2);
    assert.equal(h.job(j.id).state, SUCCEEDED);
    assert.equal(h.backup(j.backupId).status, BackupStatus.BACKUP_STATUS_AVAILABLE);
  });

  it("no answer: checked again after a backoff; past confirmTimeoutMs the attempt fails DEADLINE_EXCEEDED", async () => {
    h.close();
    h = new Harness({ confirmTimeoutMs: 10_000 });
    a1 = h.connect("a1", "a");
    b1 = h.connect("b1", "b");
    b1.answer = () => new AppError(Status.UNAVAILABLE, "ceph is slow");
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.commit(j);
    reportMade(h, a1, j.id);
    await h.settle();
    const w = h.job(j.id);
    assert.equal(w.state, RUNNING);
    assert.equal(w.confirming?.checks, 1);
    assert.equal(w.confirming?.nextCheckAt, h.t + h.cfg.backoffBaseMs);
    assert.match(w.waitingReason, /agent b1 of cluster b did not answer: UNAVAILABLE: ceph is slow/);
    h.tick();
    await h.settle();
    assert.equal(callsTo(b1).filter((c) => c.$case === "snapshots").length, 1, "not asked again before the backoff");
    h.advance(h.cfg.backoffBaseMs);
    h.tick();
    await h.settle();
    assert.equal(callsTo(b1).filter((c) => c.$case === "snapshots").length, 2);
    h.advance(10_000);
    h.tick();
    await h.settle();
    const q = h.job(j.id);
    assert.equal(q.state, QUEUED, "an attempt failure: retried");
    assert.equal(q.errorCode, "DEADLINE_EXCEEDED");
    assert.match(q.errorMessage, /^could not confirm backup .* within 10000 ms/);
    assert.equal(q.confirming, null);
  });

  it("a confirming job keeps its volume's lock; a late confirmation of an older attempt is ignored", async () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.disconnect(b1);
    reportMade(h, a1, j.id);
    const next = h.queueBackup(vol("v1"), "a");
    h.tick();
    assert.equal(h.job(next.id).state, QUEUED);
    assert.equal(h.job(next.id).waitingReason, `waiting for job ${j.id}, which uses the same volume or backup`);
    const stale = h.scheduler.onOutcome(a1, {
      jobId: j.id,
      token: a1.lease(j.id).token,
      code: Status.OK,
      message: "",
      result: { $case: "backup", value: backupResult(j.backupId) },
      sourceSnapshots: [],
      sourceSnapshotsListed: false,
      refused: false,
    });
    assert.equal(stale, false, "the outcome re-sent after a reconnect is not applied twice");
  });

  it("a restart keeps the confirmation and gives it a full timeout again", async () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.commit(j);
    h.disconnect(b1);
    reportMade(h, a1, j.id);
    h.scheduler.stop();
    h.advance(3_600_000);
    h.scheduler = h.newScheduler();
    h.scheduler.start();
    h.scheduler.stop();
    assert.ok((h.job(j.id).confirming?.deadline ?? 0) > h.t);
    h.scheduler = h.newScheduler();
    h.connect("b1", "b");
    h.tick();
    await h.settle();
    assert.equal(h.job(j.id).errorMessage, "");
    assert.equal(h.job(j.id).state, SUCCEEDED);
  });
});
