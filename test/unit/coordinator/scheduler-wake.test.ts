/**
 * When the scheduler wakes by itself (scheduler.ts nextWake): at the next lease expiry, retry, or
 * confirmation check; at the polling cadence (cfg.tickMs) while a queued job waits for something no event
 * announces; at most SAFETY_PASS_MS on with nothing due. First with the harness's fake clock (what the
 * tick computes), then with the real clock and timers: a started scheduler whose tickMs is a minute
 * still notices an expired lease and runs the retry at its backoff time — which it only does because
 * its timer is set to those times (with a fixed one-minute tick the test times out).
 *
 * A pass that changes nothing reads the active jobs once; one that changes a job reads them again for
 * nextWake — also when the change was made to another copy of the job than the pass read (the confirmer
 * fails an attempt whose confirmation deadline passed through activeJob(id)).
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { Scheduler } from "../../../src/coordinator/scheduler";
import { SAFETY_PASS_MS } from "../../../src/coordinator/scheduler/wake-timer";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { FakeAgentSession } from "../../helpers/fake-agent";
import { until } from "../../helpers/wait";
import { backupResult, Harness, vol } from "./harness";

describe("scheduler wake-ups (fake clock)", () => {
  let h: Harness;
  let a1: FakeAgentSession;
  beforeEach(() => {
    h = new Harness({ tickMs: 1_000 });
    a1 = h.connect("a1", "a");
    h.connect("b1", "b");
  });
  afterEach(() => h.close());

  it("nothing active: the safety pass; a running job: its lease's expiry (renewals move it)", () => {
    h.tick();
    assert.equal(h.scheduler.nextWake, h.t + SAFETY_PASS_MS);
    const j = h.queueBackup(vol("v1"));
    h.tick();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_RUNNING);
    assert.equal(h.scheduler.nextWake, h.t + h.cfg.leaseTtlMs);
    h.advance(5_000);
    h.scheduler.onHeartbeat(a1, [{ jobId: j.id, attempt: 1, token: a1.lease(j.id).token }]);
    h.tick();
    assert.equal(h.scheduler.nextWake, h.t + h.cfg.leaseTtlMs, "renewed in memory");
  });

  it("a transient failure: its retry's backoff time; a job that cannot start (no agent): the polling cadence", () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.outcome(a1, j.id, Status.UNAVAILABLE, "transient");
    const queued = h.job(j.id);
    assert.equal(queued.state, JobState.JOB_STATE_QUEUED);
    assert.ok(queued.nextAttemptAt > h.t);
    h.tick();
    assert.equal(h.scheduler.nextWake, queued.nextAttemptAt);
    h.disconnect(a1);
    h.t = queued.nextAttemptAt;
    h.tick();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_QUEUED, "no agent of cluster a");
    assert.equal(h.scheduler.nextWake, h.t + h.cfg.tickMs);
  });

  it("one read of the active jobs for a pass that changes nothing, two for one that changes a job", () => {
    let reads = 0;
    const read = h.catalog.activeJobs.bind(h.catalog);
    h.catalog.activeJobs = () => {
      reads++;
      return read();
    };
    const pass = (): number => {
      reads = 0;
      h.tick();
      return reads;
    };
    const running = h.queueBackup(vol("v1"));
    assert.equal(pass(), 2, "leased: a change");
    assert.equal(h.job(running.id).state, JobState.JOB_STATE_RUNNING);
    const waiting = h.queueBackup(vol("v2", "c"));
    assert.equal(pass(), 2, "its waiting reason set: a change");
    h.advance(1_000);
    assert.equal(pass(), 1, "nothing changed");
    assert.equal(h.job(waiting.id).waitingReason, "waiting for an agent of cluster c to connect");
    assert.equal(h.scheduler.nextWake, h.t + h.cfg.tickMs, "the waiting job: polled");
    h.advance(h.cfg.leaseTtlMs);
    assert.equal(pass(), 2, "the lease expired: a change");
    assert.equal(h.job(running.id).attempts, 1);
    assert.equal(h.job(running.id).state, JobState.JOB_STATE_QUEUED);
  });

  it("a pass that fails an attempt through another copy of its job: nextWake is the retry's time, as the catalog has it", async () => {
    h.close();
    h = new Harness({ tickMs: 1_000, confirmTimeoutMs: 10_000, backoffBaseMs: 5_000 });
    a1 = h.connect("a1", "a");
    const b1 = h.connect("b1", "b");
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.commit(j);
    h.disconnect(b1);
    h.outcome(a1, j.id, Status.OK, "", { $case: "backup", value: backupResult(j.backupId) });
    await h.settle();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_RUNNING);
    assert.ok(h.job(j.id).confirming, "confirming, with no agent of its destination to ask");
    h.advance(10_000);
    h.tick();
    const queued = h.job(j.id);
    assert.equal(queued.state, JobState.JOB_STATE_QUEUED, "the confirmation's deadline passed: retried");
    assert.equal(queued.errorCode, "DEADLINE_EXCEEDED");
    assert.equal(queued.nextAttemptAt, h.t + 5_000);
    // The pass read the job RUNNING and confirming, past its deadline: from that copy nextWake would be
    // the polling cadence (h.t + 1 s), not the retry's backoff.
    assert.equal(h.scheduler.nextWake, queued.nextAttemptAt);
  });
});

describe("scheduler wake-ups (real clock and timers)", () => {
  let h: Harness;
  let s: Scheduler;
  afterEach(() => {
    s.stop();
    h.close();
  });

  it("a started scheduler with a one-minute tick: a queued job leased at once, its lost lease expired and retried on time", async () => {
    h = new Harness({ tickMs: 60_000, leaseTtlMs: 300, backoffBaseMs: 50, backoffMaxMs: 50 });
    const a1 = h.connect("a1", "a");
    h.connect("b1", "b");
    s = new Scheduler({ catalog: h.catalog, sessions: h.sessions, cfg: h.cfg, log: h.log });
    s.start();
    await until(() => s.nextWake < Number.POSITIVE_INFINITY, "the first tick");
    // Inserted (as the API and the policy runner do, with a kick): leased without waiting for a tick.
    const j = h.queueBackup(vol("v1"));
    s.kick();
    await until(() => a1.leases().length === 1, "the first lease");
    // The agent never reports: the lease expires after 300 ms, the retry waits 50 ms — both found by
    // the timer alone (no kick, no heartbeat), well within the one-minute tick.
    await until(() => a1.leases().length === 2, "the retry's lease", 5_000);
    const again = h.job(j.id);
    assert.equal(again.attempts, 2);
    assert.ok(h.log.lines.some((l) => l.msg === "lease expired"));
  });
});
