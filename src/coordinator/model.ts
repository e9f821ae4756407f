/**
 * The coordinator's records: what the catalog stores and the scheduler works on. Backups are the public
 * Backup message itself; a job carries, besides what the API shows, what the scheduler needs (the
 * operation's parameters, its lease, the locks it takes, the clusters whose slots it uses).
 */
import { timingSafeEqual } from "node:crypto";
import type { BackupMode, RestoreMode, VerifyMode } from "../gen/rbdbackup/v1/agent";
import type { Backup, JobKind, JobState } from "../gen/rbdbackup/v1/backup_service";
import type { TransferOptions, VolumeRef } from "../gen/rbdbackup/v1/common";

export type { Backup };

export interface Lease {
  token: string;
  attempt: number;
  agentId: string;
  /** Epoch ms. */
  expiresAt: number;
  /**
   * The expiry a new term (a restart, a new leader) gave it for its agent to come back (a lease time and
   * the reconnect grace). The next term gives it another only if its agent claimed it since (registered
   * again: the claim clears this field and moves expiresAt), so a leader that steps down and leads again
   * every few seconds does not keep a dead agent's lease alive forever — whatever lease time each
   * coordinator is configured with.
   */
  gracedUntil?: number;
  /** Before gracedUntil (older coordinators): when a term gave it one lease time; read, never written. */
  gracedAt?: number;
}

/**
 * An outcome the agent that ran it reported a success, until the side that holds the data confirms it
 * (the job stays RUNNING meanwhile; see scheduler/confirmation.ts): a backup, until an agent of the
 * destination cluster confirms the snapshot and the metadata object; a restore, until an agent of the
 * target cluster confirms the restored image (it exists, at the restored size).
 */
export interface Confirmation {
  /** What is confirmed; absent in records from before restores were confirmed: a backup. */
  kind?: "backup" | "restore";
  /** What the agent reported: a BackupResult (or RestoreResult) as JSON. */
  result: unknown;
  /** Epoch ms: when the destination could not be asked until then, the attempt fails. */
  deadline: number;
  /** Epoch ms of the next check, and the checks that could not get an answer so far. */
  nextCheckAt: number;
  checks: number;
  /**
   * Epoch ms of the new term that gave it a full timeout again: once (a flapping leader gives no more),
   * unless its deadline passed while no coordinator ran.
   */
  gracedAt?: number;
}

export type JobOperation =
  /**
   * forcedFull: set when an attempt is leased as FULL because the chain it would extend holds a CORRUPT
   * backup (scheduler/verify.ts): the reason, which the backup takes as its forced_full_reason.
   * transfer (here and on a restore): the request's TransferOptions, absent when they ask for nothing.
   */
  | { kind: "backup"; mode: BackupMode; maxSnapshots: number; forcedFull?: string; transfer?: TransferOptions }
  /**
   * flatten (CLONE only): queue a FLATTEN job for the target once the clone exists. source (FAILBACK
   * only): the failed-over volume whose content the target takes.
   */
  | {
      kind: "restore";
      target: VolumeRef;
      mode: RestoreMode;
      flatten?: boolean;
      /** ORIGINAL: restore while other clients have the target open (RestoreBackupRequest.allow_open). */
      allowOpen?: boolean;
      /** NEW, ORIGINAL: the backup's image-meta is not applied (RestoreBackupRequest.skip_image_meta). */
      skipImageMeta?: boolean;
      source?: VolumeRef;
      transfer?: TransferOptions;
    }
  /**
   * Remove the job's backup from its destination. `failedBackup`: the backup was FAILED (its attempt may
   * have left a snapshot and metadata there); a delete that fails leaves it FAILED again.
   */
  | { kind: "delete"; failedBackup?: boolean }
  /** Detach `target`, a CLONE restore of the job's backup, from the backup's snapshot. */
  | { kind: "flatten"; target: VolumeRef }
  /** Re-read the job's backup (or, SOURCE, its volume's snapshot) against its digest map. samplePercent: 1..100. */
  | { kind: "verify"; mode: VerifyMode; samplePercent: number }
  /** Stream the job's backup (from `fromBackupId`'s snapshot when set) as an rbd-diff stream, format 1 or 2. */
  | { kind: "export"; fromBackupId: string; format: number }
  /**
   * Write the job's backup from the ImportBackup caller's rbd-diff stream: into `baseImage` (a new one,
   * or the parent's at `fromSnapshot`), ending with snapshot `toSnapshot`; `metadataJson` is
   * backup.<id>.meta. `format`: the caller's DiffFormat (0 = detect).
   */
  | {
      kind: "import";
      format: number;
      baseImage: string;
      fromSnapshot: string;
      toSnapshot: string;
      metadataJson: string;
      /** The parent backup was itself imported (its stream's names may predate backup.<id>.meta's `import`). */
      parentImported?: boolean;
      /** Epoch ms: when the stream's data was taken (header.taken_at), the backup's completed_at once made. */
      takenAtMs?: number;
    };

export interface JobRecord {
  id: string;
  kind: JobKind;
  state: JobState;
  backupId: string;
  /** BACKUP: source volume; RESTORE, FLATTEN: target volume; DELETE, VERIFY: the backed-up volume. */
  volume: VolumeRef;
  idempotencyKey: string;
  /** Hash of the request that created the job (an idempotency key reused for another request is refused). */
  fingerprint: string;
  operation: JobOperation;
  attempts: number;
  maxAttempts: number;
  errorCode: string;
  errorMessage: string;
  agentId: string;
  waitingReason: string;
  /** Epoch ms; 0 = not yet. */
  createdAt: number;
  startedAt: number;
  finishedAt: number;
  nextAttemptAt: number;
  lease: Lease | null;
  cancelRequested: boolean;
  /** Exclusive locks ("vol:<cluster>/<pool>/<ns>/<image>", "backup:<id>"): one job per key runs at a time, in order. */
  locks: string[];
  /** The cluster whose agent runs it, and the other cluster of a transfer ("" = none). */
  execCluster: string;
  peerCluster: string;
  /** What the agent reported on success (BackupResult, RestoreResult or DeleteBackupDataResult as JSON). */
  result: unknown;
  warnings: string[];
  /** Ceph clients of agents that died holding an attempt: the next attempt's agent blocklists them. */
  fence: string[];
  /** Set while a backup's outcome waits for the destination's confirmation (absent in older records). */
  confirming?: Confirmation | null;
  /**
   * Attempts granted beyond maxAttempts, each for a retry that only waited for the previous attempt's
   * leftovers to be cleaned up (scheduler/retry-policy.ts); absent = 0.
   */
  extraAttempts?: number;
  /** Attempts an agent refused before any work (it was shutting down), given back; absent = 0. */
  refundedAttempts?: number;
  /**
   * A DELETE attempt ended without its agent's word (its lease expired, its agent restarted): it may have
   * removed the backup's snapshot. The job failing or cancelled then leaves the backup DELETED
   * ("delete unfinished"), never AVAILABLE with its data perhaps gone.
   */
  deleteFateUnknown?: boolean;
  /** Data bytes the failed attempts sent, as their last progress report said (absent = 0). */
  bytesEarlierAttempts?: number;
  /**
   * The other cluster's agent of the last attempt (a transfer's destination or target). A retry goes back
   * to it while it is connected: a cut-short transfer's hold (its resume point, a full backup's part-made
   * image) and its cleanup are that agent's own, and another agent of the cluster would find the image
   * held (ALREADY_EXISTS) or write beside that cleanup. Absent in older records.
   */
  lastPeerAgent?: string;
  /**
   * An attempt reported that it partly overwrote the target (a restore over the original, a failback:
   * PARTLY_OVERWRITTEN in its message). Should the job fail with a later attempt's message that does
   * not say so (one refused before it wrote: "this attempt changed nothing"), its message says it still.
   */
  targetOverwritten?: boolean;
}

export interface AgentRecord {
  agentId: string;
  clusterName: string;
  clusterFsid: string;
  version: string;
  transferAddress: string;
  capacity: number;
  defaultBackupPool: string;
  /** Its Ceph client's addresses (to fence it when it dies holding a lease). */
  cephClientAddrs: string;
  /** Epoch ms. */
  lastSeen: number;
}

export interface BackupFilter {
  cluster?: string;
  pool?: string;
  image?: string;
  volumeId?: string;
  locationCluster?: string;
  /** The policy whose run made it (Backup.policy). */
  policy?: string;
  /** Empty: every status but DELETED. */
  statuses?: number[];
  excludeDeleted?: boolean;
}

export interface JobFilter {
  state?: JobState;
  kind?: JobKind;
  backupId?: string;
}

/**
 * Backup.error of a backup whose snapshot a delete removed before failing (scheduler/transitions.ts
 * backupGone): DELETED, with leftovers (base image, metadata) that another DeleteBackup removes (and the
 * catalog's history keeps its record: catalog.ts pruneHistory).
 */
export const DELETE_UNFINISHED = "delete unfinished: ";

export const volumeKey = (v: VolumeRef): string => `${v.cluster}/${v.pool}/${v.namespace}/${v.image}`;
export const volumeLabel = (v: VolumeRef): string =>
  `${v.cluster}/${v.pool}/${v.namespace ? `${v.namespace}/` : ""}${v.image}`;

/** Whether two lease tokens are equal, in time that does not depend on where they differ. */
export function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
