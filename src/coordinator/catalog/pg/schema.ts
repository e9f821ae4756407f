/**
 * The PostgreSQL catalog's schema, versioned in code: MIGRATIONS[i] takes a database from version i to
 * i + 1 and is never edited once released (add a new one instead). At start, `migrate` runs in one
 * transaction under an advisory lock (two coordinators starting at once: the second waits, then finds
 * the work done): creates `schema_migrations`, refuses a database at a NEWER version than this code
 * (FAILED_PRECONDITION: an older coordinator must not write a schema it does not know), applies what is
 * missing, and makes the paging key once (INSERT … ON CONFLICT DO NOTHING, then read).
 * Same logical shape as ../sqlite.ts: each row keeps the record as JSON text plus the columns that are
 * filtered, ordered or unique; times are BIGINT epoch ms.
 */
import { randomBytes } from "node:crypto";
import { AppError, Status } from "../../../common/errors";
import { BackupStatus, JobState } from "../../../gen/rbdbackup/v1/backup_service";
import type { SyncBridge } from "./bridge";

// Wire values of the enums (stable: they are the API's).
const AVAILABLE = BackupStatus.BACKUP_STATUS_AVAILABLE;
const QUEUED = JobState.JOB_STATE_QUEUED;
const RUNNING = JobState.JOB_STATE_RUNNING;

export const MIGRATIONS: string[] = [
  // 0 → 1: the first schema.
  `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE agents (agent_id TEXT PRIMARY KEY, cluster TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE clusters (name TEXT PRIMARY KEY, fsid TEXT NOT NULL, pinned_by TEXT NOT NULL, pinned_at BIGINT NOT NULL);
CREATE TABLE backups (
  id TEXT PRIMARY KEY,
  status INTEGER NOT NULL,
  cluster TEXT NOT NULL, pool TEXT NOT NULL, namespace TEXT NOT NULL, image TEXT NOT NULL,
  volume_id TEXT NOT NULL,
  location_cluster TEXT NOT NULL,
  policy TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL,
  completed_at BIGINT,
  verified_at BIGINT NOT NULL DEFAULT 0,
  doc TEXT NOT NULL
);
CREATE INDEX backups_created ON backups (created_at DESC, id DESC);
CREATE INDEX backups_volume ON backups (cluster, pool, image, created_at DESC, id DESC);
CREATE INDEX backups_cluster ON backups (cluster, created_at DESC, id DESC);
CREATE INDEX backups_volume_id ON backups (volume_id, created_at DESC, id DESC);
CREATE INDEX backups_status ON backups (status, created_at DESC, id DESC);
CREATE INDEX backups_location ON backups (location_cluster, created_at DESC, id DESC);
CREATE INDEX backups_policy ON backups (policy, created_at DESC, id DESC) WHERE policy <> '';
CREATE INDEX backups_available ON backups (cluster, pool, namespace, image) WHERE status = ${AVAILABLE};
CREATE TABLE jobs (
  id TEXT PRIMARY KEY,
  state INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  backup_id TEXT NOT NULL,
  idempotency_key TEXT UNIQUE,
  created_at BIGINT NOT NULL,
  doc TEXT NOT NULL
);
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_state ON jobs (state, created_at DESC, id DESC);
CREATE INDEX jobs_kind ON jobs (kind, created_at DESC, id DESC);
CREATE INDEX jobs_backup ON jobs (backup_id, created_at DESC, id DESC);
CREATE INDEX jobs_active ON jobs (created_at, id) WHERE state IN (${QUEUED}, ${RUNNING});
CREATE TABLE policies (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE protection (
  policy TEXT NOT NULL,
  volume_key TEXT NOT NULL,
  cluster TEXT NOT NULL,
  next_run_at BIGINT NOT NULL DEFAULT 0,
  doc TEXT NOT NULL,
  PRIMARY KEY (policy, volume_key)
);
CREATE INDEX protection_volume ON protection (volume_key);
CREATE INDEX protection_due ON protection (next_run_at);
CREATE TABLE coordinator_leader (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  holder TEXT NOT NULL,
  address TEXT NOT NULL,
  token BIGINT NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL
);
`,
  // 1 → 2: the holder's process instance (two processes with one ha.id must not share a lease).
  `ALTER TABLE coordinator_leader ADD COLUMN instance TEXT NOT NULL DEFAULT '';`,
  // 2 → 3: no table changes — job documents may hold shared backup locks (scheduler/jobs.ts
  // "backup:<id>#shared"), which a coordinator built before them takes for another resource: such a
  // coordinator now refuses the database at its start (a newer schema) instead of running a DELETE beside
  // a restore of the same backup.
  `INSERT INTO meta (key, value) VALUES ('job_locks', 'shared') ON CONFLICT (key) DO NOTHING;`,
];

/** The version this code brings a database to. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** Deadline of each statement of the migration (a migration may rewrite a big table), ms. */
const MIGRATION_TIMEOUT_MS = 15 * 60_000;

/** Any constant: the key of the advisory lock migrations run under. */
const MIGRATION_LOCK = 0x72626462; // "rbdb"

export interface Migrated {
  schemaVersion: number;
  pagingKey: Buffer;
}

/** Brings the database to SCHEMA_VERSION (see the module comment); `target` is for tests only. */
export function migrate(db: SyncBridge, target = SCHEMA_VERSION): Migrated {
  const long = Math.max(db.timeoutMs, MIGRATION_TIMEOUT_MS);
  db.run([], "open", undefined, long);
  try {
    // Another coordinator migrating holds it: wait for it (then find its work done).
    db.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK], "in", undefined, long);
    db.query(
      "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
      [],
      "in",
    );
    const [row] = db.query<{ v: number | null }>("SELECT max(version) AS v FROM schema_migrations", [], "in");
    const at = row?.v ?? 0;
    if (at > target)
      throw new AppError(
        Status.FAILED_PRECONDITION,
        `the catalog database at ${db.where} has schema version ${at}, newer than this coordinator's ${target}: upgrade the coordinator (it must not write a schema it does not know)`,
      );
    for (let v = at; v < target; v++) {
      db.run(
        [
          { sql: MIGRATIONS[v] as string },
          { sql: "INSERT INTO schema_migrations (version) VALUES ($1)", params: [v + 1] },
        ],
        "in",
        undefined,
        long,
      );
    }
    const [key] = db
      .run(
        [
          {
            sql: "INSERT INTO meta (key, value) VALUES ('paging_key', $1) ON CONFLICT (key) DO NOTHING",
            params: [randomBytes(32).toString("hex")],
          },
          { sql: "SELECT value FROM meta WHERE key = 'paging_key'" },
        ],
        "commit",
      )
      .slice(1);
    const hex = key?.rows[0]?.value;
    if (typeof hex !== "string") throw new Error("the catalog's paging key is missing after migration");
    return { schemaVersion: Math.max(at, target), pagingKey: Buffer.from(hex, "hex") };
  } catch (e) {
    try {
      db.run([], "rollback");
    } catch {
      // The connection is gone: the server rolled the transaction back.
    }
    throw e;
  }
}
