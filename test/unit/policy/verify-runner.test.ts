/**
 * A policy's scheduled verification on the scheduler harness (real SQLite catalog in memory, fake
 * clock): which backup is verified (the newest available at the destination), when (its last
 * verification older than the interval), once per slot (idempotency key), never twice at once; paused
 * policies and volumes skipped; METADATA for a backup without a digest map. Also Policy.verify's
 * validation and what VolumeProtection shows of verification.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { Backup } from "../../../src/coordinator/model";
import { newRecord } from "../../../src/coordinator/policy/slots";
import { validatePolicy } from "../../../src/coordinator/policy/validate";
import { PolicyVerifyRunner, verifyKey } from "../../../src/coordinator/policy/verify-runner";
import { validateVerifySchedule, verifyStatus } from "../../../src/coordinator/policy/verify-schedule";
import { SAFETY_PASS_MS } from "../../../src/coordinator/scheduler/wake-timer";
import { BackupMode, VerifyMode } from "../../../src/gen/rbdbackup/v1/agent";
import { BackupIntegrity, BackupStatus, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import { Policy } from "../../../src/gen/rbdbackup/v1/policy";
import { Harness, newBackup, vol } from "../coordinator/harness";

const HOUR = 3600;

const only = (...volumes: VolumeRef[]) => ({ volumes, cluster: "", pool: "", namespace: "", imageRegex: "" });

function policy(over: Partial<Policy> = {}): Policy {
  return Policy.fromPartial({
    name: "gold",
    selector: { volumes: [vol("v1"), vol("v2")] },
    destination: { cluster: "b", pool: "backups", namespace: "" },
    mode: BackupMode.BACKUP_MODE_AUTO,
    schedule: { intervalSeconds: 60 },
    retention: { keepLast: 2 },
    verify: { intervalSeconds: HOUR, mode: VerifyMode.VERIFY_MODE_FULL, samplePercent: 0 },
    ...over,
  });
}

describe("policy verify runner", () => {
  let h: Harness;
  let runner: PolicyVerifyRunner;

  const verifyJobs = () => h.catalog.listJobs({ kind: JobKind.JOB_KIND_VERIFY }, 1000, "").items;

  function backupOf(v: VolumeRef, over: Partial<Backup> = {}, digest = "ab".repeat(32)): Backup {
    const b = newBackup(v, "b", h.t);
    h.advance(1000);
    Object.assign(b, { status: BackupStatus.BACKUP_STATUS_AVAILABLE, baseImage: `img.${b.id}`, snapshot: "s" }, over);
    if (digest) {
      b.integrity = BackupIntegrity.fromPartial({ imageDigest: digest, digestBlockSize: 65536 });
    }
    h.catalog.insertBackup(b);
    return b;
  }

  function protect(p: Policy): void {
    h.catalog.policies.insertPolicy(p);
    for (const v of p.selector?.volumes ?? []) {
      h.catalog.policies.upsertProtection(newRecord(p, v, "explicit", h.t));
    }
  }

  beforeEach(() => {
    h = new Harness();
    runner = new PolicyVerifyRunner({
      catalog: h.catalog,
      store: h.catalog.policies,
      scheduler: { kick() {} },
      log: h.log,
      maxAttempts: 3,
      tickMs: 1000,
      now: () => h.t,
    });
  });
  afterEach(() => h.close());

  it("verifies each volume's newest available backup at the destination, once per slot", () => {
    protect(policy());
    backupOf(vol("v1"));
    const newest = backupOf(vol("v1"));
    backupOf(vol("v1"), { status: BackupStatus.BACKUP_STATUS_FAILED });
    backupOf(vol("v1"), { location: { cluster: "c", pool: "backups", namespace: "" } });
    const v2 = backupOf(vol("v2"));
    const queued = runner.tick();
    assert.equal(queued.length, 2);
    const jobs = verifyJobs();
    assert.deepEqual(jobs.map((j) => j.backupId).sort(), [newest.id, v2.id].sort());
    for (const j of jobs) {
      assert.deepEqual(j.operation, { kind: "verify", mode: VerifyMode.VERIFY_MODE_FULL, samplePercent: 0 });
      assert.equal(j.execCluster, "b");
      const slot = Math.floor(h.t / (HOUR * 1000));
      assert.equal(j.idempotencyKey, verifyKey("gold", j.backupId, slot));
    }
    // Queued or running: never a second one.
    assert.deepEqual(runner.tick(), []);
    // Done (verified now): not due again until the interval has passed.
    for (const j of jobs) {
      h.catalog.updateJob({ ...j, state: JobState.JOB_STATE_SUCCEEDED, finishedAt: h.t });
      const b = h.backup(j.backupId);
      h.catalog.updateBackup({
        ...b,
        integrity: {
          ...(b.integrity as NonNullable<Backup["integrity"]>),
          lastVerifiedAt: new Date(h.t),
          lastVerifyOk: true,
        },
      });
    }
    h.advance(HOUR * 1000 - 1);
    assert.deepEqual(runner.tick(), []);
    assert.equal(runner.nextWake, h.t + 1, "its timer is set to the next verification's due time");
    h.advance(1);
    assert.equal(runner.tick().length, 2);
  });

  it("sleeps for the safety pass with no verification due (none verifying; one verified an interval ago)", () => {
    assert.deepEqual(runner.tick(), []);
    assert.equal(runner.nextWake, h.t + SAFETY_PASS_MS);
    protect(policy());
    const b = backupOf(vol("v1"));
    h.catalog.updateBackup({
      ...b,
      integrity: { ...(b.integrity as NonNullable<Backup["integrity"]>), lastVerifiedAt: new Date(h.t) },
    });
    assert.deepEqual(runner.tick(), []);
    assert.equal(runner.nextWake, h.t + SAFETY_PASS_MS);
  });

  it("a failed verification is tried again in the next slot, not in the same one", () => {
    protect(policy({ selector: only(vol("v1")) }));
    backupOf(vol("v1"));
    const [first] = runner.tick();
    const j = h.job(first as string);
    h.catalog.updateJob({ ...j, state: JobState.JOB_STATE_FAILED, finishedAt: h.t });
    assert.deepEqual(runner.tick(), [], "the slot's key is taken");
    const nextSlot = (Math.floor(h.t / (HOUR * 1000)) + 1) * HOUR * 1000;
    assert.equal(
      runner.nextWake,
      Math.min(nextSlot, h.t + SAFETY_PASS_MS),
      "it sleeps until the next slot, not a tick",
    );
    h.advance(HOUR * 1000);
    assert.equal(runner.tick().length, 1);
  });

  it("skips paused policies, paused volumes, policies without verify; METADATA without a digest map", () => {
    protect(policy({ name: "off", verify: undefined, destination: { cluster: "c", pool: "", namespace: "" } }));
    protect(policy({ name: "paused", paused: true, destination: { cluster: "d", pool: "", namespace: "" } }));
    protect(policy({ selector: only(vol("v1"), vol("v2")) }));
    const rec = h.catalog.policies.getProtection("gold", "a/rbd//v2");
    assert.ok(rec);
    h.catalog.policies.upsertProtection({ ...rec, pausedReason: "failed over" });
    const old = backupOf(vol("v1"), {}, "");
    backupOf(vol("v2"));
    backupOf(vol("v1"), { location: { cluster: "c", pool: "x", namespace: "" } });
    backupOf(vol("v1"), { location: { cluster: "d", pool: "x", namespace: "" } });
    runner.tick();
    const jobs = verifyJobs();
    assert.deepEqual(
      jobs.map((j) => [j.backupId, j.operation]),
      [[old.id, { kind: "verify", mode: VerifyMode.VERIFY_MODE_METADATA, samplePercent: 0 }]],
    );
  });

  it("Policy.verify is validated, naming the field", () => {
    const bad = (s: Parameters<typeof validateVerifySchedule>[0], re: RegExp) =>
      assert.throws(
        () => validateVerifySchedule(s, 30),
        (e: unknown) => e instanceof AppError && e.status === Status.INVALID_ARGUMENT && re.test(e.message),
      );
    validateVerifySchedule(undefined, 30);
    validateVerifySchedule({ intervalSeconds: 0, mode: 0, samplePercent: 0 }, 30);
    validateVerifySchedule({ intervalSeconds: 86400, mode: VerifyMode.VERIFY_MODE_SAMPLE, samplePercent: 5 }, 30);
    bad({ intervalSeconds: 10, mode: 0, samplePercent: 0 }, /^policy\.verify\.interval_seconds 10 is outside 30\.\./);
    bad({ intervalSeconds: 400 * 86400, mode: 0, samplePercent: 0 }, /^policy\.verify\.interval_seconds/);
    bad({ intervalSeconds: 3600, mode: 7 as VerifyMode, samplePercent: 0 }, /^policy\.verify\.mode: unknown value 7/);
    bad({ intervalSeconds: 3600, mode: 0, samplePercent: 101 }, /^policy\.verify\.sample_percent/);
    bad({ intervalSeconds: 3600, mode: VerifyMode.VERIFY_MODE_FULL, samplePercent: 5 }, /only mode SAMPLE/);
    bad({ intervalSeconds: 0, mode: VerifyMode.VERIFY_MODE_FULL, samplePercent: 0 }, /interval_seconds is 0/);
    // validatePolicy (CreatePolicy, UpdatePolicy) checks it, against the coordinator's minimum interval.
    const ctx = {
      minIntervalSeconds: 30,
      knownCluster: () => {},
      defaultPool: () => "backups",
      others: [],
      selected: () => [],
    };
    assert.equal(validatePolicy(policy(), ctx).verify?.intervalSeconds, HOUR);
    assert.throws(
      () => validatePolicy(policy({ verify: { intervalSeconds: 5, mode: 0, samplePercent: 0 } }), ctx),
      /^AppError: policy\.verify\.interval_seconds 5 is outside 30\.\./,
    );
  });

  it("VolumeProtection: the newest backup's last verification and the CORRUPT backups at the destination", () => {
    const p = policy();
    const at = new Date(h.t);
    backupOf(vol("v1"), { status: BackupStatus.BACKUP_STATUS_CORRUPT });
    backupOf(vol("v1"), {
      status: BackupStatus.BACKUP_STATUS_CORRUPT,
      location: { cluster: "c", pool: "backups", namespace: "" },
    });
    const newest = backupOf(vol("v1"));
    h.catalog.updateBackup({
      ...newest,
      integrity: { ...(newest.integrity as NonNullable<Backup["integrity"]>), lastVerifiedAt: at, lastVerifyOk: true },
    });
    assert.deepEqual(verifyStatus(h.catalog, p, vol("v1")), {
      lastVerifiedAt: at,
      lastVerifyOk: true,
      corruptBackups: 1,
    });
    assert.deepEqual(verifyStatus(h.catalog, p, vol("v2")), {
      lastVerifiedAt: undefined,
      lastVerifyOk: false,
      corruptBackups: 0,
    });
  });
});
