/**
 * PostgreSQL only: what the PostgreSQL catalog does beyond the conformance suite — migrations (fresh,
 * re-run idempotent, two coordinators starting at once, a newer schema refused), the statement
 * deadline (a statement stuck behind a lock → UNAVAILABLE in time, the next call works; the server's
 * statement timeout said the same way), a lost
 * connection (backend terminated mid-call → UNAVAILABLE; next call reconnects, nothing lost), bad
 * connection strings and an unreachable server (clear errors, never the password; the daemon exits 2).
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, afterEach, beforeEach, describe, it } from "node:test";
import { promisify } from "node:util";
import { Client } from "pg";
import { AppError, Status } from "../../../src/common/errors";
import { openCatalog } from "../../../src/coordinator/catalog/open";
import { SyncBridge } from "../../../src/coordinator/catalog/pg/bridge";
import { PgCatalog } from "../../../src/coordinator/catalog/pg/catalog";
import { SCHEMA_VERSION } from "../../../src/coordinator/catalog/pg/schema";
import { backup, T0, vol } from "../../helpers/catalog-cases/records";
import { freshDatabase, pgSkip, type TestDatabase } from "../../helpers/postgres";
import { exited, waitFor } from "../../helpers/wait";

const run = promisify(execFile);

const status = (s: Status) => (e: unknown) => e instanceof AppError && e.status === s;

describe("PostgreSQL catalog: migrations, deadlines, lost connections, bad input", { skip: pgSkip }, () => {
  let db: TestDatabase | undefined;
  const open: PgCatalog[] = [];
  const clients: Client[] = [];
  const url = () => {
    if (!db) throw new Error("no test database");
    return db.url;
  };
  const catalog = (statementTimeoutMs = 10_000) => {
    const c = new PgCatalog({ url: url(), statementTimeoutMs });
    open.push(c);
    return c;
  };
  const admin = async () => {
    const c = new Client({ connectionString: url() });
    await c.connect();
    clients.push(c);
    return c;
  };
  beforeEach(async () => {
    db = await freshDatabase();
  });
  afterEach(async () => {
    for (const c of open.splice(0)) c.close();
    for (const c of clients.splice(0)) await c.end().catch(() => {});
    await db?.drop();
    db = undefined;
  });
  after(() => {
    for (const c of open.splice(0)) c.close();
  });

  it("migrations: a fresh database is brought to the code's version; re-opening changes nothing", async () => {
    const a = catalog();
    assert.equal(a.kind, "postgresql");
    assert.equal(a.schemaVersion, SCHEMA_VERSION);
    const b = catalog();
    assert.deepEqual(b.pagingKey, a.pagingKey, "one paging key per database");
    const q = await admin();
    const v = await q.query("SELECT version FROM schema_migrations ORDER BY version");
    assert.deepEqual(
      v.rows.map((r) => r.version),
      Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1),
    );
    assert.ok(SCHEMA_VERSION >= 3, "version 3 marks shared backup locks (older coordinators refuse it)");
    const marks = await q.query("SELECT value FROM meta WHERE key = 'job_locks'");
    assert.deepEqual(
      marks.rows.map((r) => r.value),
      ["shared"],
    );
    // A page token of one coordinator is good at the other.
    for (let i = 0; i < 3; i++) a.insertBackup(backup(vol("v1"), T0 + i));
    const p1 = a.listBackups({}, 2, "");
    assert.equal(b.listBackups({}, 2, p1.next).items.length, 1);
  });

  it("migrations: two coordinators starting at once migrate once (advisory lock)", async () => {
    const script = `const { PgCatalog } = require(${JSON.stringify(path.resolve(__dirname, "../../../src/coordinator/catalog/pg/catalog.js"))});
const c = new PgCatalog({ url: process.argv[1] }); process.stdout.write(String(c.schemaVersion)); c.close();`;
    const outs = await Promise.all([0, 1, 2].map(() => run(process.execPath, ["-e", script, url()])));
    assert.deepEqual(
      outs.map((o) => o.stdout),
      [0, 1, 2].map(() => String(SCHEMA_VERSION)),
    );
    const q = await admin();
    assert.equal((await q.query("SELECT count(*)::int AS n FROM schema_migrations")).rows[0].n, SCHEMA_VERSION);
  });

  it("a database at a newer schema version is refused: FAILED_PRECONDITION, nothing written", async () => {
    catalog().close();
    const q = await admin();
    await q.query("INSERT INTO schema_migrations (version) VALUES ($1)", [SCHEMA_VERSION + 1]);
    assert.throws(
      () => catalog(),
      (e: unknown) =>
        status(Status.FAILED_PRECONDITION)(e) &&
        new RegExp(`schema version ${SCHEMA_VERSION + 1}, newer than this coordinator's ${SCHEMA_VERSION}`).test(
          (e as Error).message,
        ),
    );
    const n = (await q.query("SELECT count(*)::int AS n FROM schema_migrations")).rows[0].n;
    assert.equal(n, SCHEMA_VERSION + 1);
  });

  it("a statement stuck behind a lock fails UNAVAILABLE within the deadline; the next call works", async () => {
    const c = catalog(700);
    const b = backup(vol("v1"), T0);
    c.insertBackup(b);
    const q = await admin();
    await q.query("BEGIN");
    await q.query("LOCK TABLE backups IN ACCESS EXCLUSIVE MODE");
    // The deadline's own failure (not the lost connection's, not a server error).
    assert.throws(
      () => c.getBackup(b.id),
      (e: unknown) =>
        status(Status.UNAVAILABLE)(e) &&
        /at 127\.0\.0\.1:\d+\/rbdbackup_test_\w+ did not answer within 700 ms/.test((e as Error).message),
    );
    await q.query("ROLLBACK");
    assert.equal(c.getBackup(b.id)?.id, b.id);
  });

  it("the server's statement timeout firing before this thread's timer is the same deadline failure", async () => {
    // The server's statement_timeout is the session's (300 ms); this call waits 10 s, so the server
    // always cancels first. In CI the two raced at the same 700 ms and the server won once.
    const bridge = new SyncBridge(url(), 300);
    try {
      assert.throws(
        () => bridge.run([{ sql: "SELECT pg_sleep(5)" }], "none", undefined, 10_000),
        (e: unknown) =>
          status(Status.UNAVAILABLE)(e) &&
          /^the catalog database at 127\.0\.0\.1:\d+\/rbdbackup_test_\w+ did not answer within 300 ms \(catalog\.statementTimeoutMs\)$/.test(
            (e as Error).message,
          ),
      );
      assert.deepEqual(bridge.query("SELECT 1 AS x"), [{ x: 1 }]);
    } finally {
      bridge.close();
    }
  });

  it("a transaction stuck past the deadline is rolled back on the server; nothing of it commits", async () => {
    const c = catalog(700);
    const q = await admin();
    await q.query("BEGIN");
    await q.query("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE");
    const b = backup(vol("v1"), T0);
    assert.throws(
      () =>
        c.transaction(() => {
          c.insertBackup(b);
          c.listJobs({}, 1, ""); // waits for the lock → deadline
        }),
      status(Status.UNAVAILABLE),
    );
    await q.query("ROLLBACK");
    assert.equal(c.getBackup(b.id), undefined);
    assert.equal(c.availableBackupsOfVolume("a", "rbd", "", "v1").length, 0);
  });

  it("a transaction one of whose statements failed (the failure caught, the transaction gone on) is not reported committed", () => {
    const c = catalog();
    const first = backup(vol("v1"), T0);
    c.insertBackup(first);
    const b = backup(vol("v2"), T0 + 1);
    // SQLite lets a caller catch a statement's failure and commit the rest; PostgreSQL aborts the whole
    // transaction and answers the COMMIT with ROLLBACK — the bridge then said "committed".
    assert.throws(
      () =>
        c.transaction(() => {
          c.insertBackup(b);
          try {
            c.insertBackup(first); // the same id again: a unique violation
          } catch {}
        }),
      /the transaction was rolled back: a statement in it failed/,
    );
    assert.equal(c.getBackup(b.id), undefined);
    assert.equal(c.getBackup(first.id)?.id, first.id);
  });

  it("the backend terminated mid-call: UNAVAILABLE; the next call reconnects; nothing lost", async () => {
    const c = catalog(10_000);
    const b = backup(vol("v1"), T0);
    c.insertBackup(b);
    const q = await admin();
    await q.query("BEGIN");
    await q.query("LOCK TABLE backups IN ACCESS EXCLUSIVE MODE");
    // The server terminates the catalog's backend once it is seen waiting for the lock (a loop on the
    // server, bounded: 10 s), while this thread is blocked in the call.
    const killer = await admin();
    const kill = killer.query(`DO $$ /* rbdbackup-test-killer */ BEGIN
      FOR i IN 1..1000 LOOP
        -- pg_stat_activity's rows are read once per transaction unless cleared (wait events are live).
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
          AND application_name = 'rbdbackup-coordinator' AND wait_event_type = 'Lock');
        PERFORM pg_sleep(0.01);
      END LOOP;
      PERFORM pg_stat_clear_snapshot();
      PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()
        AND application_name = 'rbdbackup-coordinator' AND wait_event_type = 'Lock';
    END $$`);
    await waitFor(
      async () => {
        // q is inside its transaction: its view of pg_stat_activity is frozen at its first read unless
        // cleared (CI once polled 10 s against a view taken before the terminator began).
        await q.query("SELECT pg_stat_clear_snapshot()");
        return (
          await q.query(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%rbdbackup-test-killer%' AND state = 'active' AND pid <> pg_backend_pid()",
          )
        ).rowCount;
      },
      { what: "the terminator to be running", timeoutMs: 10_000, intervalMs: 20 },
    );
    // The lost connection's failure (the server's word), not the deadline's (10 s away).
    assert.throws(
      () => c.getBackup(b.id),
      (e: unknown) =>
        status(Status.UNAVAILABLE)(e) &&
        /is unavailable: .*terminat/i.test((e as Error).message) &&
        !/did not answer within/.test((e as Error).message),
    );
    await kill;
    await q.query("ROLLBACK");
    assert.equal(c.getBackup(b.id)?.id, b.id, "reconnected; the record is there");
  });

  it("the backend terminated while idle: the next call reconnects", async () => {
    const c = catalog();
    c.insertBackup(backup(vol("v1"), T0));
    const q = await admin();
    const backends = async () =>
      (
        await q.query(
          "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'rbdbackup-coordinator'",
        )
      ).rows.map((r) => r.pid as number);
    const before = await backends();
    assert.ok(before.length >= 1, "the catalog has a backend");
    const killed = await q.query(
      "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'rbdbackup-coordinator'",
    );
    assert.ok(killed.rows.length >= 1 && killed.rows.every((r) => r.done === true), "its backend was terminated");
    await waitFor(
      () => {
        try {
          return c.listBackups({}, 10, "").items.length === 1;
        } catch (e) {
          if (!status(Status.UNAVAILABLE)(e)) throw e;
          return false;
        }
      },
      { what: "the catalog to reconnect", timeoutMs: 10_000 },
    );
    const after = await backends();
    assert.ok(after.length >= 1 && after.every((pid) => !before.includes(pid)), "served by a new backend");
  });

  it("bad connection strings and an unreachable server: clear errors, never the password", () => {
    for (const bad of ["mysql://u@127.0.0.1/db", "not a url", "postgresql://127.0.0.1:5432"])
      assert.throws(
        () => openCatalog({ path: "/unused", url: bad }),
        (e: unknown) => status(Status.INVALID_ARGUMENT)(e) && /catalog\.url must be/.test((e as Error).message),
        bad,
      );
    // Refused at once (the server's refusal named), not waited out to the deadline.
    assert.throws(
      () => openCatalog({ path: "/unused", url: "postgresql://u:sekret@127.0.0.1:1/db", statementTimeoutMs: 3000 }),
      (e: unknown) =>
        status(Status.UNAVAILABLE)(e) &&
        /127\.0\.0\.1:1\/db/.test((e as Error).message) &&
        !/did not answer within/.test((e as Error).message) &&
        !(e as Error).message.includes("sekret"),
    );
  });

  it("the daemon runs on PostgreSQL: migrates, serves, stops cleanly on SIGTERM", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-pg-daemon-"));
    const cfg = path.join(dir, "coordinator.json");
    writeFileSync(
      cfg,
      JSON.stringify({
        listen: "127.0.0.1:0",
        metricsListen: "",
        tls: { insecure: true },
        catalog: { path: path.join(dir, "unused.sqlite"), url: url() },
      }),
    );
    const proc = spawn(
      process.execPath,
      [path.resolve(__dirname, "../../../src/coordinator/main.js"), "--config", cfg],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    try {
      let out = "";
      proc.stdout.on("data", (d: Buffer) => {
        out += d.toString();
      });
      proc.stderr.resume();
      await waitFor(() => out.includes('"event":"serving"'), { what: "the coordinator to serve", timeoutMs: 30_000 });
      const q = await admin();
      assert.equal((await q.query("SELECT count(*)::int AS n FROM schema_migrations")).rows[0].n, SCHEMA_VERSION);
      proc.kill("SIGTERM");
      assert.equal(await exited(proc, "the coordinator"), 0);
      assert.ok(!existsSync(path.join(dir, "unused.sqlite")), "no SQLite file made");
    } finally {
      proc.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the daemon with an unreachable catalog database does not start: exit code 1 (systemd starts it again; 2 would be for good), the host named", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-pg-start-"));
    try {
      const cfg = path.join(dir, "coordinator.json");
      writeFileSync(
        cfg,
        JSON.stringify({
          listen: "127.0.0.1:0",
          metricsListen: "",
          tls: { insecure: true },
          catalog: {
            path: path.join(dir, "c.sqlite"),
            url: "postgresql://u:sekret@127.0.0.1:1/db",
            statementTimeoutMs: 2000,
          },
        }),
      );
      const r = await run(process.execPath, [
        path.resolve(__dirname, "../../../src/coordinator/main.js"),
        "--config",
        cfg,
      ]).then(
        () => ({ code: 0, stderr: "" }),
        (e: { code: number; stderr: string }) => e,
      );
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /cannot start: .*127\.0\.0\.1:1\/db/);
      assert.match(r.stderr, /systemd starts it again/);
      assert.ok(!r.stderr.includes("sekret"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
