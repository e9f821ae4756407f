/**
 * The catalog in PostgreSQL, for several coordinators sharing one database (one leader: lease.ts).
 * Synchronous like every Catalog: each call is one round trip through the sync bridge (bridge.ts) —
 * mostly one statement; a fenced write outside a transaction is BEGIN, the lease check, the statement
 * and COMMIT in that one trip. `transaction(f)` is BEGIN … COMMIT on the bridge's one connection, the
 * BEGIN and lease check sent with its first statement (nested calls are savepoints, as better-sqlite3's
 * are); a throw rolls back.
 * Caches are kept only where they stay right (README.md): the AVAILABLE index while this catalog leads
 * (rebuilt at each new grant) or when it never contended for the lease; SQL otherwise.
 */
import { BackupStatus, JobState } from "../../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../gen/rbdbackup/v1/common";
import type { AgentRecord, Backup, BackupFilter, JobFilter, JobRecord } from "../../model";
import { type AvailableBackup, AvailableIndex, availableOf } from "../available-index";
import type { Catalog, ClusterPin, Page } from "../catalog";
import { type Statuses, statusList } from "../filters";
import { historySql } from "../history-sql";
import { FencedError } from "../leader-lease";
import { decodePageToken, keysetPage, pageScope } from "../page-token";
import { SyncBridge } from "./bridge";
import { PgLeaderLease } from "./lease";
import { PgPolicyStore } from "./policies";
import type { Step, StepResult, TxMode } from "./protocol";
import { BACKUP_COLUMNS, backupParams, backupWhere, jobParams, jobWhere, parseBackup, parseJob } from "./rows";
import { migrate } from "./schema";

export interface PgCatalogOptions {
  /** postgresql://user[:password]@host:port/database */
  url: string;
  /** Deadline of one catalog call (and the server's statement_timeout), ms. */
  statementTimeoutMs?: number;
}

type Doc = { doc: string };
type Keyed = Doc & { created_at: number; id: string };
const AVAILABLE = BackupStatus.BACKUP_STATUS_AVAILABLE;

/** pruneHistory's statements (../history-sql.ts says the rules). */
const VOLUME_PARAMS = { cluster: "$3", pool: "$4", namespace: "$5", image: "$6" };
const PRUNE = historySql({
  backupsBefore: "$1",
  jobsBefore: "$1",
  limit: "$2",
  backupError: "b.doc::jsonb->>'error'",
  after: VOLUME_PARAMS,
  volume: VOLUME_PARAMS,
});

export class PgCatalog implements Catalog {
  readonly kind = "postgresql" as const;
  readonly schemaVersion: number;
  readonly pagingKey: Buffer;
  readonly leadership: PgLeaderLease;
  readonly policies: PgPolicyStore;
  readonly #db: SyncBridge;
  readonly #available: AvailableIndex;
  /** The lease token the index was built under (-1: built while not contending). */
  #indexToken = -1;
  /** Transaction depth: 0 = none open; n > 1 = savepoints. */
  #depth = 0;
  /** Whether the open transaction's BEGIN was sent (with its first statement). */
  #begun = false;

  constructor(opts: PgCatalogOptions) {
    this.#db = new SyncBridge(opts.url, opts.statementTimeoutMs ?? 10_000);
    try {
      const m = migrate(this.#db);
      this.schemaVersion = m.schemaVersion;
      this.pagingKey = m.pagingKey;
    } catch (e) {
      this.#db.close();
      throw e;
    }
    this.leadership = new PgLeaderLease(this.#db);
    this.policies = new PgPolicyStore(
      (steps) => this.#write(steps),
      (sql, params) => this.#read(sql, params),
      this.pagingKey,
    );
    this.#available = new AvailableIndex(() =>
      this.#read<Doc>(`SELECT doc FROM backups WHERE status = ${AVAILABLE}`).map((r) => parseBackup(r.doc)),
    );
  }

  /** Where the database is ("host:port/database"), for messages. */
  get where(): string {
    return this.#db.where;
  }

  /** A read: inside the transaction when one is open. */
  #read<R>(sql: string, params: unknown[] = []): R[] {
    return (this.#send([{ sql, params }], false)[0]?.rows ?? []) as R[];
  }

  /**
   * A write: inside the transaction when one is open, else a transaction of its own when it is fenced
   * (once granted) or has several statements, else one autocommitted statement.
   */
  #write(steps: Step[]): StepResult[] {
    return this.#send(steps, true);
  }

  /**
   * Sends steps. Inside transaction(f), the first statement carries the BEGIN and the fence check (one
   * round trip saved); a FencedError also tells the lease that we no longer lead.
   */
  #send(steps: Step[], write: boolean): StepResult[] {
    const fence = this.leadership.fence;
    let tx: TxMode;
    if (this.#depth > 0) {
      tx = this.#begun ? "in" : "open";
      this.#begun = true;
    } else tx = write && (fence || steps.length > 1) ? "self" : "none";
    try {
      return this.#db.run(steps, tx, tx === "self" || tx === "open" ? fence : undefined);
    } catch (e) {
      if (e instanceof FencedError) this.leadership.deposed();
      // A write abandoned at its deadline may still have committed: the index is rebuilt from the table.
      if (write) this.#available.invalidate();
      throw e;
    }
  }

  transaction<T>(f: () => T): T {
    const depth = this.#depth;
    const sp = `sp${depth}`;
    if (depth > 0) this.#write([{ sql: `SAVEPOINT ${sp}` }]);
    this.#depth = depth + 1;
    try {
      const r = f();
      if (depth > 0) this.#write([{ sql: `RELEASE SAVEPOINT ${sp}` }]);
      else if (this.#begun) this.#db.run([], "commit");
      return r;
    } catch (e) {
      try {
        if (depth > 0) this.#write([{ sql: `ROLLBACK TO SAVEPOINT ${sp}` }]);
        else if (this.#begun) this.#db.run([], "rollback");
      } catch {
        // Connection gone: the server rolled it back.
      }
      // The index may hold writes that are undone.
      this.#available.invalidate();
      throw e;
    } finally {
      this.#depth = depth;
      if (depth === 0) this.#begun = false;
    }
  }

  /** The AVAILABLE index when it is right to use it (module comment), else undefined (ask SQL). */
  #index(): AvailableIndex | undefined {
    const lease = this.leadership;
    if (!lease.contender) return this.#available;
    const t = lease.leadingToken;
    if (t === undefined) {
      // Not (surely) leading: others may write; the next lead rebuilds the index.
      this.#indexToken = -1;
      return undefined;
    }
    if (t !== this.#indexToken) {
      this.#available.invalidate();
      this.#indexToken = t;
    }
    return this.#available;
  }

  upsertAgent(a: AgentRecord): void {
    this.#write([
      {
        sql: "INSERT INTO agents (agent_id, cluster, doc) VALUES ($1, $2, $3) ON CONFLICT (agent_id) DO UPDATE SET cluster = excluded.cluster, doc = excluded.doc",
        params: [a.agentId, a.clusterName, JSON.stringify(a)],
      },
    ]);
  }

  listAgents(): AgentRecord[] {
    return this.#read<Doc>("SELECT doc FROM agents ORDER BY cluster, agent_id").map(
      (r) => JSON.parse(r.doc) as AgentRecord,
    );
  }

  clusterPins(): Array<{ name: string; fsid: string; pinnedBy: string }> {
    return this.#read<{ name: string; fsid: string; pinnedBy: string }>(
      'SELECT name, fsid, pinned_by AS "pinnedBy" FROM clusters ORDER BY name',
    );
  }

  removeAgent(agentId: string): boolean {
    const [r] = this.#write([{ sql: "DELETE FROM agents WHERE agent_id = $1", params: [agentId] }]);
    return (r?.rowCount ?? 0) > 0;
  }

  pinClusterFsid(cluster: string, fsid: string, agentId: string): ClusterPin {
    const [r] = (this.#write([
      {
        sql: "INSERT INTO clusters (name, fsid, pinned_by, pinned_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        params: [cluster, fsid, agentId, Date.now()],
      },
      { sql: "SELECT fsid, pinned_by, pinned_at FROM clusters WHERE name = $1", params: [cluster] },
    ])[1]?.rows ?? []) as Array<{ fsid: string; pinned_by: string; pinned_at: number }>;
    if (!r) throw new Error(`cluster ${cluster} has no pin after pinning it`);
    return { fsid: r.fsid, pinnedBy: r.pinned_by, pinnedAt: Number(r.pinned_at) };
  }

  insertBackup(b: Backup): void {
    this.#write([
      {
        sql: `INSERT INTO backups (${BACKUP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
        params: backupParams(b),
      },
    ]);
    this.#available.put(b);
  }

  getBackup(id: string): Backup | undefined {
    const [r] = this.#read<Doc>("SELECT doc FROM backups WHERE id = $1", [id]);
    return r ? parseBackup(r.doc) : undefined;
  }

  updateBackup(b: Backup): void {
    const p = backupParams(b);
    const [r] = this.#write([
      {
        sql: "UPDATE backups SET status = $2, policy = $3, completed_at = $4, verified_at = $5, doc = $6 WHERE id = $1",
        params: [p[0], p[1], p[8], p[10], p[11], p[12]],
      },
    ]);
    if (r?.rowCount !== 1) throw new Error(`backup ${b.id} is not in the catalog`);
    this.#available.put(b);
  }

  listBackups(f: BackupFilter, pageSize: number, pageToken: string): Page<Backup> {
    const scope = pageScope("backups", f);
    const w = backupWhere(f);
    w.after(decodePageToken(this.pagingKey, scope, pageToken));
    const rows = this.#read<Keyed>(
      `SELECT id, created_at, doc FROM backups ${w.sql} ORDER BY created_at DESC, id DESC LIMIT ${pageSize + 1}`,
      w.params,
    );
    return keysetPage(rows, pageSize, (r) => parseBackup(r.doc), positionOf, this.pagingKey, scope);
  }

  lastSuccessByVolume(): Array<{ cluster: string; pool: string; namespace: string; image: string; at: number }> {
    const idx = this.#index();
    if (idx) return idx.lastSuccessByVolume();
    return this.#read<{ cluster: string; pool: string; namespace: string; image: string; at: number }>(
      `SELECT cluster, pool, namespace, image, max(completed_at) AS at FROM backups WHERE status = ${AVAILABLE} AND completed_at IS NOT NULL GROUP BY cluster, pool, namespace, image`,
    ).map((r) => ({ ...r, at: Number(r.at) }));
  }

  availableBackupsOfVolume(cluster: string, pool: string, namespace: string, image: string): AvailableBackup[] {
    const idx = this.#index();
    if (idx) return idx.of(cluster, pool, namespace, image);
    return this.#read<Doc>(
      `SELECT doc FROM backups WHERE cluster = $1 AND pool = $2 AND namespace = $3 AND image = $4 AND status = ${AVAILABLE} ORDER BY created_at, id`,
      [cluster, pool, namespace, image],
    ).map((r) => availableOf(parseBackup(r.doc)));
  }

  backupsOfVolume(cluster: string, pool: string, namespace: string, image: string, status?: Statuses): Backup[] {
    const statuses = statusList(status);
    const only = statuses.length ? ` AND status IN (${statuses.map((_, i) => `$${i + 5}`).join(", ")})` : "";
    return this.#read<Doc>(
      `SELECT doc FROM backups WHERE cluster = $1 AND pool = $2 AND namespace = $3 AND image = $4${only} ORDER BY created_at, id`,
      [cluster, pool, namespace, image, ...statuses],
    ).map((r) => parseBackup(r.doc));
  }

  pruneHistory(beforeMs: number, limit: number): { backups: number; jobs: number } {
    const [b, j] = this.#write([
      { sql: PRUNE.backups, params: [beforeMs, limit] },
      { sql: PRUNE.jobs, params: [beforeMs, limit] },
    ]);
    return { backups: b?.rowCount ?? 0, jobs: j?.rowCount ?? 0 };
  }

  goneHistoryCandidates(beforeMs: number, after: VolumeRef | null, limit: number): VolumeRef[] {
    const a = after ?? { cluster: "", pool: "", namespace: "", image: "" };
    return this.#read<VolumeRef>(PRUNE.goneCandidates, [beforeMs, limit, a.cluster, a.pool, a.namespace, a.image]).map(
      (r) => ({ cluster: r.cluster, pool: r.pool, namespace: r.namespace, image: r.image }),
    );
  }

  pruneGoneVolume(v: VolumeRef, beforeMs: number, limit: number): number {
    const [r] = this.#write([
      { sql: PRUNE.pruneGone, params: [beforeMs, limit, v.cluster, v.pool, v.namespace, v.image] },
    ]);
    return r?.rowCount ?? 0;
  }

  insertJob(j: JobRecord): void {
    this.#write([
      {
        sql: "INSERT INTO jobs (id, state, kind, backup_id, idempotency_key, created_at, doc) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        params: jobParams(j),
      },
    ]);
  }

  getJob(id: string): JobRecord | undefined {
    const [r] = this.#read<Doc>("SELECT doc FROM jobs WHERE id = $1", [id]);
    return r ? parseJob(r.doc) : undefined;
  }

  updateJob(j: JobRecord): void {
    const [r] = this.#write([
      { sql: "UPDATE jobs SET state = $2, doc = $3 WHERE id = $1", params: [j.id, j.state, JSON.stringify(j)] },
    ]);
    if (r?.rowCount !== 1) throw new Error(`job ${j.id} is not in the catalog`);
  }

  jobByIdempotencyKey(key: string): JobRecord | undefined {
    const [r] = this.#read<Doc>("SELECT doc FROM jobs WHERE idempotency_key = $1", [key]);
    return r ? parseJob(r.doc) : undefined;
  }

  activeJobs(): JobRecord[] {
    return this.#read<Doc>(
      `SELECT doc FROM jobs WHERE state IN (${JobState.JOB_STATE_QUEUED}, ${JobState.JOB_STATE_RUNNING}) ORDER BY created_at, id`,
    ).map((r) => parseJob(r.doc));
  }

  activeJob(id: string): JobRecord | undefined {
    const [r] = this.#read<Doc>(
      `SELECT doc FROM jobs WHERE id = $1 AND state IN (${JobState.JOB_STATE_QUEUED}, ${JobState.JOB_STATE_RUNNING})`,
      [id],
    );
    return r ? parseJob(r.doc) : undefined;
  }

  /** As its own backup or under one of its backup locks (an element of `locks`: after "[" or ","; active-jobs.ts). */
  backupInUse(backupId: string): boolean {
    return (
      this.#read(
        `SELECT 1 FROM jobs WHERE state IN (${JobState.JOB_STATE_QUEUED}, ${JobState.JOB_STATE_RUNNING})
           AND (backup_id = $1 OR doc LIKE '%["backup:' || $1 || '%' OR doc LIKE '%,"backup:' || $1 || '%') LIMIT 1`,
        [backupId],
      ).length > 0
    );
  }

  listJobs(f: JobFilter, pageSize: number, pageToken: string): Page<JobRecord> {
    const scope = pageScope("jobs", f);
    const w = jobWhere(f);
    w.after(decodePageToken(this.pagingKey, scope, pageToken));
    const rows = this.#read<Keyed>(
      `SELECT id, created_at, doc FROM jobs ${w.sql} ORDER BY created_at DESC, id DESC LIMIT ${pageSize + 1}`,
      w.params,
    );
    return keysetPage(rows, pageSize, (r) => parseJob(r.doc), positionOf, this.pagingKey, scope);
  }

  close(): void {
    this.#db.close();
  }
}

const positionOf = (r: Keyed) => ({ createdAt: Number(r.created_at), id: r.id });
