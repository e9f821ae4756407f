/** What the API shows of the coordinator's records (model.ts → the public messages). */
import { RestoreResult, VerifyResult } from "../gen/rbdbackup/v1/agent";
import { type Backup, type Job, JobKind, JobState } from "../gen/rbdbackup/v1/backup_service";
import type { Catalog } from "./catalog/catalog";
import type { JobRecord } from "./model";
import type { LiveProgress } from "./scheduler";

const date = (ms: number): Date | undefined => (ms ? new Date(ms) : undefined);

export function jobView(j: JobRecord, catalog: Catalog, live: LiveProgress | undefined): Job {
  // Read once: a listing views a page of jobs, each with its backup.
  const backup = catalog.getBackup(j.backupId);
  return {
    id: j.id,
    kind: j.kind,
    state: j.state,
    backupId: j.backupId,
    volume: j.volume,
    idempotencyKey: j.idempotencyKey,
    attempts: j.attempts,
    maxAttempts: j.maxAttempts,
    errorCode: j.errorCode,
    errorMessage: j.errorMessage,
    agentId: j.agentId,
    waitingReason: j.waitingReason,
    progress: live
      ? {
          phase: live.phase,
          bytesDone: live.bytesDone,
          bytesTotal: live.bytesTotal,
          bytesTransferred: live.bytesTransferred,
          rateBytesPerSecond: live.rateBytesPerSecond,
        }
      : undefined,
    createdAt: date(j.createdAt),
    startedAt: date(j.startedAt),
    finishedAt: date(j.finishedAt),
    nextAttemptAt: date(j.nextAttemptAt),
    backup,
    restore: j.kind === JobKind.JOB_KIND_RESTORE && j.result ? RestoreResult.fromJSON(j.result) : undefined,
    warnings: j.warnings,
    cancelRequested: j.cancelRequested,
    verify: j.kind === JobKind.JOB_KIND_VERIFY && j.result ? VerifyResult.fromJSON(j.result) : undefined,
    bytesTransferredAllAttempts: bytesAllAttempts(j, backup, live),
  };
}

/** Data bytes sent by the failed attempts, plus the running attempt's so far or the succeeded one's. */
function bytesAllAttempts(j: JobRecord, backup: Backup | undefined, live: LiveProgress | undefined): number {
  let current = live?.bytesTransferred ?? 0;
  if (!live && j.state === JobState.JOB_STATE_SUCCEEDED) {
    if (j.kind === JobKind.JOB_KIND_BACKUP) current = backup?.dataBytesSent ?? 0;
    else if (j.kind === JobKind.JOB_KIND_RESTORE && j.result) current = RestoreResult.fromJSON(j.result).dataBytesSent;
  }
  return (j.bytesEarlierAttempts ?? 0) + current;
}
