/**
 * pruneHistory's statements (catalog.ts), one text for both stores — they differ only in placeholders
 * and in how a JSON field is read. A DELETED backup goes only when nothing may still need its record: its
 * delete finished (not "delete unfinished": DeleteBackup removes what is left by it), no job named it
 * within the window (its delete ended before it), and the volume has a backup made within the window by a
 * BACKUP job that ended (whose end swept the volume after the delete: a source snapshot of the backup left
 * by a failed sweep went then; a sweep keeps snapshots of ids it does not know — a backup still being
 * made, or an imported record, swept nothing). FAILED backups stay (their attempt may have left data that
 * only a DeleteBackup of the record removes). Finished jobs go once the backup they name is gone from the
 * catalog (a kept record keeps its jobs: the snapshot sweep reads max_snapshots from a backup's job).
 *
 * A volume no longer backed up never gets that backup of the window: its DELETED records would stay for
 * good (a Cinder or Kubernetes volume deleted after its backups were). `goneCandidates` lists such
 * volumes — records otherwise prunable, and no backup of any status within the window — in key order from
 * a cursor; `pruneGone` removes one's records once an agent said its source image is gone (no snapshot
 * left to sweep), re-checking in the same statement that no backup of the window appeared meanwhile.
 * Left out by both (a known limit): a volume whose only backups of the window were imported (no BACKUP
 * job) keeps its older DELETED records.
 */
import { BackupStatus, JobKind, JobState } from "../../gen/rbdbackup/v1/backup_service";
import { DELETE_UNFINISHED } from "../model";

const ACTIVE = `${JobState.JOB_STATE_QUEUED}, ${JobState.JOB_STATE_RUNNING}`;
const FINISHED = `${JobState.JOB_STATE_SUCCEEDED}, ${JobState.JOB_STATE_FAILED}, ${JobState.JOB_STATE_CANCELLED}`;

/** A volume's key columns (goneCandidates' rows, pruneGone's and the cursor's placeholders). */
export interface VolumeColumnPlaceholders {
  cluster: string;
  pool: string;
  namespace: string;
  image: string;
}

export interface HistoryPlaceholders {
  /** The window's start as the backups table stores created_at (SQLite: ISO text; PostgreSQL: epoch ms). */
  backupsBefore: string;
  /** The window's start as the jobs table stores created_at (epoch ms). */
  jobsBefore: string;
  limit: string;
  /** The expression reading the backup document's `error` (NULL when absent). */
  backupError: string;
  /** goneCandidates' cursor: the candidates come after this volume (all-empty strings: from the start). */
  after: VolumeColumnPlaceholders;
  /** pruneGone's volume. */
  volume: VolumeColumnPlaceholders;
}

export function historySql(p: HistoryPlaceholders): {
  backups: string;
  jobs: string;
  goneCandidates: string;
  pruneGone: string;
} {
  // A DELETED record old enough, whose delete finished, that no job of the window or still active names.
  const deletedLongAgo = `b.status = ${BackupStatus.BACKUP_STATUS_DELETED} AND b.created_at < ${p.backupsBefore}
    AND COALESCE(${p.backupError}, '') NOT LIKE '${DELETE_UNFINISHED.trim()}%'
    AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.backup_id = b.id AND (j.state IN (${ACTIVE}) OR j.created_at >= ${p.jobsBefore}))`;
  const sameVolume = "n.cluster = b.cluster AND n.pool = b.pool AND n.namespace = b.namespace AND n.image = b.image";
  const noBackupInWindow = `NOT EXISTS (SELECT 1 FROM backups n WHERE ${sameVolume} AND n.created_at >= ${p.backupsBefore})`;
  const a = p.after;
  const v = p.volume;
  return {
    backups: `DELETE FROM backups WHERE id IN (SELECT b.id FROM backups b
  WHERE ${deletedLongAgo}
    AND EXISTS (SELECT 1 FROM backups n JOIN jobs s ON s.backup_id = n.id
      WHERE ${sameVolume}
        AND n.created_at >= ${p.backupsBefore} AND s.kind = ${JobKind.JOB_KIND_BACKUP} AND s.state IN (${FINISHED}))
  LIMIT ${p.limit})`,
    goneCandidates: `SELECT DISTINCT b.cluster, b.pool, b.namespace, b.image FROM backups b
  WHERE ${deletedLongAgo} AND ${noBackupInWindow}
    AND (b.cluster, b.pool, b.namespace, b.image) > (${a.cluster}, ${a.pool}, ${a.namespace}, ${a.image})
  ORDER BY b.cluster, b.pool, b.namespace, b.image LIMIT ${p.limit}`,
    pruneGone: `DELETE FROM backups WHERE id IN (SELECT b.id FROM backups b
  WHERE b.cluster = ${v.cluster} AND b.pool = ${v.pool} AND b.namespace = ${v.namespace} AND b.image = ${v.image}
    AND ${deletedLongAgo} AND ${noBackupInWindow}
  LIMIT ${p.limit})`,
    jobs: `DELETE FROM jobs WHERE id IN (SELECT j.id FROM jobs j
  WHERE j.state IN (${FINISHED}) AND j.created_at < ${p.jobsBefore}
    AND NOT EXISTS (SELECT 1 FROM backups b WHERE b.id = j.backup_id)
  LIMIT ${p.limit})`,
  };
}
