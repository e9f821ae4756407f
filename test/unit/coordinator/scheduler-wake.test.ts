/**
 * When the scheduler wakes by itself (scheduler.ts nextWake): at the next lease expiry, retry, or
 * confirmation check; at the polling cadence (cfg.tickMs) while a queued job waits for something no event
 * announces; at most SAFETY_PASS_MS on with nothing due. First with the harness's fake clock (what the
 * tick computes), then with the real clock and timers: a started scheduler whose tickMs is a minute
 * still notices an expired lease and runs the retry at its backoff time — which it only does because
 * its timer is set to those times (with a fixed one-minute tick the test times out).
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { Scheduler } from "../../../src/coordinator/scheduler";
import { SAFETY_PASS_MS } from "../../../src/coordinator/scheduler/scheduler";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { FakeAgentSession } from "../../helpers/fake-agent";
import { until } from "../../helpers/wait";
import { Harness, vol } from "./harness";

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
