/**
 * PostgreSQL only: the leader lease and fencing with two PgCatalog instances (two coordinators) on one
 * database. Grant, renewal (same token), nobody else while it lives, expiry and takeover (token + 1),
 * release; a deposed leader's writes throw FencedError and change nothing, in or out of a transaction;
 * a write racing a takeover waits for the takeover's row lock and is then refused; a catalog that
 * never contended writes unfenced.
 */
import assert from "node:assert/strict";
import { after, afterEach, beforeEach, describe, it } from "node:test";
import { Client } from "pg";
import { Status } from "../../../src/common/errors";
import { FencedError } from "../../../src/coordinator/catalog/leader-lease";
import { PgCatalog } from "../../../src/coordinator/catalog/pg/catalog";
import { FENCE_SQL } from "../../../src/coordinator/catalog/pg/protocol";
import { SCHEMA_VERSION } from "../../../src/coordinator/catalog/pg/schema";
import { BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";
import { agent, backup, job, policy, T0, vol } from "../../helpers/catalog-cases/records";
import { freshDatabase, pgSkip, type TestDatabase } from "../../helpers/postgres";
import { waitFor } from "../../helpers/wait";

const A = { id: "coord-a", address: "127.0.0.1:7301", instance: "a-1" };

/**
 * Another session holding the lease row: `statements` (locking it) in a transaction the server keeps
 * open until a catalog's backend (application rbdbackup-coordinator) is seen waiting for a lock, then
 * commits — or, when none waits within 10 s, fails the transaction, and so the test (`done` rejects):
 * the race a test names must really have happened. Resolves once the transaction holds the row.
 */
async function holdUntilWaited(url: string, statements: string): Promise<{ client: Client; done: Promise<unknown> }> {
  const client = new Client({ connectionString: url });
  await client.connect();
  const done = client.query(`BEGIN; ${statements}; DO $$ /* rbdbackup-test-holder */ BEGIN
    FOR i IN 1..1000 LOOP
      PERFORM pg_stat_clear_snapshot(); -- else its rows are read once per transaction (wait events are live)
      IF EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
        AND application_name = 'rbdbackup-coordinator' AND wait_event_type = 'Lock') THEN RETURN; END IF;
      PERFORM pg_sleep(0.01);
    END LOOP;
    RAISE EXCEPTION 'no catalog call waited for the row this transaction holds';
  END $$; COMMIT;`);
  // Handled at once: a failure is the test's, through `done`, not an unhandled rejection meanwhile.
  done.catch(() => {});
  const watcher = new Client({ connectionString: url });
  await watcher.connect();
  try {
    await waitFor(
      async () =>
        (
          await watcher.query(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%rbdbackup-test-holder%' AND pid <> pg_backend_pid() AND state = 'active'",
          )
        ).rowCount,
      { what: "the other session to hold the lease row", timeoutMs: 10_000, intervalMs: 20 },
    );
  } finally {
    await watcher.end();
  }
  return { client, done };
}
const B = { id: "coord-b", address: "127.0.0.1:7302", instance: "b-1" };

describe("PostgreSQL leader lease and fencing", { skip: pgSkip }, () => {
  let db: TestDatabase | undefined;
  const open: PgCatalog[] = [];
  const catalog = () => {
    if (!db) throw new Error("no test database");
    const c = new PgCatalog({ url: db.url, statementTimeoutMs: 10_000 });
    open.push(c);
    return c;
  };
  beforeEach(async () => {
    db = await freshDatabase();
  });
  afterEach(async () => {
    for (const c of open.splice(0)) c.close();
    await db?.drop();
    db = undefined;
  });
  after(() => {
    for (const c of open.splice(0)) c.close();
  });

  it("a coordinator running when a newer one migrates the schema never leads on it: its renewal fails, once said, and a standby takes over", async () => {
    const a = catalog();
    const b = catalog();
    const granted = a.leadership.tryAcquire(A, 300);
    assert.equal(granted.token, 1);
    const q = new Client({ connectionString: db?.url });
    await q.connect();
    try {
      // What a newer coordinator's migration leaves (pg/schema.ts).
      await q.query("INSERT INTO schema_migrations (version) VALUES ($1)", [SCHEMA_VERSION + 1]);
      assert.throws(
        () => a.leadership.tryAcquire(A, 300),
        (e: Error) =>
          (e as { status?: number }).status === Status.FAILED_PRECONDITION &&
          new RegExp(
            `schema version ${SCHEMA_VERSION + 1}, newer than this coordinator's ${SCHEMA_VERSION}: it will not lead`,
          ).test(e.message),
      );
      const again = a.leadership.tryAcquire(A, 300);
      assert.equal(a.leadership.leadingToken, undefined, "not renewed");
      assert.equal(again.token, 1, "the row as it was");
      await waitFor(() => Date.now() > granted.expiresAt + 50, {
        what: "the old grant's lapse",
        timeoutMs: 5_000,
        intervalMs: 20,
      });
      a.leadership.tryAcquire(A, 300);
      assert.equal(a.leadership.leadingToken, undefined, "the lease free, still not taken");
      // A coordinator of the new schema would take it; one of the old never does, even with the lease free.
      const row = (await q.query("SELECT holder, token::int AS token FROM coordinator_leader WHERE id = 1")).rows[0];
      assert.deepEqual(row, { holder: A.id, token: 1 }, "nothing written by the refused tries");
      await q.query("DELETE FROM schema_migrations WHERE version = $1", [SCHEMA_VERSION + 1]);
      assert.equal(b.leadership.tryAcquire(B, 60_000).holder, B.id, "back at its version: a standby leads");
    } finally {
      await q.end();
    }
  });

  it("grant, renew (same token), refused to another while it lives, current, release → takeover token + 1", () => {
    const a = catalog();
    const b = catalog();
    assert.equal(a.leadership.current(), undefined, "nobody ever led");
    const g = a.leadership.tryAcquire(A, 60_000);
    assert.equal(g.holder, A.id);
    assert.equal(g.address, A.address);
    assert.equal(g.token, 1);
    assert.ok(g.expiresAt > Date.now() + 50_000 && g.expiresAt < Date.now() + 70_000, "expiry from the db clock");
    const other = b.leadership.tryAcquire(B, 60_000);
    assert.deepEqual(other, g, "B is told who leads, and nothing changed");
    const renewed = a.leadership.tryAcquire(A, 60_000);
    assert.equal(renewed.token, 1);
    assert.ok(renewed.expiresAt >= g.expiresAt);
    assert.deepEqual(b.leadership.current(), renewed);
    a.leadership.release(A);
    const took = b.leadership.tryAcquire(B, 60_000);
    assert.equal(took.holder, B.id);
    assert.equal(took.token, 2);
    b.leadership.release(A); // not the holder: no effect
    assert.equal(a.leadership.current()?.holder, B.id);
  });

  it("a holder that takes its own lease back after it lapsed starts a new term: token + 1", async () => {
    const a = catalog();
    const first = a.leadership.tryAcquire(A, 60_000).token;
    a.leadership.release(A);
    const mine = a.leadership.tryAcquire(A, 200);
    assert.equal(mine.token, first + 1, "released, then taken: + 1");
    await waitFor(() => Date.now() > mine.expiresAt + 50, {
      what: "the 200 ms lease to lapse",
      timeoutMs: 5_000,
      intervalMs: 20,
    });
    const back = a.leadership.tryAcquire(A, 60_000);
    assert.equal(back.holder, A.id);
    assert.equal(
      back.token,
      mine.token + 1,
      "lapsed, then retaken by the same holder: + 1 (the unit tests' fake agrees)",
    );
    assert.equal(a.leadership.tryAcquire(A, 60_000).token, back.token, "renewed while it runs: the same token");
  });

  it("expiry: B takes over after A's lease lapses (token + 1); A's writes are fenced and change nothing", async () => {
    const a = catalog();
    const b = catalog();
    const kept = backup(vol("v1"), T0);
    const j = job(T0);
    const granted = a.leadership.tryAcquire(A, 300);
    assert.equal(granted.token, 1);
    a.insertBackup(kept);
    a.insertJob(j);
    a.policies.insertPolicy(policy("p"));
    const took = await waitFor(
      () => {
        const r = b.leadership.tryAcquire(B, 60_000);
        return r.holder === B.id && r;
      },
      { what: "B to take over after A's 300 ms lease lapses", timeoutMs: 10_000, intervalMs: 50 },
    );
    assert.equal(took.token, 2);

    const fenced = (f: () => unknown, what: string) =>
      assert.throws(f, (e: unknown) => e instanceof FencedError && e.heldToken === 1, what);
    fenced(() => a.insertBackup(backup(vol("v1"), T0 + 1)), "insertBackup");
    fenced(() => a.updateBackup({ ...kept, status: BackupStatus.BACKUP_STATUS_DELETED }), "updateBackup");
    fenced(() => a.updateJob({ ...j, attempts: 9 }), "updateJob");
    fenced(() => a.insertJob(job(T0 + 1)), "insertJob");
    fenced(() => a.upsertAgent(agent("x", "a")), "upsertAgent");
    fenced(() => a.pinClusterFsid("c", "f", "x"), "pinClusterFsid");
    fenced(() => a.policies.updatePolicy({ ...policy("p"), revision: 9 }), "updatePolicy");
    fenced(() => a.policies.deletePolicy("p"), "deletePolicy");
    fenced(() => a.transaction(() => a.getBackup(kept.id)), "transaction");

    // Nothing changed (read by B, the leader).
    assert.equal(b.getBackup(kept.id)?.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.equal(b.listBackups({}, 10, "").items.length, 1);
    assert.equal(b.getJob(j.id)?.attempts, 0);
    assert.equal(b.listJobs({}, 10, "").items.length, 1);
    assert.equal(b.policies.getPolicy("p")?.revision, 1);
    assert.deepEqual(b.listAgents(), []);
    // Reads still work on the deposed one (a standby answers reads), from SQL.
    assert.equal(a.getBackup(kept.id)?.id, kept.id);
    assert.equal(a.availableBackupsOfVolume("a", "rbd", "", "v1").length, 1);
    // The new leader writes.
    b.updateBackup({ ...kept, status: BackupStatus.BACKUP_STATUS_DELETING });
    assert.equal(b.availableBackupsOfVolume("a", "rbd", "", "v1").length, 0);
    assert.equal(a.availableBackupsOfVolume("a", "rbd", "", "v1").length, 0, "the standby answers from SQL");
  });

  it("two processes with one ha.id: the second is not the holder while the first's lease lives; after the lapse it takes it (token + 1) and the first's writes are fenced", async () => {
    const a = catalog();
    const twin = catalog();
    const A2 = { ...A, instance: "a-2" };
    const granted = a.leadership.tryAcquire(A, 300);
    assert.equal(granted.token, 1);
    const seen = twin.leadership.tryAcquire(A2, 60_000);
    assert.deepEqual([seen.holder, seen.instance, seen.token], [A.id, A.instance, 1], "the twin is told, not granted");
    assert.equal(twin.leadership.leadingToken, undefined);
    const took = await waitFor(
      () => {
        const r = twin.leadership.tryAcquire(A2, 60_000);
        return r.instance === A2.instance && r;
      },
      { what: "the twin to take over after the first's 300 ms lease lapses", timeoutMs: 10_000, intervalMs: 50 },
    );
    assert.equal(took.token, 2, "a new token, though the id is the same");
    assert.throws(
      () => a.insertJob(job(T0)),
      (e: unknown) => e instanceof FencedError && e.heldToken === 1,
    );
    a.leadership.release(A); // the first process's release does not end the twin's lease
    assert.equal(twin.leadership.current()?.instance, A2.instance);
    assert.ok((twin.leadership.current()?.expiresAt ?? 0) > Date.now());
  });

  it("a write racing a takeover waits for the takeover's lock, then is refused; nothing of it commits", async () => {
    const a = catalog();
    a.leadership.tryAcquire(A, 60_000);
    if (!db) throw new Error("no db");
    // Another coordinator's takeover, held open on the server until A's write waits for its lock.
    const taker = await holdUntilWaited(
      db.url,
      "UPDATE coordinator_leader SET holder = 'coord-b', address = 'x', token = token + 1 WHERE id = 1",
    );
    try {
      const takeover = taker.done;
      const b = backup(vol("v1"), T0);
      assert.throws(
        () => a.insertBackup(b),
        (e: unknown) => e instanceof FencedError,
      );
      await takeover;
      assert.equal(a.getBackup(b.id), undefined, "the refused write left nothing");
      assert.equal(a.leadership.current()?.token, 2);
    } finally {
      await taker.client.end();
    }
  });

  it("a renewal racing a takeover it waits for is told of the takeover, not granted its own old row", async () => {
    const a = catalog();
    a.leadership.tryAcquire(A, 60_000);
    if (!db) throw new Error("no db");
    // Another coordinator's takeover (as if A's lease had lapsed), held open until A's renewal waits.
    const taker = await holdUntilWaited(
      db.url,
      "UPDATE coordinator_leader SET holder = 'coord-b', instance = 'b-1', address = 'x', token = token + 1, expires_at = now() + interval '60 seconds' WHERE id = 1",
    );
    try {
      const r = a.leadership.tryAcquire(A, 60_000); // waits for the takeover's row lock
      await taker.done;
      assert.equal(r.holder, "coord-b", "the renewal is told who leads now");
      assert.equal(r.token, 2);
      const b = backup(vol("v1"), T0);
      assert.throws(
        () => a.insertBackup(b),
        (e: unknown) => e instanceof FencedError,
      );
    } finally {
      await taker.client.end();
    }
  });

  it("a fenced write holding the lease row makes a takeover wait until it commits; its backup stays", async () => {
    const a = catalog();
    const b = catalog();
    a.leadership.tryAcquire(A, 60_000);
    const bk = backup(vol("v1"), T0);
    a.transaction(() => a.insertBackup(bk));
    a.leadership.release(A);
    if (!db) throw new Error("no db");
    // A fenced writer's transaction (it reads the row FOR SHARE first, as every fenced write does), held
    // open on the server until B's takeover waits for it.
    const writer = await holdUntilWaited(db.url, FENCE_SQL);
    try {
      assert.equal(b.leadership.tryAcquire(B, 60_000).token, 2);
      await writer.done;
    } finally {
      await writer.client.end();
    }
    assert.equal(b.getBackup(bk.id)?.id, bk.id);
  });

  it("a catalog that never contended writes unfenced; a standby that never led too", () => {
    const tool = catalog();
    const standby = catalog();
    const leader = catalog();
    leader.leadership.tryAcquire(A, 60_000);
    assert.equal(standby.leadership.tryAcquire(B, 60_000).holder, A.id);
    tool.insertJob(job(T0));
    standby.insertJob(job(T0 + 1));
    leader.insertJob(job(T0 + 2));
    assert.equal(leader.listJobs({}, 10, "").items.length, 3);
  });

  it("the leader's AVAILABLE index is rebuilt at a new grant: writes made while it was deposed are seen", async () => {
    const a = catalog();
    const b = catalog();
    a.leadership.tryAcquire(A, 300);
    assert.equal(a.availableBackupsOfVolume("a", "rbd", "", "v1").length, 0, "index built, empty");
    await waitFor(() => b.leadership.tryAcquire(B, 300).holder === B.id, {
      what: "B to take over",
      timeoutMs: 10_000,
      intervalMs: 50,
    });
    b.insertBackup(backup(vol("v1"), T0));
    await waitFor(() => a.leadership.tryAcquire(A, 60_000).holder === A.id, {
      what: "A to take the lease back",
      timeoutMs: 10_000,
      intervalMs: 50,
    });
    assert.equal(a.leadership.current()?.token, 3);
    assert.equal(a.availableBackupsOfVolume("a", "rbd", "", "v1").length, 1);
    assert.equal(a.lastSuccessByVolume().length, 1);
  });
});
