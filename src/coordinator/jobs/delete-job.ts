/**
 * A DELETE job of a backup (available, corrupt, failed, or deleted with its delete unfinished), by
 * DeleteBackup (api/restore-delete.ts), and of an available one by policy retention:
 * it holds the volume's and the backup's locks and runs on an agent of the backup's cluster. The caller
 * checks the backup may go and marks it DELETING in the transaction that inserts the job.
 */
import { BackupStatus, JobKind } from "../../gen/rbdbackup/v1/backup_service";
import type { Backup } from "../model";
import { lockOfBackup, lockOfVolume } from "../scheduler";
import { fingerprint, type JobSpec } from "./new-job";

/** The fingerprint of a delete request of a backup. */
export const deleteFingerprint = (backupId: string): string => fingerprint("delete", { backupId });

export function deleteJobSpec(b: Backup, idempotencyKey: string): JobSpec {
  if (!b.volume || !b.location) throw new Error(`backup ${b.id} has no volume or location`);
  return {
    kind: JobKind.JOB_KIND_DELETE,
    backupId: b.id,
    volume: b.volume,
    operation:
      b.status === BackupStatus.BACKUP_STATUS_FAILED ? { kind: "delete", failedBackup: true } : { kind: "delete" },
    idempotencyKey,
    fingerprint: deleteFingerprint(b.id),
    locks: [lockOfVolume(b.volume), lockOfBackup(b.id)],
    execCluster: b.location.cluster,
    peerCluster: "",
  };
}
