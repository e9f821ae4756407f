/**
 * The scheduler without Ceph: an in-memory catalog, fake agent sessions that record the leases sent
 * to them, and a clock the test moves. Locks, limits, leases, retries with backoff, cancellation,
 * restart recovery and success, each asserted on the catalog's state and on the messages agents got.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import { PARTLY_OVERWRITTEN } from "../../../src/common/outcome-words";
import { FENCE_SECONDS, RECONNECT_GRACE_MS } from "../../../src/coordinator/scheduler/config";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { jobView } from "../../../src/coordinator/views";
import { DeleteBackupDataResult, RestoreResult } from "../../../src/gen/rbdbackup/v1/agent";
import { BackupStatus, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { JobOutcome } from "../../../src/gen/rbdbackup/v1/session";
import type { FakeAgentSession } from "../../helpers/fake-agent";
import { until } from "../../helpers/wait";
import { backupResult, Harness, vol } from "./harness";

const { JOB_STATE_QUEUED: QUEUED, JOB_STATE_RUNNING: RUNNING } = JobState;
const { JOB_STATE_SUCCEEDED: SUCCEEDED, JOB_STATE_FAILED: FAILED, JOB_STATE_CANCELLED: CANCELLED } = JobState;

describe("scheduler", () => {
  let h: Harness;
  let a1: FakeAgentSession;
  let b1: FakeAgentSession;
  beforeEach(() => {
    h = new Harness();
    a1 = h.connect("a1", "a");
    b1 = h.connect("b1", "b");
  });
  afterEach(() => h.close());

  /** A backup of `image` made by a1 and its DELETE, leased to b1 (after the backup's snapshot sweep). */
  async function leasedDelete(image: string): Promise<{ backupId: string; deleteId: string }> {
    const made = h.queueBackup(vol(image));
    h.tick();
    await h.backupDone(a1, made);
    const d = h.queueDelete(made.backupId);
    await h.tickAfterSweep();
    return { backupId: made.backupId, deleteId: d.id };
  }

  describe("success", () => {
    it("a backup is leased to an agent of the source cluster, and its success makes the backup AVAILABLE", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      const lease = a1.lease(j.id);
      assert.equal(lease.attempt, 1);
      assert.equal(lease.ttlMs, h.cfg.leaseTtlMs);
      assert.equal(lease.operation?.$case, "backup");
      if (lease.operation?.$case !== "backup") return;
      assert.equal(lease.operation.value.destination?.address, b1.info.transferAddress);
      assert.equal(lease.operation.value.destinationPool, "backups");
      assert.equal(lease.operation.value.skipSourcePrune, true, "removals are the hygiene's, after the job");
      assert.equal(b1.leases().length, 0, "the destination's agent gets no lease");
      const running = h.job(j.id);
      assert.equal(running.state, RUNNING);
      assert.equal(running.agentId, "a1");
      assert.equal(running.lease?.expiresAt, h.t + h.cfg.leaseTtlMs);

      assert.equal(await h.backupDone(a1, j), true);
      const done = h.job(j.id);
      assert.equal(done.state, SUCCEEDED);
      assert.equal(done.lease, null);
      assert.equal(done.finishedAt, h.t);
      const b = h.backup(j.backupId);
      assert.equal(b.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
      assert.match(b.snapshot, new RegExp(`^backup\\.${b.id}\\.snap\\.`));
      assert.equal(b.completedAt?.getTime(), h.t);
      assert.equal(a1.jobs.size, 0);
    });

    it("the catalog failing while a lease is built (UNAVAILABLE) leaves the job queued for the next pass, not FAILED", async () => {
      const j = h.queueBackup(vol("v1"));
      const getBackup = h.catalog.getBackup.bind(h.catalog);
      // One read fails (a database blip); the catalog answers again at once.
      let failures = 1;
      h.catalog.getBackup = (id: string) => {
        if (failures-- > 0) throw new AppError(Status.UNAVAILABLE, "catalog database unreachable (fake)");
        return getBackup(id);
      };
      try {
        h.tick();
        assert.equal(h.job(j.id).state, QUEUED, "still queued");
        assert.equal(a1.leases().length, 0, "no lease sent");
        assert.equal(h.backup(j.backupId).status, BackupStatus.BACKUP_STATUS_CREATING, "the backup not FAILED");
        h.tick();
        assert.equal(h.job(j.id).state, RUNNING);
        assert.equal(a1.lease(j.id).attempt, 1);
      } finally {
        h.catalog.getBackup = getBackup;
      }
    });

    it("a restore runs on the backup's cluster and streams to an agent of the target's; a delete marks DELETED", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      await h.backupDone(a1, j);
      const r = h.queueRestore(j.backupId, vol("v1-restored"));
      h.tick();
      const op = b1.lease(r.id).operation;
      assert.equal(op?.$case, "restore");
      if (op?.$case !== "restore") return;
      assert.equal(op.value.targetAgent?.address, a1.info.transferAddress);
      assert.equal(op.value.snapshot, h.backup(j.backupId).snapshot);
      const restored = RestoreResult.fromPartial({ backupId: j.backupId, warnings: ["w"] });
      assert.equal(await h.restoreDone(b1, r, restored), true);
      assert.equal(h.job(r.id).state, SUCCEEDED);
      assert.deepEqual(h.job(r.id).warnings, ["w"]);

      const d = h.queueDelete(j.backupId);
      h.tick();
      assert.equal(b1.lease(d.id).operation?.$case, "delete");
      h.outcome(b1, d.id, Status.OK, "", {
        $case: "delete",
        value: DeleteBackupDataResult.fromPartial({}),
      });
      assert.equal(h.job(d.id).state, SUCCEEDED);
      assert.equal(h.backup(j.backupId).status, BackupStatus.BACKUP_STATUS_DELETED);
    });

    it("a DELETE that removed the backup's snapshot, then failed: the backup is DELETED, retried or cancelled — never AVAILABLE again", async () => {
      for (const cancel of [false, true]) {
        const { backupId, deleteId } = await leasedDelete(cancel ? "dc" : "df");
        const made = { backupId };
        const d = { id: deleteId };
        if (cancel) h.scheduler.cancel(h.job(d.id));
        const partial = DeleteBackupDataResult.fromPartial({ removedSnapshot: "backup.x.snap.1", warnings: [] });
        h.outcome(
          b1,
          d.id,
          Status.UNAVAILABLE,
          "snapshot removed, but the rest of the delete failed (retried): EBUSY",
          {
            $case: "delete",
            value: partial,
          },
        );
        const b = h.backup(made.backupId);
        assert.equal(b.status, BackupStatus.BACKUP_STATUS_DELETED, `cancel=${cancel}`);
        assert.match(b.warnings.join("\n"), /the delete did not finish: snapshot removed/);
        assert.match(b.error, /^delete unfinished: /, "another DeleteBackup may remove what is left");
        assert.equal(h.job(d.id).state, cancel ? CANCELLED : QUEUED, "a failure is retried");
      }
      // A success without its result is no success (the backup would stay DELETING for good): retried.
      const db = { id: (await leasedDelete("db")).deleteId };
      h.outcome(b1, db.id, Status.OK, "");
      assert.equal(h.job(db.id).state, QUEUED);
      assert.match(h.job(db.id).errorMessage, /reported a delete done without its result/);
      // A failure before anything was removed (no result): the backup is as it was.
      const kept = await leasedDelete("dk");
      const d = { id: kept.deleteId };
      h.outcome(b1, d.id, Status.FAILED_PRECONDITION, "backup has clones that depend on its snapshot");
      assert.equal(h.job(d.id).state, FAILED);
      assert.equal(h.backup(kept.backupId).status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    });

    it("a backup keeps the newest snapshot of every other chain of its volume", async () => {
      const elsewhere = h.queueBackup(vol("v1"), "c");
      h.connect("c1", "c");
      h.tick();
      await h.backupDone(a1, elsewhere);
      const j = h.queueBackup(vol("v1"), "b");
      await h.tickAfterSweep();
      const op = a1.lease(j.id).operation;
      assert.equal(op?.$case, "backup");
      if (op?.$case === "backup") assert.deepEqual(op.value.keepSnapshots, [h.backup(elsewhere.backupId).snapshot]);
    });
  });

  describe("a lease's write that answers UNAVAILABLE (PostgreSQL: abandoned at its deadline)", () => {
    for (const committed of [true, false]) {
      it(
        committed
          ? "committed all the same: the agent gets the lease, the attempt runs (not left to expire unrun)"
          : "not committed: the job stays queued and the next pass leases it, attempt 1",
        async () => {
          const j = h.queueBackup(vol("v1"));
          const update = h.catalog.updateJob.bind(h.catalog);
          let failed = false;
          h.catalog.updateJob = (x) => {
            if (!failed && x.id === j.id && x.state === RUNNING) {
              failed = true;
              if (committed) update(x);
              throw new AppError(Status.UNAVAILABLE, "the statement did not answer in time (fake)");
            }
            update(x);
          };
          try {
            h.tick();
          } finally {
            h.catalog.updateJob = update;
          }
          assert.ok(failed);
          if (committed) {
            assert.equal(h.job(j.id).state, RUNNING);
            assert.equal(a1.lease(j.id).token, h.job(j.id).lease?.token, "the agent holds the catalog's lease");
            return;
          }
          assert.equal(h.job(j.id).state, QUEUED);
          assert.equal(h.job(j.id).attempts, 0);
          h.tick();
          assert.equal(h.job(j.id).state, RUNNING);
          assert.equal(h.job(j.id).attempts, 1);
          assert.equal(a1.lease(j.id).token, h.job(j.id).lease?.token);
        },
      );
    }
  });

  describe("locks", () => {
    // "db#shared": a name that ends as a backup's shared lock does (an image name may hold "#").
    for (const name of ["v1", "db#shared"]) {
      it(`two jobs on one volume never run together; the second starts when the first ends (image "${name}")`, async () => {
        const first = h.queueBackup(vol(name));
        const second = h.queueBackup(vol(name));
        const other = h.queueBackup(vol("v2"));
        h.tick();
        assert.equal(h.job(first.id).state, RUNNING);
        assert.equal(h.job(other.id).state, RUNNING, "another volume is not blocked");
        const waiting = h.job(second.id);
        assert.equal(waiting.state, QUEUED);
        assert.equal(waiting.waitingReason, `waiting for job ${first.id}, which uses the same volume or backup`);
        h.tick();
        assert.equal(h.job(second.id).state, QUEUED, "ticking again changes nothing");
        await h.backupDone(a1, first);
        await h.tickAfterSweep();
        assert.equal(h.job(second.id).state, RUNNING);
      });
    }

    it("a backup's readers share it: two restores run at once; its DELETE waits for them, and a reader queued after the DELETE waits for it", async () => {
      const made = h.queueBackup(vol("v1"));
      h.tick();
      await h.backupDone(a1, made);
      const r1 = h.queueRestore(made.backupId, vol("r1"));
      const r2 = h.queueRestore(made.backupId, vol("r2"));
      h.tick();
      assert.equal(h.job(r1.id).state, RUNNING);
      assert.equal(h.job(r2.id).state, RUNNING, "a second volume made from the same backup at once");
      const d = h.queueDelete(made.backupId);
      const r3 = h.queueRestore(made.backupId, vol("r3"));
      h.tick();
      assert.equal(h.job(d.id).state, QUEUED);
      assert.equal(h.job(d.id).waitingReason, `waiting for job ${r1.id}, which uses the same volume or backup`);
      assert.equal(h.job(r3.id).state, QUEUED, "first come, first served: the DELETE came first");
      assert.equal(h.job(r3.id).waitingReason, `waiting for job ${d.id}, which uses the same volume or backup`);
    });

    it("a queued job waits for an earlier queued job holding the same lock (first come, first served)", async () => {
      const blocker = h.queueBackup(vol("v1"));
      h.tick();
      const earlier = h.queueBackup(vol("v1"));
      const later = h.queueBackup(vol("v1"));
      await h.backupDone(a1, blocker);
      await h.tickAfterSweep();
      assert.equal(h.job(earlier.id).state, RUNNING);
      assert.equal(
        h.job(later.id).waitingReason,
        `waiting for job ${earlier.id}, which uses the same volume or backup`,
      );
    });
  });

  describe("limits", () => {
    it("per cluster: a job uses a slot on each cluster it touches", async () => {
      h.close();
      h = new Harness({ perClusterLimit: 2 });
      a1 = h.connect("a1", "a", 10);
      b1 = h.connect("b1", "b", 10);
      const fromA = [h.queueBackup(vol("v1")), h.queueBackup(vol("v2"))];
      const fromB = h.queueBackup(vol("w1", "b"), "a");
      h.tick();
      for (const j of fromA) assert.equal(h.job(j.id).state, RUNNING);
      const w = h.job(fromB.id);
      assert.equal(w.state, QUEUED, "both clusters are full: a backup from b into a must wait");
      assert.equal(w.waitingReason, "cluster b already runs 2 jobs (its limit)");
      await h.backupDone(a1, fromA[0] as (typeof fromA)[0]);
      h.tick();
      assert.equal(h.job(fromB.id).state, RUNNING);
    });

    it("per agent: capacity bounds an agent's leases; the least busy agent is picked", async () => {
      h.close();
      h = new Harness();
      const x = h.connect("a-x", "a", 1);
      const y = h.connect("a-y", "a", 1);
      h.connect("b1", "b");
      const jobs = [h.queueBackup(vol("v1")), h.queueBackup(vol("v2")), h.queueBackup(vol("v3"))];
      h.tick();
      assert.equal(x.leases().length, 1);
      assert.equal(y.leases().length, 1);
      const third = h.job((jobs[2] as (typeof jobs)[0]).id);
      assert.equal(third.state, QUEUED);
      assert.equal(third.waitingReason, "every agent of cluster a is at its capacity");
      const viewed = h.scheduler.runningCounts(h.catalog.activeJobs());
      assert.equal(viewed.byAgent.get("a-x"), 1);
      assert.equal(viewed.byCluster.get("a"), 2);
    });

    it("a retry goes back to the last attempt's destination agent while it is connected, however busy (its hold, its cleanup); else the least busy", async () => {
      const b2 = h.connect("b2", "b");
      const destOf = (jobId: string) => {
        const op = a1.lease(jobId).operation;
        return op?.$case === "backup" ? op.value.destination?.address : undefined;
      };
      const j = h.queueBackup(vol("v1"));
      h.tick();
      const first = destOf(j.id);
      const [was, other] = first === b1.info.transferAddress ? [b1, b2] : [b2, b1];
      assert.equal(h.job(j.id).lastPeerAgent, was.info.agentId);
      // The last attempt's peer is now the busier of the two.
      was.jobs.add("some-other-job");
      was.jobs.add("yet-another-job");
      h.outcome(a1, j.id, Status.UNAVAILABLE, "the destination's stream was cut (fake)");
      assert.equal(h.job(j.id).state, QUEUED);
      h.advance(h.cfg.backoffMaxMs);
      h.tick();
      assert.equal(h.job(j.id).state, RUNNING);
      assert.equal(destOf(j.id), was.info.transferAddress, "back to the same destination agent");
      // Gone: the retry takes the other.
      h.outcome(a1, j.id, Status.UNAVAILABLE, "cut again (fake)");
      h.disconnect(was);
      h.advance(h.cfg.backoffMaxMs);
      h.tick();
      assert.equal(destOf(j.id), other.info.transferAddress, "the other agent of the cluster once it is gone");
      assert.equal(h.job(j.id).lastPeerAgent, other.info.agentId);
    });

    it("a job waiting for an agent of a cluster that never connects fails UNAVAILABLE after placementTimeoutMs, and its volume's later jobs run; one that gets its agent in time runs", async () => {
      const stuck = h.queueBackup(vol("v1"), "c"); // a DR site that is down
      const next = h.queueBackup(vol("v1")); // the same volume to a healthy site
      h.tick();
      assert.equal(h.job(stuck.id).waitingReason, "waiting for an agent of cluster c to connect");
      assert.match(h.job(next.id).waitingReason, /^waiting for job /);
      // Passes come at least every 30 s while leading.
      const pass = (ms: number) => {
        for (let left = ms; left > 0; left -= Math.min(left, 30_000)) {
          h.advance(Math.min(left, 30_000));
          h.tick();
        }
      };
      pass(h.cfg.placementTimeoutMs - 1);
      assert.equal(h.job(stuck.id).state, QUEUED, "not before its time");
      pass(1);
      const f = h.job(stuck.id);
      assert.equal(f.state, FAILED);
      assert.equal(f.errorCode, "UNAVAILABLE");
      assert.match(
        f.errorMessage,
        /^waiting for an agent of cluster c to connect: no such agent for 60 min \(scheduler\.placementTimeoutMs 3600000 ms\)/,
      );
      assert.equal(h.backup(stuck.backupId).status, BackupStatus.BACKUP_STATUS_FAILED);
      await h.tickAfterSweep(); // the failed backup's source snapshot sweep first
      assert.equal(h.job(next.id).state, RUNNING, "the later job of the volume runs");

      // An agent that comes within the time: the wait ends, and a later wait counts afresh.
      const late = h.queueBackup(vol("v2"), "c");
      h.tick();
      pass(h.cfg.placementTimeoutMs - 1000);
      h.connect("c1", "c");
      h.tick();
      assert.equal(h.job(late.id).state, RUNNING);

      // A gap in the passes (a restart, a standby's term): counted afresh, not failed on the first pass.
      h.disconnect(h.sessions.ofCluster("c")[0] as FakeAgentSession);
      const again = h.queueBackup(vol("v3"), "c");
      h.tick();
      h.advance(2 * h.cfg.placementTimeoutMs);
      h.tick();
      assert.equal(h.job(again.id).state, QUEUED, "a gap in the passes restarts the count");
      pass(h.cfg.placementTimeoutMs);
      assert.equal(h.job(again.id).state, FAILED);

      // The cluster's only agent shutting down, then gone: one wait for an agent of that cluster, counted
      // from its start (the reason's words changing does not restart it).
      const c2 = h.connect("c2", "c");
      c2.draining = true;
      const drained = h.queueBackup(vol("v4", "c")); // its volume on cluster c: an agent there runs it
      h.tick();
      assert.match(h.job(drained.id).waitingReason, /^every agent of cluster c is shutting down/);
      pass(h.cfg.placementTimeoutMs / 2);
      h.disconnect(c2);
      h.tick();
      assert.equal(h.job(drained.id).waitingReason, "waiting for an agent of cluster c to connect");
      pass(h.cfg.placementTimeoutMs / 2);
      assert.equal(h.job(drained.id).state, FAILED, "failed an hour after its wait began");
    });

    it("no agent of the source or of the peer cluster: the job waits, naming the cluster", async () => {
      const j = h.queueBackup(vol("v1"), "c");
      h.tick();
      assert.equal(h.job(j.id).waitingReason, "waiting for an agent of cluster c to connect");
      h.disconnect(a1);
      h.tick();
      assert.equal(h.job(j.id).waitingReason, "waiting for an agent of cluster a to connect");
      assert.equal(h.job(j.id).state, QUEUED);
    });
  });

  describe("leases and retries", () => {
    it("heartbeats renew a lease; a stale token is revoked", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      for (let i = 0; i < 4; i++) {
        h.advance(h.cfg.leaseTtlMs - 1);
        assert.deepEqual(h.scheduler.onHeartbeat(a1, [a1.held(j.id)]), []);
        h.tick();
        assert.equal(h.job(j.id).state, RUNNING, `renewed after ${i + 1} heartbeats`);
      }
      const stale = { jobId: j.id, attempt: 1, token: "not-the-token" };
      assert.deepEqual(h.scheduler.onHeartbeat(a1, [stale]), ["not-the-token"]);
    });

    it("expiry fails the attempt; retries back off base·2^(n-1); after maxAttempts the job is FAILED", async () => {
      const retries: string[] = [];
      h.scheduler.on("retry", (_j, cause) => retries.push(cause));
      const j = h.queueBackup(vol("v1"));
      h.tick();
      const tokens = [a1.lease(j.id).token];
      for (const attempt of [1, 2]) {
        h.advance(h.cfg.leaseTtlMs + 1);
        h.tick();
        const q = h.job(j.id);
        assert.equal(q.state, QUEUED, `attempt ${attempt} expired`);
        assert.equal(q.errorCode, "UNAVAILABLE");
        assert.match(q.errorMessage, /lease of attempt \d expired: agent a1 stopped reporting/);
        const backoff = h.cfg.backoffBaseMs * 2 ** (attempt - 1);
        assert.equal(q.nextAttemptAt, h.t + backoff);
        h.advance(backoff - 1);
        h.tick();
        assert.equal(h.job(j.id).state, QUEUED, "not before the backoff");
        assert.match(h.job(j.id).waitingReason, /^retrying after a failed attempt at /);
        h.advance(1);
        h.tick();
        const l = a1.lease(j.id);
        assert.equal(l.attempt, attempt + 1);
        tokens.push(l.token);
      }
      assert.equal(new Set(tokens).size, 3, "each attempt has its own token");
      // The agent, still connected, was told to stop each expired attempt (it may only be stalled).
      assert.deepEqual(
        a1
          .cancels()
          .filter((c) => c.jobId === j.id)
          .map((c) => c.token),
        tokens.slice(0, 2),
      );
      await h.backupDone(a1, h.job(j.id));
      assert.equal(h.job(j.id).state, SUCCEEDED);
      assert.deepEqual(retries, ["UNAVAILABLE", "UNAVAILABLE"]);
    });

    it("an agent shutting down: its refusal gives the attempt back, and new leases go to another agent", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      for (let i = 0; i < h.cfg.maxAttempts + 1; i++) {
        if (i > 0) {
          a1.draining = false; // as if it had not said so yet (its heartbeat comes every few seconds)
          h.advance(2 * h.cfg.backoffMaxMs);
          h.tick();
        }
        // Refused before any work, more times than the job has attempts: never FAILED for it.
        h.outcome(a1, j.id, Status.UNAVAILABLE, "agent a1 is shutting down", undefined, undefined, true);
        assert.equal(h.job(j.id).state, QUEUED, `refusal ${i + 1}`);
        assert.equal(a1.draining, true, "its refusal says it is shutting down");
      }
      // It said so (its refusal; Heartbeat.draining too): another agent of the cluster takes the job.
      const a2 = h.connect("a2", "a");
      h.advance(2 * h.cfg.backoffMaxMs);
      h.tick();
      const running = h.job(j.id);
      assert.equal(running.state, RUNNING, running.waitingReason);
      assert.equal(running.lease?.agentId, "a2");
      await h.backupDone(a2, running);
      assert.equal(h.job(j.id).state, SUCCEEDED);
      // With every agent of the cluster shutting down, the job waits, saying why.
      const next = h.queueBackup(vol("v2"));
      a2.draining = true;
      h.tick();
      assert.equal(h.job(next.id).state, QUEUED);
      assert.match(h.job(next.id).waitingReason, /every agent of cluster a is shutting down/);
    });

    it("the last attempt's expiry ends the job FAILED and its backup FAILED with the cause", async () => {
      const j = h.queueBackup(vol("v1"));
      for (let attempt = 1; attempt <= h.cfg.maxAttempts; attempt++) {
        h.advance(h.cfg.backoffMaxMs);
        h.tick();
        assert.equal(a1.lease(j.id).attempt, attempt);
        h.advance(h.cfg.leaseTtlMs + 1);
        h.tick();
      }
      const f = h.job(j.id);
      assert.equal(f.state, FAILED);
      assert.equal(f.attempts, 3);
      assert.equal(f.errorCode, "UNAVAILABLE");
      const b = h.backup(j.backupId);
      assert.equal(b.status, BackupStatus.BACKUP_STATUS_FAILED);
      assert.match(b.error, /^UNAVAILABLE: the lease of attempt 3 expired/);
    });

    it("the backoff is capped at backoffMaxMs and spread by the injected randomness", async () => {
      h.close();
      h = new Harness({ maxAttempts: 10, backoffBaseMs: 1_000, backoffMaxMs: 5_000 });
      a1 = h.connect("a1", "a");
      h.connect("b1", "b");
      h.rnd = 0.99;
      const j = h.queueBackup(vol("v1"));
      for (let i = 0; i < 5; i++) {
        h.advance(60_000);
        h.tick();
        h.outcome(a1, j.id, Status.UNAVAILABLE, "agent busy");
      }
      assert.equal(h.job(j.id).attempts, 5);
      assert.equal(h.job(j.id).nextAttemptAt, h.t + Math.round(5_000 * 1.49));
    });

    it("an agent of another cluster that presents a job's lease token is refused: not renewed, no outcome, the lease stays", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      const held = a1.held(j.id);
      const b1 = h.connect("b1-thief", "b");
      assert.deepEqual(h.scheduler.onHeartbeat(b1, [held]), [held.token], "revoked for it");
      const forged = JobOutcome.fromPartial({ jobId: j.id, token: held.token, code: Status.NOT_FOUND, message: "x" });
      assert.equal(h.scheduler.onOutcome(b1, forged), false);
      const now = h.job(j.id);
      assert.equal(now.state, RUNNING);
      assert.equal(now.lease?.agentId, "a1", "the lease did not change hands");
      assert.deepEqual(h.scheduler.onHeartbeat(a1, [held]), [], "its holder still renews it");
    });

    it("a stale outcome is ignored; an outcome that is not transient fails the job at once", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      const stale = JobOutcome.fromPartial({ jobId: j.id, token: "old", code: Status.OK });
      assert.equal(h.scheduler.onOutcome(a1, stale), false);
      assert.equal(h.job(j.id).state, RUNNING);
      h.outcome(a1, j.id, Status.NOT_FOUND, "image v1 not found");
      const f = h.job(j.id);
      assert.equal(f.state, FAILED);
      assert.equal(f.attempts, 1, "no retry for NOT_FOUND");
      assert.equal(f.errorCode, "NOT_FOUND");
      assert.equal(f.errorMessage, "image v1 not found");
    });

    for (const code of [Status.UNAVAILABLE, Status.ABORTED, Status.DEADLINE_EXCEEDED, Status.RESOURCE_EXHAUSTED]) {
      it(`${Status[code]} is transient: the job is queued for another attempt`, async () => {
        const j = h.queueBackup(vol("v1"));
        h.tick();
        h.outcome(a1, j.id, code, "try again");
        assert.equal(h.job(j.id).state, QUEUED);
      });
    }

    for (const code of [
      Status.INVALID_ARGUMENT,
      Status.FAILED_PRECONDITION,
      Status.DATA_LOSS,
      Status.PERMISSION_DENIED,
    ]) {
      it(`${Status[code]} is final: the job fails at once`, async () => {
        const j = h.queueBackup(vol("v1"));
        h.tick();
        h.outcome(a1, j.id, code, "no");
        assert.equal(h.job(j.id).state, FAILED);
      });
    }

    it("a gone agent's Ceph client is fenced by the next attempt", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      h.disconnect(a1);
      const a2 = h.connect("a2", "a");
      h.advance(h.cfg.leaseTtlMs + 1);
      h.tick();
      h.advance(h.cfg.backoffBaseMs);
      h.tick();
      const l = a2.lease(j.id);
      assert.equal(l.attempt, 2);
      assert.deepEqual(l.fenceClientAddrs, [a1.info.cephClientAddrs]);
      assert.equal(l.fenceSeconds, FENCE_SECONDS);
    });
  });

  describe("cancel", () => {
    it("a queued job is CANCELLED at once and its backup FAILED", async () => {
      const j = h.queueBackup(vol("v1"), "c");
      h.tick();
      h.scheduler.cancel(h.job(j.id));
      assert.equal(h.job(j.id).state, CANCELLED);
      assert.equal(h.backup(j.backupId).status, BackupStatus.BACKUP_STATUS_FAILED);
      assert.equal(h.backup(j.backupId).error, "cancelled");
      h.connect("c1", "c");
      h.tick();
      assert.equal(a1.leases().length, 0, "a cancelled job is never leased");
    });

    it("a restore cancelled between attempts: the target cluster's agents that serve discard_held are asked to undo its held transfer", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      await h.backupDone(a1, j);
      const asked: CallRequest[] = [];
      const a2 = h.connect("a2", "a", 4, ["discard_held"]);
      a2.answer = (req) => {
        asked.push(req);
        return { $case: "discardHeld", value: { done: ["the transfer into rbd/v1-restored was undone"] } };
      };
      const target = vol("v1-restored");
      const r = h.queueRestore(j.backupId, target);
      h.tick();
      h.outcome(b1, r.id, Status.UNAVAILABLE, "the destination went away"); // cut short: retried later
      assert.equal(h.job(r.id).state, QUEUED);
      h.scheduler.cancel(h.job(r.id));
      assert.equal(h.job(r.id).state, CANCELLED);
      await until(() => asked.length === 1, "the discard_held call");
      assert.deepEqual(asked[0], {
        $case: "discardHeld",
        value: {
          image: { pool: target.pool, namespace: target.namespace, image: target.image },
          backupId: j.backupId,
          jobId: r.id,
        },
      });
      // A job never attempted holds nothing: no call.
      const fresh = h.queueRestore(j.backupId, vol("v1-other"));
      h.scheduler.cancel(h.job(fresh.id));
      assert.equal(asked.length, 1);
    });

    it("a restore that succeeds after a retry: the target cluster's agents that serve end_job are told (its earlier attempt's capability void there); one that succeeds at once tells nobody", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      await h.backupDone(a1, j);
      const asked: CallRequest[] = [];
      const a2 = h.connect("a2", "a", 4, ["discard_held", "end_job"]);
      a2.answer = (req) => {
        asked.push(req);
        return req?.$case === "endJob" ? { $case: "endJob", value: {} } : { $case: "discardHeld", value: { done: [] } };
      };
      const leasedOf = (id: string) => () => [b1, a1, a2].find((s) => s.leases().some((l) => l.jobId === id));
      // At once: no call.
      const once = h.queueRestore(j.backupId, vol("v1-once"));
      h.tick();
      const runner = leasedOf(once.id)();
      assert.ok(runner);
      await h.restoreDone(runner, h.job(once.id));
      assert.equal(h.job(once.id).state, JobState.JOB_STATE_SUCCEEDED);
      // After a retry: end_job to the agents of the target's cluster that serve it.
      const r = h.queueRestore(j.backupId, vol("v1-again"));
      h.tick();
      const first = leasedOf(r.id)();
      assert.ok(first, "the restore was leased");
      h.outcome(first, r.id, Status.UNAVAILABLE, "the destination went away"); // cut short: retried
      h.advance(60_000);
      h.tick();
      const second = leasedOf(r.id)();
      assert.ok(second, "the retry was leased");
      await h.restoreDone(second, h.job(r.id));
      assert.equal(h.job(r.id).state, JobState.JOB_STATE_SUCCEEDED);
      await until(() => asked.length === 1, "the end_job call");
      assert.deepEqual(asked, [{ $case: "endJob", value: { jobId: r.id } }], "one call, for the retried job only");
    });

    it("a restore that fails for good after an attempt was cut short: its held transfer is discarded too (no attempt will resume it)", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      await h.backupDone(a1, j);
      const asked: CallRequest[] = [];
      const a2 = h.connect("a2", "a", 4, ["discard_held"]);
      a2.answer = (req) => {
        asked.push(req);
        return { $case: "discardHeld", value: { done: ["rbd/v1-new removed"] } };
      };
      const target = vol("v1-new");
      const r = h.queueRestore(j.backupId, target);
      h.tick();
      const leased = () => [b1, a1, a2].find((s) => s.leases().some((l) => l.jobId === r.id));
      const first = leased();
      assert.ok(first, "the restore was leased");
      h.outcome(first, r.id, Status.UNAVAILABLE, "the destination went away"); // cut short: held, retried
      assert.equal(h.job(r.id).state, QUEUED);
      assert.equal(asked.length, 0, "held for the retry");
      h.advance(60_000);
      h.tick();
      const second = leased();
      assert.ok(second, "the retry was leased");
      h.outcome(second, r.id, Status.FAILED_PRECONDITION, "the source's backup is gone"); // final
      assert.equal(h.job(r.id).state, JobState.JOB_STATE_FAILED);
      await until(() => asked.length === 1, "the discard_held call");
      assert.deepEqual(asked[0], {
        $case: "discardHeld",
        value: {
          image: { pool: target.pool, namespace: target.namespace, image: target.image },
          backupId: j.backupId,
          jobId: r.id,
        },
      });
    });

    it("a restore whose earlier attempt partly overwrote its target, failed by a later one that changed nothing: its message still says the target was overwritten", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      await h.backupDone(a1, j);
      const r = h.queueRestore(j.backupId, vol("v1-orig"));
      h.tick();
      const leased = () => [b1, a1].find((s) => s.leases().some((l) => l.jobId === r.id));
      const first = leased();
      assert.ok(first, "the restore was leased");
      h.outcome(
        first,
        r.id,
        Status.UNAVAILABLE,
        `the source went away (the image rbd/v1-orig ${PARTLY_OVERWRITTEN}; restore it again)`,
      );
      assert.equal(h.job(r.id).state, QUEUED);
      h.advance(60_000);
      h.tick();
      const second = leased();
      assert.ok(second, "the retry was leased");
      const refused =
        "image rbd/v1-orig is in use (watched by client.4107 at 10.0.0.7:0/1): … this attempt changed nothing";
      h.outcome(second, r.id, Status.FAILED_PRECONDITION, refused);
      const x = h.job(r.id);
      assert.equal(x.state, JobState.JOB_STATE_FAILED);
      assert.equal(
        x.errorMessage,
        `${refused} (its target ${PARTLY_OVERWRITTEN} by an attempt of this job: restore or fail back again)`,
      );
      // A job none of whose attempts overwrote anything keeps its message as it is.
      const other = h.queueRestore(j.backupId, vol("v1-x"));
      h.tick();
      const only = [b1, a1].find((s) => s.leases().some((l) => l.jobId === other.id));
      assert.ok(only);
      h.outcome(only, other.id, Status.FAILED_PRECONDITION, refused);
      assert.equal(h.job(other.id).errorMessage, refused);
    });

    it("a running job is asked to stop and ends CANCELLED when its agent reports", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      const r = h.scheduler.cancel(h.job(j.id));
      assert.equal(r.state, RUNNING);
      assert.equal(r.cancelRequested, true);
      assert.deepEqual(
        a1.cancels().map((c) => [c.jobId, c.token]),
        [[j.id, a1.lease(j.id).token]],
      );
      h.scheduler.cancel(h.job(j.id));
      assert.equal(a1.cancels().length, 1, "asked once");
      h.outcome(a1, j.id, Status.ABORTED, "stopped");
      const c = h.job(j.id);
      assert.equal(c.state, CANCELLED, "a failure after a cancel is not retried");
      assert.equal(c.errorCode, "CANCELLED");
    });

    it("an attempt its agent reports CANCELLED without a CancelJob (a shutdown, a peer's reset) is retried, not ended CANCELLED", () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      h.outcome(a1, j.id, Status.CANCELLED, "stream reset by peer (NGHTTP2_CANCEL)");
      const x = h.job(j.id);
      assert.equal(x.state, QUEUED);
      assert.equal(x.errorCode, "ABORTED");
      assert.match(x.errorMessage, /called off on the agents' side: stream reset by peer/);
      assert.equal(h.backup(j.backupId).status, BackupStatus.BACKUP_STATUS_CREATING);
    });

    it("a cancel that came while the agent's report was confirmed, whose confirmation then timed out: retried (the data may be there), not CANCELLED", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      const tok = a1.lease(j.id).token;
      h.scheduler.onProgress(a1, {
        jobId: j.id,
        token: tok,
        phase: "transfer",
        bytesDone: 1 << 20,
        bytesTotal: 1 << 20,
        bytesTransferred: 900_000,
      });
      const r = backupResult(j.backupId);
      h.commit(j, r);
      h.disconnect(b1); // the destination's agent away: the confirmation waits
      h.outcome(a1, j.id, Status.OK, "", { $case: "backup", value: r });
      await h.settle();
      const all = () => jobView(h.job(j.id), h.catalog, h.scheduler.progress.get(j.id)).bytesTransferredAllAttempts;
      assert.equal(all(), 900_000, "the bytes sent do not drop while confirming");
      h.scheduler.cancel(h.job(j.id));
      assert.equal(h.job(j.id).cancelRequested, true);
      h.advance(h.cfg.confirmTimeoutMs + 1);
      h.tick();
      await h.settle();
      const x = h.job(j.id);
      assert.equal(x.state, QUEUED, `${x.errorCode}: ${x.errorMessage}`);
      assert.equal(x.errorCode, "DEADLINE_EXCEEDED");
      assert.equal(x.cancelRequested, false, "the cancel came too late: no longer carried out");
      assert.equal(h.backup(j.backupId).status, BackupStatus.BACKUP_STATUS_CREATING, "not FAILED: it may exist");
      assert.equal(all(), 900_000, "the failed confirmation's attempt still counts its bytes");
    });

    it("a backup cancelled between attempts, and a restore cut short before its cancel reached it: discard_held asked", async () => {
      const asked: CallRequest[] = [];
      const b2 = h.connect("b2", "b", 4, ["discard_held"]);
      b2.answer = (req) => {
        asked.push(req);
        return { $case: "discardHeld", value: { done: [] } };
      };
      // The backup's image is its agent's choice: any image of the location's pool held for the backup.
      const j = h.queueBackup(vol("v1"));
      h.tick();
      h.outcome(a1, j.id, Status.UNAVAILABLE, "the destination went away"); // cut short: held, retried later
      h.scheduler.cancel(h.job(j.id));
      assert.equal(h.job(j.id).state, CANCELLED);
      await until(() => asked.length === 1, "the backup's discard_held call");
      const loc = h.backup(j.backupId).location;
      assert.ok(loc);
      assert.deepEqual(asked[0], {
        $case: "discardHeld",
        value: { image: { pool: loc.pool, namespace: loc.namespace, image: "" }, backupId: j.backupId, jobId: j.id },
      });

      // A restore running when cancelled, whose attempt had been cut short before the cancel reached it.
      const done = h.queueBackup(vol("v2"));
      h.tick();
      await h.backupDone(a1, done);
      const a2 = h.connect("a2", "a", 4, ["discard_held"]);
      a2.answer = (req) => {
        asked.push(req);
        return { $case: "discardHeld", value: { done: [] } };
      };
      const target = vol("v2-restored");
      const r = h.queueRestore(done.backupId, target);
      h.tick();
      const runner = [b1, b2].find((s) => s.leases().some((l) => l.jobId === r.id));
      assert.ok(runner, "the restore was leased");
      h.scheduler.cancel(h.job(r.id));
      h.outcome(runner, r.id, Status.UNAVAILABLE, "cut short before the cancel came");
      assert.equal(h.job(r.id).state, CANCELLED);
      await until(() => asked.length === 2, "the restore's discard_held call");
      assert.deepEqual(asked[1], {
        $case: "discardHeld",
        value: {
          image: { pool: target.pool, namespace: target.namespace, image: target.image },
          backupId: done.backupId,
          jobId: r.id,
        },
      });
    });

    it("a delete whose attempts ended without the agent's word (leases expired) leaves its backup DELETED, unfinished — not AVAILABLE on a guess", async () => {
      const { backupId, deleteId } = await leasedDelete("dx");
      for (let attempt = 1; attempt <= h.cfg.maxAttempts; attempt++) {
        if (attempt > 1) {
          h.advance(h.cfg.backoffMaxMs * 2);
          h.tick();
        }
        assert.equal(b1.lease(deleteId).attempt, attempt);
        h.advance(h.cfg.leaseTtlMs + 1);
        h.tick();
      }
      assert.equal(h.job(deleteId).state, FAILED);
      const b = h.backup(backupId);
      assert.equal(b.status, BackupStatus.BACKUP_STATUS_DELETED, "its snapshot may be gone");
      assert.match(b.error, /^delete unfinished: .*ended without its agent's word/);
    });

    it("a FAILED backup's delete (what its cut-short attempt may have left on the destination): FAILED again if it fails, DELETED once done", async () => {
      for (const done of [false, true]) {
        const made = h.queueBackup(vol(done ? "fd" : "ff"));
        h.tick();
        h.outcome(a1, made.id, Status.PERMISSION_DENIED, "no");
        assert.equal(h.backup(made.backupId).status, BackupStatus.BACKUP_STATUS_FAILED);
        const d = h.queueDelete(made.backupId);
        assert.deepEqual(h.job(d.id).operation, { kind: "delete", failedBackup: true });
        await h.tickAfterSweep();
        assert.equal(b1.lease(d.id).operation?.$case, "delete");
        if (done) {
          h.outcome(b1, d.id, Status.OK, "", { $case: "delete", value: DeleteBackupDataResult.fromPartial({}) });
          assert.equal(h.job(d.id).state, SUCCEEDED);
          assert.equal(h.backup(made.backupId).status, BackupStatus.BACKUP_STATUS_DELETED);
        } else {
          h.outcome(b1, d.id, Status.PERMISSION_DENIED, "no");
          assert.equal(h.job(d.id).state, FAILED);
          assert.equal(
            h.backup(made.backupId).status,
            BackupStatus.BACKUP_STATUS_FAILED,
            "not AVAILABLE: it never was",
          );
        }
      }
    });

    it("a delete that fails leaves its backup AVAILABLE again", async () => {
      const j = await leasedDelete("v1");
      const d = { id: j.deleteId };
      h.outcome(b1, d.id, Status.PERMISSION_DENIED, "no");
      assert.equal(h.job(d.id).state, FAILED);
      assert.equal(h.backup(j.backupId).status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    });
  });

  describe("restart recovery", () => {
    /** A running job whose lease expired while the coordinator was down, and a fresh scheduler. */
    function restarted(): { jobId: string; held: ReturnType<FakeAgentSession["held"]> } {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      const held = a1.held(j.id);
      h.scheduler.stop();
      h.disconnect(a1);
      h.advance(10 * h.cfg.leaseTtlMs);
      h.scheduler = h.newScheduler();
      h.scheduler.start();
      return { jobId: j.id, held };
    }

    it("start() gives running jobs one lease time and the reconnect grace; the agent reconnecting with its lease keeps it", async () => {
      const { jobId, held } = restarted();
      assert.equal(h.job(jobId).lease?.expiresAt, h.t + h.cfg.leaseTtlMs + RECONNECT_GRACE_MS);
      h.advance(h.cfg.leaseTtlMs + RECONNECT_GRACE_MS - 1);
      h.tick();
      assert.equal(h.job(jobId).state, RUNNING);
      const back = h.connect("a1", "a");
      assert.deepEqual(h.scheduler.onRegister(back, [held], back.info.cephClientAddrs), []);
      assert.equal(h.job(jobId).lease?.expiresAt, h.t + h.cfg.leaseTtlMs);
      h.advance(h.cfg.leaseTtlMs - 1);
      h.tick();
      assert.equal(h.job(jobId).state, RUNNING);
      assert.equal(h.job(jobId).attempts, 1);
      const result = backupResult(h.job(jobId).backupId);
      h.commit(h.job(jobId), result);
      const outcome = {
        jobId,
        token: held.token,
        code: Status.OK,
        message: "",
        result: { $case: "backup" as const, value: result },
        sourceSnapshots: [],
        sourceSnapshotsListed: false,
        refused: false,
      };
      assert.equal(h.scheduler.onOutcome(back, outcome), true);
      await h.settle();
      assert.equal(h.job(jobId).state, SUCCEEDED);
    });

    it("an unclaimed lease expires one lease time and the reconnect grace after the restart, its agent fenced — not after one lease time (an agent slow to reach a new leader is alive)", async () => {
      const { jobId } = restarted();
      h.advance(h.cfg.leaseTtlMs + 1);
      h.tick();
      assert.equal(h.job(jobId).state, RUNNING);
      assert.deepEqual(h.job(jobId).fence ?? [], []);
      h.advance(RECONNECT_GRACE_MS);
      h.tick();
      const j = h.job(jobId);
      assert.equal(j.state, QUEUED);
      assert.match(j.errorMessage, /lease of attempt 1 expired/);
      assert.deepEqual(j.fence, [a1.info.cephClientAddrs]);
    });

    it("an agent that restarted and no longer lists its lease loses the attempt at once, fenced", async () => {
      const j = h.queueBackup(vol("v1"));
      h.tick();
      const reborn = h.connect("a1", "a");
      reborn.info.cephClientAddrs = "v2:127.0.0.1:6801/new";
      const revoked = h.scheduler.onRegister(reborn, [{ jobId: j.id, attempt: 1, token: "other" }], "v2:old");
      assert.deepEqual(revoked, ["other"]);
      const q = h.job(j.id);
      assert.equal(q.state, QUEUED);
      assert.match(q.errorMessage, /agent a1 restarted and lost attempt 1/);
      assert.deepEqual(q.fence, ["v2:old"]);
    });

    it("a cancel requested while the agent was away is sent again when it claims the lease", async () => {
      const { jobId, held } = restarted();
      h.scheduler.cancel(h.job(jobId));
      const back = h.connect("a1", "a");
      h.scheduler.onRegister(back, [held], back.info.cephClientAddrs);
      assert.deepEqual(back.cancels(), [{ jobId, token: held.token, reason: "cancelled by a user" }]);
    });
  });
});
