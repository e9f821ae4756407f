/**
 * FailbackVolume in the coordinator, without Ceph: the real BackupService handlers on 127.0.0.1:0, an
 * in-memory catalog, fake agents answering the probes, a scheduler ticked by hand. Asserts which backup
 * is the common point (listed clone, else the CLONE restore job that made the source), the job (a
 * RESTORE of mode FAILBACK run by the backup's cluster, streaming to the volume's), the lease's request
 * (source and target), the bytes sent and full-copy reason kept in the job, and the exact statuses of bad
 * requests with nothing queued.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { Backup } from "../../../src/coordinator/model";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { RestoreMode, type RestoreResult } from "../../../src/gen/rbdbackup/v1/agent";
import { BackupStatus, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import type { Answer, FakeAgentSession } from "../../helpers/fake-agent";
import { type Api, type ApiServer, assertStatus, serveApi } from "./api-server";
import { backupResult, Harness, newBackup, vol } from "./harness";

/** Images that exist, by cluster ("pool/image"). */
const images: Record<string, Set<string>> = { a: new Set(["rbd/v1"]), b: new Set(["rbd/v1-over"]) };

/** Runs once, at the next probe (while a call awaits its agents). */
let onProbe: (() => void) | undefined;

function clusterAnswer(cluster: string) {
  return (req: CallRequest): Answer => {
    if (req.$case !== "probe") return new AppError(Status.UNIMPLEMENTED, req.$case);
    const f = onProbe;
    onProbe = undefined;
    f?.();
    const q = req.value;
    const exists = q.image ? (images[cluster]?.has(`${q.image.pool}/${q.image.image}`) ?? false) : false;
    const value = {
      missingPools: [],
      missingNamespaces: [],
      imageExists: exists,
      imageSize: exists ? 1 << 30 : 0, // what restoreResult reports: the target's confirmation holds
      imageSnapshots: [],
    };
    return { $case: "probe", value };
  };
}

const restoreResult = (backupId: string): RestoreResult => ({
  backupId,
  target: { pool: "rbd", namespace: "", image: "v1" },
  imageSize: 1 << 30,
  dataBytesSent: 0,
  zeroBytes: 0,
  dataChunks: 2,
  zeroRanges: 0,
  seconds: 1,
  volumeId: "",
  volumeMetadata: {},
  imageMeta: {},
  warnings: [],
  fullCopyReason: "",
  resumedFrom: 0,
  resumeFallbackReason: "",
});

describe("FailbackVolume (coordinator)", () => {
  let h: Harness;
  let served: ApiServer;
  let api: Api;
  let b1: FakeAgentSession;

  function available(v: VolumeRef, clones: VolumeRef[] = []): Backup {
    const b = newBackup(v, "b", h.t);
    const made = backupResult(b.id);
    Object.assign(b, {
      baseImage: made.baseImage,
      snapshot: made.snapshot,
      status: BackupStatus.BACKUP_STATUS_AVAILABLE,
    });
    b.clones = clones;
    h.catalog.insertBackup(b);
    return b;
  }

  /** A job these tests queued, ended (the others start from no active job). */
  const cancel = (id: string) =>
    h.catalog.updateJob({ ...h.job(id), state: JobState.JOB_STATE_CANCELLED, finishedAt: h.t });

  before(async () => {
    h = new Harness();
    const deps = { catalog: h.catalog, sessions: h.sessions, scheduler: h.scheduler, log: h.log, maxAttempts: 3 };
    served = await serveApi(deps);
    api = served.api;
    h.connect("a1", "a").answer = clusterAnswer("a");
    b1 = h.connect("b1", "b");
    b1.answer = clusterAnswer("b");
  });
  after(async () => {
    await served.close();
    h.close();
  });

  it("the backup listing the source as its clone: a RESTORE job of mode FAILBACK, run where the backup is", async () => {
    const v = vol("v1");
    const source = vol("v1-over", "b");
    available(v); // an older backup, not the parent
    const b = available(v, [source]);
    const r = await api.failbackVolume({ volume: v, source });
    assert.equal(r.backup?.id, b.id);
    const j = h.job(r.job?.id ?? "");
    assert.equal(j.kind, JobKind.JOB_KIND_RESTORE);
    assert.deepEqual(j.operation, { kind: "restore", target: v, mode: RestoreMode.RESTORE_MODE_FAILBACK, source });
    assert.equal(j.execCluster, "b", "run by the agent holding the failed-over volume");
    assert.equal(j.peerCluster, "a", "streamed to the original volume's agent");
    h.tick();
    const lease = b1.lease(j.id);
    assert.equal(lease.operation?.$case, "restore");
    if (lease.operation?.$case === "restore") {
      const q = lease.operation.value;
      assert.equal(q.mode, RestoreMode.RESTORE_MODE_FAILBACK);
      assert.deepEqual(q.source, { pool: "rbd", namespace: "", image: "v1-over" });
      assert.deepEqual(q.target, { pool: "rbd", namespace: "", image: "v1" });
      assert.equal(q.snapshot, b.snapshot);
    }
    const result = { ...restoreResult(b.id), dataBytesSent: 8 << 20 };
    h.outcome(b1, j.id, Status.OK, "", { $case: "restore", value: result });
    await h.settle(); // the original volume's cluster confirms the image
    const done = await api.getJob({ jobId: j.id });
    assert.equal(done.state, JobState.JOB_STATE_SUCCEEDED);
    assert.equal(done.restore?.dataBytesSent, 8 << 20, "the bytes sent are kept in the job");
    assert.deepEqual(h.backup(b.id).clones, [source], "a failback is not a clone: the list is unchanged");
  });

  it("a flattened source (no longer listed): the backup of the CLONE restore job that made it", async () => {
    const v = vol("v1");
    const source = vol("flat", "b");
    const b = available(v);
    const cj = await api.restoreBackup({ backupId: b.id, target: source, mode: RestoreMode.RESTORE_MODE_CLONE });
    h.tick();
    images.b?.add("rbd/flat");
    h.outcome(b1, cj.id, Status.OK, "", {
      $case: "restore",
      value: { ...restoreResult(b.id), target: { pool: "rbd", namespace: "", image: "flat" } },
    });
    await h.settle();
    assert.equal(h.job(cj.id).state, JobState.JOB_STATE_SUCCEEDED);
    const flattened = h.backup(b.id);
    flattened.clones = [];
    h.catalog.updateBackup(flattened);
    const r = await api.failbackVolume({ volume: v, source });
    assert.equal(r.backup?.id, b.id);
    const id = r.job?.id ?? "";
    h.tick();
    const reason = "rbd/flat is no longer a clone of the backup's snapshot (flattened)";
    const result = { ...restoreResult(b.id), dataBytesSent: 1 << 30, fullCopyReason: reason };
    h.outcome(b1, id, Status.OK, "", { $case: "restore", value: result });
    await h.settle();
    const done = await api.getJob({ jobId: id });
    assert.equal(done.state, JobState.JOB_STATE_SUCCEEDED);
    assert.equal(done.restore?.fullCopyReason, reason, "the full copy's reason is kept in the job");
  });

  it("a job taking either volume, admitted while the source is probed: the failback is refused, not queued behind it", async () => {
    const v = vol("v1");
    const source = vol("v1-over", "b");
    const b = available(v, [source]);
    let other = "";
    onProbe = () => {
      other = h.queueDelete(available(v).id).id; // holds v1's volume lock
    };
    const before = h.catalog.activeJobs().length;
    await assertStatus(
      api.failbackVolume({ volume: v, source }),
      Status.FAILED_PRECONDITION,
      /^a\/rbd\/v1 or b\/rbd\/v1-over is in use by job .* \(JOB_KIND_DELETE\); retry when it has finished/,
    );
    assert.equal(h.catalog.activeJobs().length, before + 1, "only the DELETE admitted meanwhile");
    assert.ok(h.catalog.activeJobs().some((j) => j.id === other));
    cancel(other);
    assert.equal(h.backup(b.id).status, BackupStatus.BACKUP_STATUS_AVAILABLE);
  });

  it("a failback whose backup is given to a DELETE while the source is probed: refused, nothing queued", async () => {
    const v = vol("v1");
    const source = vol("v1-over", "b");
    const b = available(v, [source]);
    let other = "";
    onProbe = () => {
      b.clones = []; // flattened meanwhile: its delete is allowed
      h.catalog.updateBackup(b);
      const d = h.queueDelete(b.id);
      other = d.id;
      // Only the backup's lock: the failback's volumes stay free, so only the backup's status refuses it.
      h.catalog.updateJob({ ...d, locks: [d.locks[1] as string] });
    };
    const before = h.catalog.activeJobs().length;
    await assertStatus(
      api.failbackVolume({ volume: v, source, backupId: b.id }),
      Status.FAILED_PRECONDITION,
      /is BACKUP_STATUS_DELETING \(changed while the source was checked\)/,
    );
    assert.equal(h.catalog.activeJobs().length, before + 1, "only the DELETE");
    cancel(other);
  });

  it("a restore whose backup is given to a DELETE while the target is probed: refused, nothing queued", async () => {
    const v = vol("v1");
    const b = available(v);
    let other = "";
    onProbe = () => {
      other = h.queueDelete(b.id).id;
    };
    const before = h.catalog.activeJobs().length;
    await assertStatus(
      api.restoreBackup({ backupId: b.id, target: vol("fresh", "a"), mode: RestoreMode.RESTORE_MODE_NEW }),
      Status.FAILED_PRECONDITION,
      /is BACKUP_STATUS_DELETING; only an available backup can be restored/,
    );
    assert.equal(h.catalog.activeJobs().length, before + 1, "only the DELETE");
    cancel(other);
  });

  it("bad input, no parent backup, a missing source, RestoreBackup with mode FAILBACK: exact statuses, nothing queued", async () => {
    const v = vol("v1");
    const other = available(vol("elsewhere"));
    const before = h.catalog.activeJobs().length;
    await assertStatus(
      api.failbackVolume({ volume: v, source: vol("nobody", "b") }),
      Status.NOT_FOUND,
      /^no available backup of a\/rbd\/v1 is known as the parent of b\/rbd\/nobody/,
    );
    await assertStatus(api.failbackVolume({ volume: v }), Status.INVALID_ARGUMENT, /^source is required/);
    await assertStatus(
      api.failbackVolume({ volume: v, source: v }),
      Status.INVALID_ARGUMENT,
      /^source: the failed-over volume cannot be the volume itself/,
    );
    await assertStatus(
      api.failbackVolume({ volume: v, source: vol("x", "b"), backupId: other.id }),
      Status.INVALID_ARGUMENT,
      /^backup_id: backup .* is not a backup of a\/rbd\/v1/,
    );
    const b = available(v, [vol("gone", "b"), vol("on-a", "a")]);
    await assertStatus(
      api.failbackVolume({ volume: v, source: vol("on-a", "a") }),
      Status.INVALID_ARGUMENT,
      /^source\.cluster: the failed-over volume is on the backup's cluster b/,
    );
    await assertStatus(
      api.failbackVolume({ volume: v, source: vol("gone", "b"), backupId: b.id }),
      Status.NOT_FOUND,
      /^source b\/rbd\/gone not found/,
    );
    await assertStatus(
      api.restoreBackup({ backupId: b.id, target: v, mode: RestoreMode.RESTORE_MODE_FAILBACK }),
      Status.INVALID_ARGUMENT,
      /^mode: FAILBACK is FailbackVolume's/,
    );
    assert.equal(h.catalog.activeJobs().length, before);
  });
});
