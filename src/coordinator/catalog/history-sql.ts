/**
 * pruneHistory's statements (catalog.ts), one text for both stores — they differ only in placeholders
 * and in how a JSON field is read. A DELETED backup goes only when nothing may still need its record: its
 * delete finished (not "delete unfinished": DeleteBackup removes what is left by it), no job named it
 * within the window (its delete ended before it), and the volume has a backup made within the window
 * (whose end swept the volume after the delete: a source snapshot of the backup left by a failed sweep
 * went then; a sweep keeps snapshots of ids it does not know). FAILED backups stay (their attempt may have
 * left data that only a DeleteBackup of the record removes). Finished jobs go when they name no live
 * backup.
 */
import { BackupStatus, JobState } from "../../gen/rbdbackup/v1/backup_service";
import { DELETE_UNFINISHED } from "../model";

const ACTIVE = `${JobState.JOB_STATE_QUEUED}, ${JobState.JOB_STATE_RUNNING}`;
const FINISHED = `${JobState.JOB_STATE_SUCCEEDED}, ${JobState.JOB_STATE_FAILED}, ${JobState.JOB_STATE_CANCELLED}`;
const GONE = `${BackupStatus.BACKUP_STATUS_DELETED}, ${BackupStatus.BACKUP_STATUS_FAILED}`;

export interface HistoryPlaceholders {
  /** The window's start as the backups table stores created_at (SQLite: ISO text; PostgreSQL: epoch ms). */
  backupsBefore: string;
  /** The window's start as the jobs table stores created_at (epoch ms). */
  jobsBefore: string;
  limit: string;
  /** The expression reading the backup document's `error` (NULL when absent). */
  backupError: string;
}

export function historySql(p: HistoryPlaceholders): { backups: string; jobs: string } {
  return {
    backups: `DELETE FROM backups WHERE id IN (SELECT b.id FROM backups b
  WHERE b.status = ${BackupStatus.BACKUP_STATUS_DELETED} AND b.created_at < ${p.backupsBefore}
    AND COALESCE(${p.backupError}, '') NOT LIKE '${DELETE_UNFINISHED.trim()}%'
    AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.backup_id = b.id AND (j.state IN (${ACTIVE}) OR j.created_at >= ${p.jobsBefore}))
    AND EXISTS (SELECT 1 FROM backups n WHERE n.cluster = b.cluster AND n.pool = b.pool AND n.namespace = b.namespace
      AND n.image = b.image AND n.created_at >= ${p.backupsBefore})
  LIMIT ${p.limit})`,
    jobs: `DELETE FROM jobs WHERE id IN (SELECT j.id FROM jobs j
  WHERE j.state IN (${FINISHED}) AND j.created_at < ${p.jobsBefore}
    AND NOT EXISTS (SELECT 1 FROM backups b WHERE b.id = j.backup_id AND b.status NOT IN (${GONE}))
  LIMIT ${p.limit})`,
  };
}
