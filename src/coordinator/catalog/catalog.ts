/**
 * The catalog: agents, backups and jobs, behind one interface so the storage can change (SQLite, one
 * file, by default — sqlite.ts; PostgreSQL for several coordinators — pg/catalog.ts). Calls are
 * synchronous and each is atomic; `transaction` groups several. The catalog is an index: everything a
 * restore needs also lives in the backup cluster (base image, snapshots, metadata objects).
 */
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { AgentRecord, Backup, BackupFilter, JobFilter, JobRecord } from "../model";
import type { AvailableBackup } from "./available-index";
import type { Statuses } from "./filters";
import type { LeaderLease } from "./leader-lease";
import type { PolicyStore } from "./policy-store";

export type { AvailableBackup };

export interface Page<T> {
  items: T[];
  /** Opaque; "" on the last page. */
  next: string;
}

/** The fsid a cluster name is bound to: the first registration of the name wins. */
export interface ClusterPin {
  fsid: string;
  /** The agent whose registration pinned it, and when (epoch ms). */
  pinnedBy: string;
  pinnedAt: number;
}

/**
 * The fsid cluster `name` is pinned to (its first agent's registration), "" when none ever registered.
 * The pin, not the agents: it stays when a retired agent is forgotten (ForgetAgent). An agent's record
 * answers for a catalog whose agents registered before pins existed.
 */
export function registeredFsid(catalog: Pick<Catalog, "listAgents" | "clusterPins">, name: string): string {
  return (
    catalog.clusterPins().find((p) => p.name === name)?.fsid ??
    catalog.listAgents().find((a) => a.clusterName === name)?.clusterFsid ??
    ""
  );
}

/** Every cluster name ↔ fsid the catalog knows: the pins, then agents' records of clusters without one. */
export function knownClusters(
  catalog: Pick<Catalog, "listAgents" | "clusterPins">,
): Array<{ name: string; fsid: string }> {
  const out = catalog.clusterPins().map((p) => ({ name: p.name, fsid: p.fsid }));
  for (const a of catalog.listAgents())
    if (!out.some((c) => c.name === a.clusterName)) out.push({ name: a.clusterName, fsid: a.clusterFsid });
  return out;
}

export interface Catalog {
  transaction<T>(f: () => T): T;

  /** The store ("sqlite" or "postgresql") and the schema version it is at. */
  readonly kind: "sqlite" | "postgresql";
  readonly schemaVersion: number;
  /**
   * The key page tokens are signed with (page-token.ts): random, made once per catalog and kept in it,
   * so every coordinator sharing the catalog accepts the others' tokens.
   */
  readonly pagingKey: Buffer;
  /** Leadership among coordinators sharing this catalog (PostgreSQL); undefined = one coordinator. */
  readonly leadership?: LeaderLease | undefined;

  /** Protection policies and their per-volume records (policy-store.ts). */
  readonly policies: PolicyStore;

  upsertAgent(a: AgentRecord): void;
  listAgents(): AgentRecord[];
  /** Removes the agent's record (ForgetAgent); false when none had that id. */
  removeAgent(agentId: string): boolean;
  /** Every cluster's pin (name → fsid), by name. */
  clusterPins(): Array<{ name: string; fsid: string; pinnedBy: string }>;
  /** Pins `cluster` to `fsid` unless it is pinned already; returns the pin in force (compare its fsid). */
  pinClusterFsid(cluster: string, fsid: string, agentId: string): ClusterPin;

  insertBackup(b: Backup): void;
  getBackup(id: string): Backup | undefined;
  updateBackup(b: Backup): void;
  listBackups(filter: BackupFilter, pageSize: number, pageToken: string): Page<Backup>;
  /** Per volume with an available backup: when its newest available backup completed (epoch ms). */
  lastSuccessByVolume(): Array<{ cluster: string; pool: string; namespace: string; image: string; at: number }>;
  /** The AVAILABLE backups of a volume, oldest first, as kept in memory (available-index.ts: no row read). */
  availableBackupsOfVolume(cluster: string, pool: string, namespace: string, image: string): AvailableBackup[];
  /**
   * Every backup of a volume (any status; only those in `status` when it is given: one or several),
   * oldest first. With a status the store reads only those rows through the (volume, status) index: a
   * volume's history grows by a DELETED row a run, for years, so what runs per job names its statuses.
   */
  backupsOfVolume(cluster: string, pool: string, namespace: string, image: string, status?: Statuses): Backup[];

  /**
   * History created before `beforeMs` (epoch ms) removed, at most `limit` rows of each table, in one
   * transaction (history.ts calls it in batches): DELETED backups nothing needs any more (history-sql.ts says
   * the rules: not "delete unfinished", no job of the window names it, its volume backed up since by a
   * BACKUP job that ended), and
   * finished jobs (SUCCEEDED, FAILED, CANCELLED) whose backup record is gone — a kept record keeps every
   * job that names it (the one that made it, its restores, which failback reads, its verifications,
   * retention's DELETE keys). FAILED backups stay. How many rows of each went.
   */
  pruneHistory(beforeMs: number, limit: number): { backups: number; jobs: number };

  /**
   * Volumes whose DELETED records pruneHistory keeps only because no backup of the window swept the
   * volume — it has no backup record of any status created since `beforeMs` — in key order after `after`
   * (null: from the first), at most `limit` (history.ts asks an agent whether each is gone).
   */
  goneHistoryCandidates(beforeMs: number, after: VolumeRef | null, limit: number): VolumeRef[];

  /**
   * A volume's DELETED records as pruneHistory would remove them, for a volume whose source image an
   * agent found gone (no snapshot of it is left to sweep): at most `limit`, and none if a backup of the
   * window appeared meanwhile. How many went (their jobs go at pruneHistory's next call).
   */
  pruneGoneVolume(v: VolumeRef, beforeMs: number, limit: number): number;

  /** Fails with a UNIQUE error when the idempotency key is taken. */
  insertJob(j: JobRecord): void;
  getJob(id: string): JobRecord | undefined;
  updateJob(j: JobRecord): void;
  jobByIdempotencyKey(key: string): JobRecord | undefined;
  /** Jobs that are QUEUED or RUNNING, oldest first. */
  activeJobs(): JobRecord[];
  /**
   * The job when it is QUEUED or RUNNING, else undefined (a fresh record, like getJob's). A store that
   * keeps its active jobs in memory answers without a query: agents' heartbeats, progress and outcomes,
   * and the policy runner's tick, ask it for jobs that are mostly running.
   */
  activeJob(id: string): JobRecord | undefined;
  /**
   * Whether a QUEUED or RUNNING job uses the backup (its backup_id): retention's pin, asked for each
   * backup it weighs, without reading every active job (SQLite: from memory).
   */
  backupInUse(backupId: string): boolean;
  listJobs(filter: JobFilter, pageSize: number, pageToken: string): Page<JobRecord>;

  close(): void;
}
