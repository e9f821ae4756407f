/**
 * CLONE restores, FLATTEN jobs and failover in the coordinator, without Ceph: the real BackupService
 * handlers on 127.0.0.1:0, an in-memory catalog, fake agents answering the probes, and a scheduler
 * the test ticks by hand. Asserts the exact statuses, the Backup.clones bookkeeping, the FLATTEN job
 * queued after a clone, the delete guard, and failover's choice of backup and paused protection.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { Catalog } from "../../../src/coordinator/catalog/catalog";
import type { PolicyStore } from "../../../src/coordinator/catalog/policy-store";
import type { Backup } from "../../../src/coordinator/model";
import type { ProtectionRecord } from "../../../src/coordinator/policy/model";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { RestoreMode, type RestoreResult } from "../../../src/gen/rbdbackup/v1/agent";
import { BackupStatus, type Job, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import type { CallReply } from "../../../src/gen/rbdbackup/v1/session";
import type { Answer, FakeAgentSession } from "../../helpers/fake-agent";
import { until } from "../../helpers/wait";
import { type Api, type ApiServer, assertStatus, serveApi } from "./api-server";
import { backupResult, Harness, newBackup, vol } from "./harness";

/** Images that exist, by cluster ("pool/image"). */
const images: Record<string, Set<string>> = { a: new Set(["rbd/v1"]), b: new Set(["rbd/taken"]) };
const pools: Record<string, string[]> = { a: ["rbd"], b: ["rbd", "backups"] };

function clusterAnswer(cluster: string) {
  return (req: CallRequest): Answer => {
    if (req.$case !== "probe") return new AppError(Status.UNIMPLEMENTED, req.$case);
    const q = req.value;
    const have = pools[cluster] ?? [];
    const exists = q.image ? (images[cluster]?.has(`${q.image.pool}/${q.image.image}`) ?? false) : false;
    const value = {
      missingPools: [...q.pools, ...(q.image ? [q.image.pool] : [])].filter((p) => !have.includes(p)),
      missingNamespaces: [],
      imageExists: exists,
      imageSize: exists ? 1 << 20 : 0,
      imageSnapshots: [],
    };
    return { $case: "probe", value };
  };
}

/** Set: the next protection write fails (once). */
let failNextPause = false;

/** An in-memory PolicyStore holding only protection records (what failover touches). */
function protectionStore(records: ProtectionRecord[]): PolicyStore {
  const key = (v: VolumeRef) => `${v.cluster}/${v.pool}/${v.namespace}/${v.image}`;
  const none = () => assert.fail("not used by failover");
  return {
    insertPolicy: none,
    getPolicy: none,
    updatePolicy: none,
    deletePolicy: none,
    listPolicies: none,
    allPolicies: none,
    upsertProtection: (r) => {
      if (failNextPause) {
        failNextPause = false;
        throw new Error("fenced (injected)");
      }
      const i = records.findIndex((x) => x.policy === r.policy && key(x.volume) === key(r.volume));
      if (i >= 0) records[i] = r;
      else records.push(r);
    },
    getProtection: none,
    dueProtection: none,
    protectionOfPolicy: none,
    protectionOfVolume: (k) => records.filter((r) => key(r.volume) === k),
    listProtection: none,
    deleteProtection: none,
  };
}

function record(policy: string, volume: VolumeRef, pausedReason = ""): ProtectionRecord {
  return {
    policy,
    volume,
    source: "explicit",
    nextSlotAt: 0,
    nextRunAt: 0,
    lastSlotAt: 0,
    lastJobId: "",
    lastError: "",
    consecutiveFailures: 0,
    missedRuns: 0,
    pausedReason,
    lastSeenAt: 0,
    createdAt: 0,
  };
}

const restoreResult = (backupId: string, target: VolumeRef): RestoreResult => ({
  backupId,
  target: { pool: target.pool, namespace: target.namespace, image: target.image },
  imageSize: 1 << 20,
  dataBytesSent: 0,
  zeroBytes: 0,
  dataChunks: 0,
  zeroRanges: 0,
  seconds: 0.1,
  volumeId: "",
  volumeMetadata: {},
  imageMeta: {},
  warnings: [],
  fullCopyReason: "",
  resumedFrom: 0,
  resumeFallbackReason: "",
});

describe("CLONE restore, FLATTEN and failover (coordinator)", () => {
  let h: Harness;
  let served: ApiServer;
  let api: Api;
  let b1: FakeAgentSession;
  const protection: ProtectionRecord[] = [];

  /** An AVAILABLE backup of `v` kept in b/backups, `ageMs` before now. */
  function available(v: VolumeRef, ageMs = 0, pool = "backups"): Backup {
    const b = newBackup(v, "b", h.t - ageMs);
    const made = backupResult(b.id);
    Object.assign(b, {
      baseImage: made.baseImage,
      snapshot: made.snapshot,
      status: BackupStatus.BACKUP_STATUS_AVAILABLE,
    });
    if (b.location) b.location.pool = pool;
    h.catalog.insertBackup(b);
    return b;
  }

  before(async () => {
    h = new Harness();
    const catalog = new Proxy(h.catalog, {
      get(target, prop, receiver) {
        if (prop === "policies") return protectionStore(protection);
        const v = Reflect.get(target, prop, receiver);
        return typeof v === "function" ? v.bind(target) : v;
      },
    }) as Catalog;
    const deps = { catalog, sessions: h.sessions, scheduler: h.scheduler, log: h.log, maxAttempts: 3 };
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

  it("CLONE: the target on the backup's own cluster, not existing; flatten only with CLONE", async () => {
    const b = available(vol("v1"));
    const clone = (target: VolumeRef, flatten = false) =>
      api.restoreBackup({ backupId: b.id, target, mode: RestoreMode.RESTORE_MODE_CLONE, flatten });
    await assertStatus(
      clone(vol("x", "a")),
      Status.INVALID_ARGUMENT,
      /^target\.cluster: mode CLONE makes the target on the backup's own cluster b, not on a/,
    );
    await assertStatus(clone(vol("taken", "b")), Status.ALREADY_EXISTS, /^target b\/rbd\/taken exists/);
    await assertStatus(
      api.restoreBackup({ backupId: b.id, target: vol("x", "b"), mode: RestoreMode.RESTORE_MODE_NEW, flatten: true }),
      Status.INVALID_ARGUMENT,
      /^flatten: only a CLONE restore/,
    );
    assert.equal(h.catalog.activeJobs().filter((j) => j.backupId === b.id).length, 0, "nothing queued");
  });

  it("a CLONE restore lists its target in Backup.clones, queues its FLATTEN; delete waits; flatten detaches it", async () => {
    const b = available(vol("v1"));
    const target = vol("now", "b");
    const r = await api.restoreBackup({ backupId: b.id, target, mode: RestoreMode.RESTORE_MODE_CLONE, flatten: true });
    const rj = h.job(r.id);
    assert.equal(rj.execCluster, "b");
    assert.equal(rj.peerCluster, "", "no transfer peer: the clone is made where the backup is");
    h.tick();
    const lease = b1.lease(r.id);
    assert.equal(lease.operation?.$case, "restore");
    if (lease.operation?.$case === "restore") {
      assert.equal(lease.operation.value.mode, RestoreMode.RESTORE_MODE_CLONE);
      assert.equal(lease.operation.value.snapshot, b.snapshot);
    }
    images.b?.add("rbd/now");
    h.outcome(b1, r.id, Status.OK, "", { $case: "restore", value: restoreResult(b.id, target) });
    await h.settle(); // the target cluster's agent confirms the clone (exists, size)
    assert.equal(h.job(r.id).state, JobState.JOB_STATE_SUCCEEDED);
    assert.deepEqual(h.backup(b.id).clones, [target]);
    const flatten = h.catalog.activeJobs().find((j) => j.kind === JobKind.JOB_KIND_FLATTEN && j.backupId === b.id);
    assert.ok(flatten, "a FLATTEN job is queued");
    assert.deepEqual(flatten.volume, target);
    await assertStatus(
      api.deleteBackup({ backupId: b.id }),
      Status.FAILED_PRECONDITION,
      new RegExp(`JOB_KIND_FLATTEN job ${flatten.id}`),
    );
    h.tick();
    const fl = b1.lease(flatten.id);
    assert.equal(fl.operation?.$case, "flatten");
    if (fl.operation?.$case === "flatten") {
      assert.deepEqual(fl.operation.value, {
        image: { pool: "rbd", namespace: "", image: "now" },
        backupId: b.id,
        backupPool: "backups",
        backupNamespace: "",
        baseImage: b.baseImage,
        jobId: flatten.id,
      });
    }
    const flat = { image: { pool: "rbd", namespace: "", image: "now" }, flattened: true, seconds: 1, warnings: [] };
    h.outcome(b1, flatten.id, Status.OK, "", { $case: "flatten", value: flat });
    assert.equal(h.job(flatten.id).state, JobState.JOB_STATE_SUCCEEDED);
    assert.deepEqual(h.backup(b.id).clones, []);
    const d = await api.deleteBackup({ backupId: b.id });
    assert.equal(d.kind, JobKind.JOB_KIND_DELETE);
    await api.cancelJob({ jobId: d.id });
  });

  it("a CLONE restore without flatten queues nothing more; delete is refused naming the clone", async () => {
    const b = available(vol("v1"));
    const target = vol("kept", "b");
    const r = await api.restoreBackup({ backupId: b.id, target, mode: RestoreMode.RESTORE_MODE_CLONE });
    h.tick();
    images.b?.add("rbd/kept");
    h.outcome(b1, r.id, Status.OK, "", { $case: "restore", value: restoreResult(b.id, target) });
    await h.settle(); // the target cluster's agent confirms the clone (exists, size)
    assert.equal(h.catalog.activeJobs().filter((j) => j.backupId === b.id).length, 0);
    await assertStatus(
      api.deleteBackup({ backupId: b.id }),
      Status.FAILED_PRECONDITION,
      /has clones that depend on its snapshot: b\/rbd\/kept; flatten them/,
    );
    assert.equal(h.backup(b.id).status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    // The clone removed outside rbdbackup: the next delete drops it from the list and goes ahead.
    images.b?.delete("rbd/kept");
    const d = await api.deleteBackup({ backupId: b.id });
    assert.deepEqual(h.backup(b.id).clones, []);
    assert.equal(h.backup(b.id).status, BackupStatus.BACKUP_STATUS_DELETING);
    await api.cancelJob({ jobId: d.id });
  });

  it("two deletes admitted while the clones are probed: one DELETE job, the other FAILED_PRECONDITION (checked again in the transaction)", async () => {
    const b = available(vol("v1"));
    const target = vol("gone", "b");
    const r = await api.restoreBackup({ backupId: b.id, target, mode: RestoreMode.RESTORE_MODE_CLONE });
    h.tick();
    images.b?.add("rbd/gone");
    h.outcome(b1, r.id, Status.OK, "", { $case: "restore", value: restoreResult(b.id, target) });
    await h.settle();
    images.b?.delete("rbd/gone"); // removed outside rbdbackup: each delete probes it, then goes ahead
    // The clone's probes are held until both deletes have passed their first checks and wait on them.
    const held: CallReply[] = [];
    const reply = b1.onCallReply.bind(b1);
    b1.onCallReply = (r) => held.push(r);
    const racing = Promise.allSettled([api.deleteBackup({ backupId: b.id }), api.deleteBackup({ backupId: b.id })]);
    try {
      await until(() => held.length === 2, "both deletes to probe the clone");
    } finally {
      b1.onCallReply = reply;
      for (const r of held.splice(0)) reply(r);
    }
    const both = await racing;
    const ok = both.filter((x) => x.status === "fulfilled");
    const refused = both.filter((x): x is PromiseRejectedResult => x.status === "rejected");
    assert.equal(ok.length, 1, "exactly one delete admitted");
    assert.equal(refused.length, 1);
    assert.equal((refused[0] as PromiseRejectedResult).reason.code, Status.FAILED_PRECONDITION);
    const deletes = h.catalog.activeJobs().filter((j) => j.backupId === b.id && j.kind === JobKind.JOB_KIND_DELETE);
    assert.equal(deletes.length, 1, "one DELETE job for the backup");
    assert.equal(h.backup(b.id).status, BackupStatus.BACKUP_STATUS_DELETING);
    await api.cancelJob({ jobId: (deletes[0] as { id: string }).id });
  });

  it("a failed CLONE restore lists no clone and queues no FLATTEN", async () => {
    const b = available(vol("v1"));
    const target = vol("broken", "b");
    const r = await api.restoreBackup({ backupId: b.id, target, mode: RestoreMode.RESTORE_MODE_CLONE, flatten: true });
    h.tick();
    h.outcome(b1, r.id, Status.NOT_FOUND, "backup pool backups not found");
    assert.equal(h.job(r.id).state, JobState.JOB_STATE_FAILED);
    assert.deepEqual(h.backup(b.id).clones, []);
    assert.equal(h.catalog.activeJobs().filter((j) => j.backupId === b.id).length, 0);
  });

  it("failover: the newest available backup at the location, as a CLONE; the volume's protection paused", async () => {
    const v = vol("fo", "a");
    const older = available(v, 60_000);
    const newest = available(v, 1_000);
    const elsewhere = available(v, 0, "other");
    const failed = available(v, 0);
    failed.status = BackupStatus.BACKUP_STATUS_FAILED;
    h.catalog.updateBackup(failed);
    protection.push(record("gold", v), record("silver", v, "earlier reason"), record("gold", vol("other", "a")));
    const location = { cluster: "b", pool: "backups", namespace: "" };
    const r = await api.failoverVolume({ volume: v, location, target: vol("fo", "b"), reason: "site a down" });
    assert.equal(r.backup?.id, newest.id);
    assert.notEqual(r.backup?.id, older.id);
    assert.notEqual(r.backup?.id, elsewhere.id);
    assert.equal(r.job?.kind, JobKind.JOB_KIND_RESTORE);
    const j = h.job(r.job?.id ?? "");
    assert.equal(j.operation.kind === "restore" && j.operation.mode, RestoreMode.RESTORE_MODE_CLONE);
    assert.deepEqual(r.pausedPolicies.sort(), ["gold", "silver"]);
    assert.match(protection[0]?.pausedReason ?? "", /^failed over to b\/rbd\/fo from backup .*: site a down$/);
    assert.equal(protection[1]?.pausedReason, "earlier reason", "an earlier pause keeps its reason");
    assert.equal(protection[2]?.pausedReason, "", "another volume's record is untouched");
    await api.cancelJob({ jobId: j.id });
  });

  it("failover cancels the volume's policy runs still queued (they would back the lost volume up later); others stay", async () => {
    const v = vol("fo-q", "a");
    available(v, 1_000);
    protection.push(record("gold", v));
    const queuedRun = h.queueBackup(v, "b", "pol:gold:slot-1");
    const manual = h.queueBackup(vol("fo-q2", "a"), "b", "pol:gold:slot-2"); // another volume's
    const operators = h.queueBackup(v, "b", "operator-key"); // not a policy's
    const location = { cluster: "b", pool: "backups", namespace: "" };
    const r = await api.failoverVolume({ volume: v, location, target: vol("fo-q", "b") });
    assert.equal(h.job(queuedRun.id).state, JobState.JOB_STATE_CANCELLED);
    assert.notEqual(h.job(manual.id).state, JobState.JOB_STATE_CANCELLED);
    assert.notEqual(h.job(operators.id).state, JobState.JOB_STATE_CANCELLED);
    for (const id of [manual.id, operators.id, r.job?.id ?? ""]) await api.cancelJob({ jobId: id });
  });

  it("failover withdraws the volume's retention DELETEs still queued (CANCELLED saying why, the backups AVAILABLE); an operator's and another volume's stay", async () => {
    const v = vol("fo-del", "a");
    const older = available(v, 60_000);
    const old2 = available(v, 50_000);
    available(v, 1_000);
    const elsewhere = available(vol("fo-del2", "a"), 1_000);
    protection.push(record("gold", v));
    const retention = h.queueDelete(older.id, `pol:gold:del:${older.id}`);
    const operators = h.queueDelete(old2.id, "operator-delete");
    const otherVolume = h.queueDelete(elsewhere.id, `pol:gold:del:${elsewhere.id}`);
    const location = { cluster: "b", pool: "backups", namespace: "" };
    const r = await api.failoverVolume({ volume: v, location, target: vol("fo-del", "b") });
    const withdrawn = h.job(retention.id);
    assert.equal(withdrawn.state, JobState.JOB_STATE_CANCELLED);
    assert.equal(
      withdrawn.errorMessage,
      `withdrawn before it ran: the volume's protection was paused by failover job ${r.job?.id}`,
    );
    assert.equal(h.backup(older.id).status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    // (The operator's may have been leased once the withdrawn one freed the volume's lock.)
    assert.notEqual(h.job(operators.id).state, JobState.JOB_STATE_CANCELLED);
    assert.notEqual(h.job(otherVolume.id).state, JobState.JOB_STATE_CANCELLED);
    for (const id of [operators.id, otherVolume.id, r.job?.id ?? ""]) await api.cancelJob({ jobId: id });
  });

  it("failover's idempotency key stands for its request: a retry gets the same job after a newer backup and pauses nothing again; another reason is ALREADY_EXISTS", async () => {
    const v = vol("fo-key", "a");
    available(v, 60_000);
    protection.push(record("gold", v));
    const location = { cluster: "b", pool: "backups", namespace: "" };
    const req = { volume: v, location, target: vol("fo-key", "b"), reason: "drill", idempotencyKey: "fo-key-1" };
    const first = await api.failoverVolume(req);
    assert.deepEqual(first.pausedPolicies, ["gold"]);
    const newer = available(v, 0); // a backup that completed after the first call
    const rec = protection.find((r) => r.policy === "gold" && r.volume.image === "fo-key");
    assert.ok(rec);
    rec.pausedReason = ""; // the operator resumed protection meanwhile
    const again = await api.failoverVolume(req);
    assert.equal(again.job?.id, first.job?.id, "the same job");
    assert.equal(again.backup?.id, first.backup?.id);
    assert.notEqual(again.backup?.id, newer.id);
    assert.deepEqual(again.pausedPolicies, [], "nothing paused now, nothing paused again");
    assert.equal(rec.pausedReason, "", "the resumed record stays resumed");
    await assert.rejects(api.failoverVolume({ ...req, reason: "another" }), { code: Status.ALREADY_EXISTS });
    await api.cancelJob({ jobId: first.job?.id ?? "" });
  });

  it("two ORIGINAL restores onto one volume admitted while the target is probed: one job, the other FAILED_PRECONDITION (checked again in the transaction)", async () => {
    const target = vol("busy", "b");
    images.b?.add("rbd/busy");
    const [x, y] = [available(vol("src-1")), available(vol("src-2"))];
    const held: CallReply[] = [];
    const reply = b1.onCallReply.bind(b1);
    b1.onCallReply = (r) => held.push(r);
    const racing = Promise.allSettled(
      [x, y].map((b) => api.restoreBackup({ backupId: b.id, target, mode: RestoreMode.RESTORE_MODE_ORIGINAL })),
    );
    try {
      await until(() => held.length === 2, "both restores to probe the target");
    } finally {
      b1.onCallReply = reply;
      for (const r of held.splice(0)) reply(r);
    }
    const both = await racing;
    const ok = both.filter((r): r is PromiseFulfilledResult<Job> => r.status === "fulfilled");
    const refused = both.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    assert.equal(ok.length, 1, "exactly one restore admitted");
    assert.equal(refused[0]?.reason.code, Status.FAILED_PRECONDITION);
    assert.match(refused[0]?.reason.details ?? "", /target b\/rbd\/busy is in use by job/);
    const onTarget = h.catalog.activeJobs().filter((j) => j.volume?.image === "busy");
    assert.equal(onTarget.length, 1, "one job on the target");
    await api.cancelJob({ jobId: ok[0]?.value.id ?? "" });
    images.b?.delete("rbd/busy");
  });

  it("the same restore twice at once (a client's retry, one idempotency key): both answered with one job", async () => {
    const target = vol("retried", "b");
    images.b?.add("rbd/retried");
    const b = available(vol("src-3"));
    const held: CallReply[] = [];
    const reply = b1.onCallReply.bind(b1);
    b1.onCallReply = (r) => held.push(r);
    const req = {
      backupId: b.id,
      target,
      mode: RestoreMode.RESTORE_MODE_ORIGINAL,
      idempotencyKey: "restore-retried-1",
    };
    const racing = Promise.all([api.restoreBackup(req), api.restoreBackup(req)]);
    try {
      await until(() => held.length === 2, "both calls to probe the target");
    } finally {
      b1.onCallReply = reply;
      for (const r of held.splice(0)) reply(r);
    }
    const [x, y] = await racing;
    assert.equal(x.id, y.id, "one job");
    await api.cancelJob({ jobId: x.id });
    images.b?.delete("rbd/retried");
  });

  it("failover: the restore is queued and the protection paused in one transaction — a pause that fails queues nothing", async () => {
    const v = vol("fo-tx", "a");
    available(v);
    protection.push(record("gold", v));
    const before = h.catalog.activeJobs().length;
    const location = { cluster: "b", pool: "backups", namespace: "" };
    // The pause's write fails (a fenced write: another coordinator took the lead meanwhile).
    failNextPause = true;
    await assertStatus(
      api.failoverVolume({ volume: v, location, target: vol("fo-tx", "b"), reason: "x" }),
      Status.INTERNAL,
      /internal error/,
    );
    assert.equal(h.catalog.activeJobs().length, before, "no restore queued without its pause");
    assert.equal(failNextPause, false, "the pause was tried");
  });

  it("failover: bad input and no backup: exact statuses, nothing queued or paused", async () => {
    const v = vol("none", "a");
    protection.push(record("gold", v));
    const before = h.catalog.activeJobs().length;
    const location = { cluster: "b", pool: "", namespace: "" };
    await assertStatus(
      api.failoverVolume({ volume: v, location, target: vol("none", "b") }),
      Status.NOT_FOUND,
      /^volume a\/rbd\/none has no available backup at b$/,
    );
    await assertStatus(
      api.failoverVolume({ volume: v, location, target: vol("none", "a") }),
      Status.INVALID_ARGUMENT,
      /^target\.cluster: /,
    );
    await assertStatus(
      api.failoverVolume({ volume: v, target: vol("x", "b") }),
      Status.INVALID_ARGUMENT,
      /^location is required/,
    );
    await assertStatus(
      api.failoverVolume({ volume: v, location, target: vol("x", "b"), reason: "r".repeat(257) }),
      Status.INVALID_ARGUMENT,
      /^reason: /,
    );
    assert.equal(h.catalog.activeJobs().length, before);
    assert.equal(protection.at(-1)?.pausedReason, "");
  });
});
