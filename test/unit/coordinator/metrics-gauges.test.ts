/**
 * The coordinator's point-in-time gauges (src/coordinator/metrics.ts) over a fake catalog and sessions:
 * a standby reports its role and no agents_connected series (its 0s would page "no agent" for every
 * cluster), and the queue-age gauge survives a queue far past what spread arguments allow.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { describe, it } from "node:test";
import type { Catalog } from "../../../src/coordinator/catalog/catalog";
import { collectErrorsCounter } from "../../../src/coordinator/metric-guard";
import { CoordinatorMetrics } from "../../../src/coordinator/metrics";
import type { Scheduler } from "../../../src/coordinator/scheduler";
import type { Sessions } from "../../../src/coordinator/sessions";
import { VerifyMetrics } from "../../../src/coordinator/verify-metrics";
import { BackupResult } from "../../../src/gen/rbdbackup/v1/agent";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { sample } from "../../helpers/metrics";

function metrics(opts: {
  leading: boolean;
  queued?: number;
  failingCatalog?: boolean;
  backingOff?: boolean;
  events?: EventEmitter;
}) {
  const now = Date.now();
  const jobs = Array.from({ length: opts.queued ?? 0 }, (_, i) => ({
    id: `j${i}`,
    state: JobState.JOB_STATE_QUEUED,
    createdAt: now - 60_000 + i,
    nextAttemptAt: 0,
    operation: { kind: "backup" },
  }));
  if (opts.backingOff) {
    // Created 2 h ago, failed, waits out its backoff for 10 more minutes; another's backoff ended 30 s ago.
    jobs.push({
      id: "r1",
      state: JobState.JOB_STATE_QUEUED,
      createdAt: now - 7_200_000,
      nextAttemptAt: now + 600_000,
      operation: { kind: "backup" },
    });
    jobs.push({
      id: "r2",
      state: JobState.JOB_STATE_QUEUED,
      createdAt: now - 7_200_000,
      nextAttemptAt: now - 30_000,
      operation: { kind: "backup" },
    });
  }
  const fail = () => {
    throw new Error("the catalog database did not answer within 2000 ms (injected)");
  };
  const catalog = {
    activeJobs: () => (opts.failingCatalog ? fail() : jobs),
    listAgents: () => (opts.failingCatalog ? fail() : [{ clusterName: "site-a" }, { clusterName: "site-b" }]),
    listBackups: () => (opts.failingCatalog ? fail() : { items: [], next: "" }),
    lastSuccessByVolume: () =>
      opts.failingCatalog ? fail() : [{ cluster: "site-a", pool: "rbd", namespace: "", image: "v1", at: now }],
  } as unknown as Catalog;
  const sessions = { all: () => (opts.leading ? [{ cluster: "site-a" }] : []) } as unknown as Sessions;
  const scheduler = (opts.events ?? { on: () => {} }) as unknown as Pick<Scheduler, "on">;
  // As the coordinator wires them: the verification metrics count their failed reads in the same counter.
  const collectErrors = collectErrorsCounter();
  return new CoordinatorMetrics("test", catalog, sessions, scheduler, {
    leading: () => opts.leading,
    extra: new VerifyMetrics(catalog, scheduler, () => opts.leading, collectErrors).all(),
    collectErrors,
  });
}

describe("coordinator gauges", () => {
  it("the leader: leading 1 and every known cluster's agents (0 where none is connected)", async () => {
    const text = await metrics({ leading: true }).registry.metrics();
    assert.equal(sample(text, "rbdbackup_coordinator_leading"), 1);
    assert.equal(sample(text, "rbdbackup_agents_connected", { cluster: "site-a" }), 1);
    assert.equal(sample(text, "rbdbackup_agents_connected", { cluster: "site-b" }), 0);
  });

  it("a standby: leading 0 and none of the leader's catalog gauges (they would double sums and page twice)", async () => {
    const text = await metrics({ leading: false, queued: 3 }).registry.metrics();
    assert.equal(sample(text, "rbdbackup_coordinator_leading"), 0);
    for (const name of [
      "rbdbackup_agents_connected",
      "rbdbackup_jobs",
      "rbdbackup_last_success_timestamp_seconds",
      "rbdbackup_oldest_queued_job_age_seconds", // no series, not 0 (a second "nothing stuck" beside the leader's)
    ])
      assert.equal(sample(text, name), null, name);
    const leader = await metrics({ leading: true, queued: 3 }).registry.metrics();
    assert.equal(sample(leader, "rbdbackup_last_success_timestamp_seconds", { image: "v1" }) !== null, true);
  });

  it("counters alerts take increase() of exist at 0 from the start, for every operation and result", async () => {
    const text = await metrics({ leading: true }).registry.metrics();
    for (const operation of ["backup", "restore", "delete", "flatten", "verify", "export", "import"]) {
      for (const result of ["succeeded", "failed", "cancelled"])
        assert.equal(sample(text, "rbdbackup_jobs_finished_total", { operation, result }), 0, `${operation} ${result}`);
      assert.equal(sample(text, "rbdbackup_lease_expirations_total", { operation }), 0, operation);
      for (const cause of ["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"])
        assert.equal(sample(text, "rbdbackup_job_retries_total", { operation, cause }), 0, `${operation} ${cause}`);
      assert.equal(sample(text, "rbdbackup_jobs", { operation, state: "queued" }), 0, operation);
    }
  });

  it("full backups the coordinator forced are counted by reason (the agent, given FULL, counts none); the agents' own are not counted twice", async () => {
    const events = new EventEmitter();
    const m = metrics({ leading: true, events });
    const before = await m.registry.metrics();
    assert.equal(sample(before, "rbdbackup_forced_full_backups_total", { reason: "corrupt_chain" }), 0);
    assert.equal(sample(before, "rbdbackup_forced_full_backups_total", { reason: "chain_grown" }), 0);
    const done = (forcedFull: string | undefined, agentReason = "") => ({
      id: "j",
      state: JobState.JOB_STATE_SUCCEEDED,
      createdAt: 0,
      finishedAt: 1,
      operation: { kind: "backup", mode: 0, maxSnapshots: 0, ...(forcedFull ? { forcedFull } : {}) },
      result: BackupResult.toJSON(BackupResult.fromPartial({ forcedFullReason: agentReason })),
    });
    events.emit("finished", done("backup b1 of chain img.backup.x is CORRUPT: a new chain starts with a full backup"));
    events.emit(
      "finished",
      done("the volume grew to 9 bytes: chain x's digest map … a new chain starts with a full backup"),
    );
    events.emit("finished", done("backup b1 of chain y is CORRUPT", "no earlier backup")); // the agent counted it
    events.emit("finished", done(undefined));
    const after = await m.registry.metrics();
    assert.equal(sample(after, "rbdbackup_forced_full_backups_total", { reason: "corrupt_chain" }), 1);
    assert.equal(sample(after, "rbdbackup_forced_full_backups_total", { reason: "chain_grown" }), 1);
  });

  it("the queue's age counts from when a job may run: a retry's backoff is not a stuck queue", async () => {
    const text = await metrics({ leading: true, backingOff: true }).registry.metrics();
    const age = sample(text, "rbdbackup_oldest_queued_job_age_seconds");
    assert.ok(age !== null && age >= 29 && age < 90, `age ${age} (the backoff that ended 30 s ago), not 2 h`);
  });

  it("a catalog read that fails drops its metrics for that scrape and counts; the scrape itself answers", async () => {
    const text = await metrics({ leading: true, failingCatalog: true }).registry.metrics();
    assert.equal(sample(text, "rbdbackup_coordinator_leading"), 1);
    assert.equal(sample(text, "rbdbackup_jobs"), null);
    assert.equal(sample(text, "rbdbackup_metrics_collect_errors_total", { metric: "rbdbackup_jobs" }), 1);
    assert.equal(sample(text, "rbdbackup_oldest_queued_job_age_seconds"), null, 'no series, not "0 s, nothing stuck"');
    assert.equal(
      sample(text, "rbdbackup_metrics_collect_errors_total", { metric: "rbdbackup_oldest_queued_job_age_seconds" }),
      1,
    );
    assert.equal(
      sample(text, "rbdbackup_metrics_collect_errors_total", { metric: "rbdbackup_last_success_timestamp_seconds" }),
      1,
    );
    assert.equal(sample(text, "rbdbackup_backups_corrupt"), null);
    assert.equal(sample(text, "rbdbackup_metrics_collect_errors_total", { metric: "rbdbackup_backups_corrupt" }), 1);
    const fine = await metrics({ leading: true }).registry.metrics();
    assert.equal(sample(fine, "rbdbackup_backups_corrupt", { location_cluster: "site-b" }), 0);
    assert.equal(
      sample(fine, "rbdbackup_metrics_collect_errors_total", { metric: "rbdbackup_backups_corrupt" }),
      0,
      "the series exists from the start, at 0",
    );
  });

  it("the oldest queued job's age with 200,000 queued jobs (a spread Math.min overflows the stack there)", async () => {
    const text = await metrics({ leading: true, queued: 200_000 }).registry.metrics();
    const age = sample(text, "rbdbackup_oldest_queued_job_age_seconds");
    assert.ok(age !== null && age >= 59 && age < 120, `age ${age}`);
    assert.equal(sample(text, "rbdbackup_jobs", { operation: "backup", state: "queued" }), 200_000);
  });
});
