/**
 * The catalog in one SQLite file (better-sqlite3, synchronous; WAL with synchronous=FULL so a
 * kill -9 loses nothing that was acknowledged). Each table keeps the record as JSON plus the columns
 * that are filtered, ordered or unique.
 */
import { randomBytes } from "node:crypto";
import { closeSync, mkdirSync, openSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { Backup as BackupMsg, BackupStatus, JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { AgentRecord, Backup, BackupFilter, JobFilter, JobRecord } from "../model";
import { ActiveJobIndex, type ActiveJobRow } from "./active-jobs";
import { type AvailableBackup, AvailableIndex } from "./available-index";
import type { Catalog, ClusterPin, Page } from "./catalog";
import { type Statuses, statusList } from "./filters";
import { historySql } from "./history-sql";
import { decodePageToken, keysetPage, pageScope } from "./page-token";
import { migratePolicyColumns } from "./policy-columns";
import { backupListing, jobListing, LISTING_INDEXES } from "./sqlite-listings";
import { POLICY_SCHEMA, SqlitePolicyStore } from "./sqlite-policies";
import { statementCache } from "./statements";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agents (agent_id TEXT PRIMARY KEY, cluster TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS backups (
  id TEXT PRIMARY KEY,
  status INTEGER NOT NULL,
  cluster TEXT NOT NULL, pool TEXT NOT NULL, namespace TEXT NOT NULL, image TEXT NOT NULL,
  volume_id TEXT NOT NULL,
  location_cluster TEXT NOT NULL,
  created_at TEXT NOT NULL,
  doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  state INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  backup_id TEXT NOT NULL,
  idempotency_key TEXT UNIQUE,
  created_at INTEGER NOT NULL,
  doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clusters (name TEXT PRIMARY KEY, fsid TEXT NOT NULL, pinned_by TEXT NOT NULL, pinned_at INTEGER NOT NULL);
`;

/** Catalogs from before the clusters table: each cluster's fsid as its agents registered it (first agent wins). */
const PIN_KNOWN_CLUSTERS = `
INSERT OR IGNORE INTO clusters (name, fsid, pinned_by, pinned_at)
  SELECT cluster, json_extract(doc, '$.clusterFsid'), agent_id, COALESCE(json_extract(doc, '$.lastSeen'), 0)
  FROM agents ORDER BY agent_id
`;

/**
 * Columns added after the first schema (version 1 stays: an older coordinator's statements name their
 * columns and the new ones have defaults). Each is added when missing and filled from the record.
 *  - backups.policy: the policy whose run made the backup (Backup.policy), for retention's reads;
 *  - backups.verified_at: epoch ms of its last verification (Backup.integrity.last_verified_at), 0 = never.
 */
const ADDED_COLUMNS: Array<{ table: string; column: string; ddl: string; fill: string }> = [
  {
    table: "backups",
    column: "policy",
    ddl: "policy TEXT NOT NULL DEFAULT ''",
    fill: "UPDATE backups SET policy = COALESCE(json_extract(doc, '$.policy'), '')",
  },
  {
    table: "backups",
    column: "verified_at",
    ddl: "verified_at INTEGER NOT NULL DEFAULT 0",
    fill: "UPDATE backups SET verified_at = COALESCE(CAST(strftime('%s', json_extract(doc, '$.integrity.lastVerifiedAt')) AS INTEGER) * 1000, 0)",
  },
];

/**
 * "2": job documents may hold shared backup locks (scheduler/jobs.ts "backup:<id>#shared"); a "1"
 * catalog is brought to it (no table changes), and a coordinator that knows only "1" (built before
 * them, which would take such a lock for another resource) refuses it.
 */
const SCHEMA_VERSION = "2";

const parseBackup = (doc: string): Backup => BackupMsg.fromJSON(JSON.parse(doc));
const parseJob = (doc: string): JobRecord => JSON.parse(doc) as JobRecord;

/** pruneHistory's statements (history-sql.ts says the rules). */
const PRUNE = historySql({
  backupsBefore: "@before_iso",
  jobsBefore: "@before_ms",
  limit: "@limit",
  backupError: "json_extract(b.doc, '$.error')",
  after: { cluster: "@after_cluster", pool: "@after_pool", namespace: "@after_namespace", image: "@after_image" },
  volume: { cluster: "@cluster", pool: "@pool", namespace: "@namespace", image: "@image" },
});

/** The window's start as each table stores created_at, and the batch size (PRUNE's named parameters). */
const pruneArgs = (beforeMs: number, limit: number) => ({
  before_iso: new Date(beforeMs).toISOString(),
  before_ms: beforeMs,
  limit,
});

export class SqliteCatalog implements Catalog {
  readonly #db: Database.Database;
  readonly #sql: (sql: string) => Database.Statement;
  readonly policies: SqlitePolicyStore;
  readonly #available: AvailableIndex;
  readonly #active: ActiveJobIndex;
  readonly kind = "sqlite" as const;
  readonly schemaVersion = Number(SCHEMA_VERSION);
  readonly pagingKey: Buffer;
  readonly leadership = undefined;

  constructor(file: string) {
    if (file !== ":memory:") {
      mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      // The catalog (its paging key, volume metadata) is the coordinator's only, whatever the umask and the
      // directory's mode: a new file is made 0600 (SQLite gives its -wal and -shm files the same mode).
      closeSync(openSync(file, "a", 0o600));
    }
    this.#db = new Database(file, { timeout: 5000 });
    this.#sql = statementCache(this.#db);
    this.#db.pragma("journal_mode = WAL");
    this.#db.pragma("synchronous = FULL");
    this.#db.pragma("foreign_keys = ON");
    // The version first, before anything is created or written: a schema this code does not know (a
    // newer release's, after a rollback of the coordinator) is refused untouched. Then every step and
    // the version in one transaction: a start cut short leaves the file as it was.
    const v = this.#storedVersion();
    if (v !== undefined && v !== "1" && v !== SCHEMA_VERSION) {
      this.#db.close();
      throw new Error(`catalog ${file} has schema version ${v}; this coordinator knows ${SCHEMA_VERSION}`);
    }
    this.#db.transaction(() => {
      this.#db.exec(SCHEMA);
      this.#db.exec(POLICY_SCHEMA);
      this.#db.exec(PIN_KNOWN_CLUSTERS);
      migratePolicyColumns(this.#db);
      this.#addColumns();
      this.#db.exec(LISTING_INDEXES);
      if (v === undefined) this.#sql("INSERT INTO meta (key, value) VALUES ('schema_version', ?)").run(SCHEMA_VERSION);
      else if (v === "1") this.#sql("UPDATE meta SET value = ? WHERE key = 'schema_version'").run(SCHEMA_VERSION);
    })();
    this.pagingKey = this.#pagingKey();
    this.policies = new SqlitePolicyStore(this.#db, this.pagingKey);
    this.#available = new AvailableIndex(() =>
      (
        this.#sql(`SELECT doc FROM backups WHERE status = ${BackupStatus.BACKUP_STATUS_AVAILABLE}`).all() as {
          doc: string;
        }[]
      ).map((r) => parseBackup(r.doc)),
    );
    this.#active = new ActiveJobIndex(
      () =>
        this.#sql(
          `SELECT id, created_at AS createdAt, backup_id AS backupId, doc FROM jobs WHERE state IN (${JobState.JOB_STATE_QUEUED}, ${JobState.JOB_STATE_RUNNING})`,
        ).all() as ActiveJobRow[],
    );
  }

  /** The file's schema version, or undefined for a new file (no `meta` table, or no version in it). */
  #storedVersion(): string | undefined {
    const meta = this.#db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").get();
    if (!meta) return undefined;
    const r = this.#db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as
      | { value: string }
      | undefined;
    return r?.value;
  }

  /** Adds the columns an older catalog lacks (ADDED_COLUMNS), filled from the records, in one transaction. */
  #addColumns(): void {
    this.#db.transaction(() => {
      for (const c of ADDED_COLUMNS) {
        const cols = this.#db.prepare(`PRAGMA table_info(${c.table})`).all() as Array<{ name: string }>;
        if (!cols.some((x) => x.name === c.column)) {
          this.#db.exec(`ALTER TABLE ${c.table} ADD COLUMN ${c.ddl}`);
          this.#db.exec(c.fill);
        }
      }
    })();
  }

  /** The key page tokens are signed with: 32 random bytes made on the first open, kept in `meta`. */
  #pagingKey(): Buffer {
    this.#sql("INSERT OR IGNORE INTO meta (key, value) VALUES ('paging_key', ?)").run(randomBytes(32).toString("hex"));
    const r = this.#sql("SELECT value FROM meta WHERE key = 'paging_key'").get() as { value: string };
    return Buffer.from(r.value, "hex");
  }

  transaction<T>(f: () => T): T {
    try {
      return this.#db.transaction(f)();
    } catch (e) {
      // Rolled back (to its savepoint, when nested): the indexes may hold writes that are undone.
      this.#available.invalidate();
      this.#active.invalidate();
      throw e;
    }
  }

  upsertAgent(a: AgentRecord): void {
    this.#sql(
      "INSERT INTO agents (agent_id, cluster, doc) VALUES (?, ?, ?) ON CONFLICT(agent_id) DO UPDATE SET cluster = excluded.cluster, doc = excluded.doc",
    ).run(a.agentId, a.clusterName, JSON.stringify(a));
  }

  clusterPins(): Array<{ name: string; fsid: string; pinnedBy: string }> {
    return this.#sql("SELECT name, fsid, pinned_by AS pinnedBy FROM clusters ORDER BY name").all() as Array<{
      name: string;
      fsid: string;
      pinnedBy: string;
    }>;
  }

  removeAgent(agentId: string): boolean {
    return this.#sql("DELETE FROM agents WHERE agent_id = ?").run(agentId).changes > 0;
  }

  pinClusterFsid(cluster: string, fsid: string, agentId: string): ClusterPin {
    this.#sql("INSERT OR IGNORE INTO clusters (name, fsid, pinned_by, pinned_at) VALUES (?, ?, ?, ?)").run(
      cluster,
      fsid,
      agentId,
      Date.now(),
    );
    const r = this.#sql("SELECT fsid, pinned_by, pinned_at FROM clusters WHERE name = ?").get(cluster) as {
      fsid: string;
      pinned_by: string;
      pinned_at: number;
    };
    return { fsid: r.fsid, pinnedBy: r.pinned_by, pinnedAt: r.pinned_at };
  }

  listAgents(): AgentRecord[] {
    return (this.#sql("SELECT doc FROM agents ORDER BY cluster, agent_id").all() as { doc: string }[]).map(
      (r) => JSON.parse(r.doc) as AgentRecord,
    );
  }

  #backupRow(b: Backup) {
    const v = b.volume ?? { cluster: "", pool: "", namespace: "", image: "" };
    return {
      id: b.id,
      status: b.status,
      cluster: v.cluster,
      pool: v.pool,
      namespace: v.namespace,
      image: v.image,
      volume_id: b.volumeId,
      location_cluster: b.location?.cluster ?? "",
      created_at: (b.createdAt ?? new Date(0)).toISOString(),
      policy: b.policy ?? "",
      verified_at: b.integrity?.lastVerifiedAt?.getTime() ?? 0,
      doc: JSON.stringify(BackupMsg.toJSON(b)),
    };
  }

  insertBackup(b: Backup): void {
    const row = this.#backupRow(b);
    this.#sql(
      "INSERT INTO backups (id, status, cluster, pool, namespace, image, volume_id, location_cluster, created_at, policy, verified_at, doc) VALUES (@id, @status, @cluster, @pool, @namespace, @image, @volume_id, @location_cluster, @created_at, @policy, @verified_at, @doc)",
    ).run(row);
    this.#available.put(b);
  }

  getBackup(id: string): Backup | undefined {
    const r = this.#sql("SELECT doc FROM backups WHERE id = ?").get(id) as { doc: string } | undefined;
    return r ? parseBackup(r.doc) : undefined;
  }

  updateBackup(b: Backup): void {
    const row = this.#backupRow(b);
    const r = this.#sql(
      "UPDATE backups SET status = @status, policy = @policy, verified_at = @verified_at, doc = @doc WHERE id = @id",
    ).run(row);
    if (r.changes !== 1) throw new Error(`backup ${b.id} is not in the catalog`);
    this.#available.put(b);
  }

  listBackups(f: BackupFilter, pageSize: number, pageToken: string): Page<Backup> {
    const scope = pageScope("backups", f);
    const q = backupListing(f, pageSize, decodePageToken(this.pagingKey, scope, pageToken));
    const rows = this.#sql(q.sql).all(q.args) as { created_at: string; id: string; doc: string }[];
    return keysetPage(
      rows,
      pageSize,
      (r) => parseBackup(r.doc),
      (r) => ({ createdAt: Date.parse(r.created_at), id: r.id }),
      this.pagingKey,
      scope,
    );
  }

  lastSuccessByVolume(): Array<{ cluster: string; pool: string; namespace: string; image: string; at: number }> {
    return this.#available.lastSuccessByVolume();
  }

  availableBackupsOfVolume(cluster: string, pool: string, namespace: string, image: string): AvailableBackup[] {
    return this.#available.of(cluster, pool, namespace, image);
  }

  backupsOfVolume(cluster: string, pool: string, namespace: string, image: string, status?: Statuses): Backup[] {
    const statuses = statusList(status);
    const only = statuses.length ? ` AND status IN (${statuses.map(() => "?").join(", ")})` : "";
    const rows = this.#sql(
      `SELECT doc FROM backups WHERE cluster = ? AND pool = ? AND namespace = ? AND image = ?${only} ORDER BY created_at, id`,
    ).all(cluster, pool, namespace, image, ...statuses) as { doc: string }[];
    return rows.map((r) => parseBackup(r.doc));
  }

  pruneHistory(beforeMs: number, limit: number): { backups: number; jobs: number } {
    const args = pruneArgs(beforeMs, limit);
    return this.transaction(() => ({
      backups: this.#sql(PRUNE.backups).run(args).changes,
      jobs: this.#sql(PRUNE.jobs).run(args).changes,
    }));
  }

  goneHistoryCandidates(beforeMs: number, after: VolumeRef | null, limit: number): VolumeRef[] {
    const a = after ?? { cluster: "", pool: "", namespace: "", image: "" };
    return this.#sql(PRUNE.goneCandidates).all({
      ...pruneArgs(beforeMs, limit),
      after_cluster: a.cluster,
      after_pool: a.pool,
      after_namespace: a.namespace,
      after_image: a.image,
    }) as VolumeRef[];
  }

  pruneGoneVolume(v: VolumeRef, beforeMs: number, limit: number): number {
    const { cluster, pool, namespace, image } = v;
    const args = { ...pruneArgs(beforeMs, limit), cluster, pool, namespace, image };
    return this.transaction(() => this.#sql(PRUNE.pruneGone).run(args).changes);
  }

  #jobRow(j: JobRecord) {
    return {
      id: j.id,
      state: j.state,
      kind: j.kind,
      backup_id: j.backupId,
      idempotency_key: j.idempotencyKey || null,
      created_at: j.createdAt,
      doc: JSON.stringify(j),
    };
  }

  insertJob(j: JobRecord): void {
    const row = this.#jobRow(j);
    this.#sql(
      "INSERT INTO jobs (id, state, kind, backup_id, idempotency_key, created_at, doc) VALUES (@id, @state, @kind, @backup_id, @idempotency_key, @created_at, @doc)",
    ).run(row);
    this.#active.put(j, row.doc);
  }

  getJob(id: string): JobRecord | undefined {
    const r = this.#sql("SELECT doc FROM jobs WHERE id = ?").get(id) as { doc: string } | undefined;
    return r ? parseJob(r.doc) : undefined;
  }

  updateJob(j: JobRecord): void {
    const row = this.#jobRow(j);
    const r = this.#sql("UPDATE jobs SET state = @state, doc = @doc WHERE id = @id").run(row);
    if (r.changes !== 1) throw new Error(`job ${j.id} is not in the catalog`);
    this.#active.put(j, row.doc);
  }

  jobByIdempotencyKey(key: string): JobRecord | undefined {
    const r = this.#sql("SELECT doc FROM jobs WHERE idempotency_key = ?").get(key) as { doc: string } | undefined;
    return r ? parseJob(r.doc) : undefined;
  }

  /** From memory (active-jobs.ts): no query, one parse per job. */
  activeJobs(): JobRecord[] {
    return this.#active.all();
  }

  /** From memory (active-jobs.ts): no query, no parse. */
  backupInUse(backupId: string): boolean {
    return this.#active.usesBackup(backupId);
  }

  /** From memory (active-jobs.ts): no query. */
  activeJob(id: string): JobRecord | undefined {
    return this.#active.get(id);
  }

  listJobs(f: JobFilter, pageSize: number, pageToken: string): Page<JobRecord> {
    const scope = pageScope("jobs", f);
    const q = jobListing(f, pageSize, decodePageToken(this.pagingKey, scope, pageToken));
    const rows = this.#sql(q.sql).all(q.args) as { created_at: number; id: string; doc: string }[];
    return keysetPage(
      rows,
      pageSize,
      (r) => parseJob(r.doc),
      (r) => ({ createdAt: r.created_at, id: r.id }),
      this.pagingKey,
      scope,
    );
  }

  close(): void {
    this.#db.close();
  }
}
