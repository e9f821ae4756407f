/**
 * The catalog's in-memory index of active jobs (catalog/active-jobs.ts) answers activeJobs() as the
 * rows do (activeJobs(), and activeJob(id) per job): through inserts, state changes, jobs ending, a rolled-back transaction (nested too), a
 * catalog opened again on the same file, and records handed out that their callers change.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { ActiveJobIndex, type ActiveJobRow } from "../../../src/coordinator/catalog/active-jobs";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import { newJobRecord } from "../../../src/coordinator/jobs/new-job";
import type { JobRecord } from "../../../src/coordinator/model";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { rolledBack } from "../../helpers/rollback";
import { vol } from "./harness";

const T = Date.UTC(2026, 11, 1);

function job(image: string, createdAt: number): JobRecord {
  return newJobRecord(
    {
      kind: JobKind.JOB_KIND_BACKUP,
      backupId: `b-${image}`,
      volume: vol(image),
      operation: { kind: "backup", mode: BackupMode.BACKUP_MODE_AUTO, maxSnapshots: 0 },
      idempotencyKey: "",
      fingerprint: "f",
      locks: [`vol:a/rbd//${image}`],
      execCluster: "a",
      peerCluster: "b",
    },
    5,
    createdAt,
  );
}

/** QUEUED and RUNNING jobs as the rows hold them, oldest first (created_at, id). */
function fromRows(c: SqliteCatalog): JobRecord[] {
  const of = (state: JobState) => c.listJobs({ state }, 1000, "").items;
  return [...of(JobState.JOB_STATE_QUEUED), ...of(JobState.JOB_STATE_RUNNING)].sort(
    (a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1),
  );
}

function assertInStep(c: SqliteCatalog, what: string): void {
  assert.deepEqual(c.activeJobs(), fromRows(c), what);
  // activeJob(id): the job's row when it is QUEUED or RUNNING, nothing once it ended.
  for (const j of c.listJobs({}, 1000, "").items) {
    const active = j.state === JobState.JOB_STATE_QUEUED || j.state === JobState.JOB_STATE_RUNNING;
    assert.deepEqual(c.activeJob(j.id), active ? j : undefined, `${what}: activeJob(${j.id})`);
  }
  assert.equal(c.activeJob("no-such-job"), undefined);
}

describe("the catalog's index of active jobs", () => {
  it("backupInUse: a job's own backup and the backups it locks (an export's from-backup, an import's parent), loaded or put; a volume name that looks like a lock is not one", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-active-jobs-"));
    const file = path.join(dir, "catalog.sqlite");
    const P = "0b0e2a4c-0000-4000-8000-00000000000a";
    const Q = "0b0e2a4c-0000-4000-8000-00000000000b";
    const R = "0b0e2a4c-0000-4000-8000-00000000000c";
    try {
      let c = new SqliteCatalog(file);
      const exp = job("v1", T);
      exp.locks = [`backup:${exp.backupId}#shared`, `backup:${P}#shared`];
      // An image whose name ends like a lock: inside a string, its quote is escaped.
      const odd = job(`x"backup:${R}`, T + 1);
      odd.locks = [`vol:a/rbd//x"backup:${R}`];
      const imp = job("v2", T + 2);
      imp.locks = [`vol:a/rbd//v2`, `backup:${Q}`];
      for (const j of [exp, odd, imp]) c.insertJob(j);
      const inUse = (cat: SqliteCatalog) => [exp.backupId, P, Q, R, "b-none"].map((id) => cat.backupInUse(id));
      assert.deepEqual(inUse(c), [true, true, true, false, false], "put");
      c.close();
      c = new SqliteCatalog(file);
      assert.deepEqual(inUse(c), [true, true, true, false, false], "loaded from the rows");
      imp.state = JobState.JOB_STATE_SUCCEEDED;
      c.updateJob(imp);
      exp.locks = [`backup:${exp.backupId}#shared`];
      c.updateJob(exp);
      assert.deepEqual(inUse(c), [true, false, false, false, false], "ended, and a lock dropped");
      c.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("answers as the rows do through inserts, updates, ends and rolled-back transactions", () => {
    const c = new SqliteCatalog(":memory:");
    try {
      assert.deepEqual(c.activeJobs(), []);
      // Same creation time for two: the id orders them.
      const js = [job("v1", T + 2000), job("v2", T), job("v3", T + 1000), job("v4", T + 1000)];
      for (const j of js) c.insertJob(j);
      assertInStep(c, "after inserts");
      assert.equal(c.activeJobs().length, 4);

      const [j1, j2, j3, j4] = js as [JobRecord, JobRecord, JobRecord, JobRecord];
      j1.state = JobState.JOB_STATE_RUNNING;
      j1.waitingReason = "";
      c.updateJob(j1);
      assertInStep(c, "after a job starts");
      assert.equal(c.activeJobs().find((j) => j.id === j1.id)?.state, JobState.JOB_STATE_RUNNING);

      j2.state = JobState.JOB_STATE_SUCCEEDED;
      c.updateJob(j2);
      assertInStep(c, "after a job ends");
      assert.ok(!c.activeJobs().some((j) => j.id === j2.id));

      // A rolled-back transaction: its writes are undone in the index too.
      rolledBack(c, () => {
        j3.state = JobState.JOB_STATE_FAILED;
        c.updateJob(j3);
        c.insertJob(job("v5", T + 5000));
        assert.equal(c.activeJobs().length, 3, "seen inside the transaction");
      });
      assertInStep(c, "after a rollback");
      assert.equal(c.activeJobs().length, 3);
      assert.equal(c.activeJobs().find((j) => j.id === j3.id)?.state, JobState.JOB_STATE_QUEUED);

      // A nested transaction rolled back to its savepoint; the outer one commits.
      c.transaction(() => {
        j4.waitingReason = "outer";
        c.updateJob(j4);
        rolledBack(c, () => {
          const j = job("v6", T + 6000);
          c.insertJob(j);
        });
        assertInStep(c, "inside the outer transaction, after the inner rollback");
        c.insertJob(job("v7", T + 7000));
      });
      assertInStep(c, "after the outer commit");
      assert.equal(c.activeJobs().length, 4);
      assert.equal(c.activeJobs().find((j) => j.id === j4.id)?.waitingReason, "outer");

      // A taken idempotency key fails the insert: nothing enters the index.
      const keyed = { ...job("v8", T + 8000), idempotencyKey: "k" };
      c.insertJob(keyed);
      assert.throws(() => c.insertJob({ ...job("v9", T + 9000), idempotencyKey: "k" }), /UNIQUE/);
      assertInStep(c, "after a refused insert");
      // An update of a job that is not there fails: nothing enters the index.
      assert.throws(() => c.updateJob(job("v10", T)), /not in the catalog/);
      assertInStep(c, "after a refused update");
    } finally {
      c.close();
    }
  });

  it("hands out fresh records: a caller's change is not seen until it is written", () => {
    const c = new SqliteCatalog(":memory:");
    try {
      const j = job("v1", T);
      c.insertJob(j);
      j.waitingReason = "changed after the write";
      const got = c.activeJobs()[0] as JobRecord;
      assert.equal(got.waitingReason, "queued");
      got.waitingReason = "changed by a reader";
      got.locks.push("x");
      assert.equal(c.activeJobs()[0]?.waitingReason, "queued");
      assert.deepEqual(c.activeJobs()[0]?.locks, ["vol:a/rbd//v1"]);
      c.updateJob(got);
      assert.equal(c.activeJobs()[0]?.waitingReason, "changed by a reader");
      assertInStep(c, "after the write");
    } finally {
      c.close();
    }
  });

  it("is loaded from the rows when a catalog opens an existing file", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-active-jobs-"));
    const file = path.join(dir, "catalog.sqlite");
    try {
      let c = new SqliteCatalog(file);
      const js = [job("v1", T + 1000), job("v2", T), job("v3", T + 2000)];
      for (const j of js) c.insertJob(j);
      const ended = js[2] as JobRecord;
      ended.state = JobState.JOB_STATE_CANCELLED;
      c.updateJob(ended);
      const before = c.activeJobs();
      c.close();
      c = new SqliteCatalog(file);
      try {
        assert.deepEqual(c.activeJobs(), before);
        assert.deepEqual(
          c.activeJobs().map((j) => j.volume.image),
          ["v2", "v1"],
        );
        assertInStep(c, "after reopening");
      } finally {
        c.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("loads once, keeps an update's place and creation time, and loads again after invalidate()", () => {
    let loads = 0;
    const rows: ActiveJobRow[] = [];
    const idx = new ActiveJobIndex(() => {
      loads++;
      return rows.map((r) => ({ ...r }));
    });
    const a = job("a", T + 1000);
    const b = job("b", T);
    idx.put(a, JSON.stringify(a)); // not loaded yet: ignored (the load reads the rows)
    assert.equal(loads, 0);
    rows.push({ id: a.id, createdAt: a.createdAt, backupId: a.backupId, doc: JSON.stringify(a) });
    assert.equal(idx.size, 1);
    assert.equal(loads, 1);
    idx.put(b, JSON.stringify(b));
    assert.deepEqual(
      idx.all().map((j) => j.id),
      [b.id, a.id],
    );
    // An update with another createdAt in its document keeps the row's place (the column is not updated).
    const moved = { ...a, createdAt: T - 5000, waitingReason: "w" };
    idx.put(moved, JSON.stringify(moved));
    assert.deepEqual(
      idx.all().map((j) => [j.id, j.waitingReason]),
      [
        [b.id, "queued"],
        [a.id, "w"],
      ],
    );
    idx.put({ ...b, state: JobState.JOB_STATE_SUCCEEDED }, "{}");
    assert.deepEqual(
      idx.all().map((j) => j.id),
      [a.id],
    );
    assert.equal(loads, 1);
    idx.invalidate();
    assert.equal(idx.all().length, 1);
    assert.equal(loads, 2);
  });
});
