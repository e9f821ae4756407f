/**
 * RestoreBackup and DeleteBackup: jobs on an existing, available backup (a CORRUPT one: deleted like an
 * available one; restored only with allow_corrupt). A restore locks its target
 * volume and the backup (refused at once when another job uses the target); a CLONE restore makes the
 * target on the backup's own cluster and runs there (no transfer). A delete locks the backup and its
 * volume's chain and marks the backup DELETING in the same transaction as its job; it is refused while
 * clones depend on the backup (./clones.ts).
 */
import type { CallContext } from "nice-grpc-common";
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "../../common/errors";
import { RestoreMode } from "../../gen/rbdbackup/v1/agent";
import {
  type Backup,
  BackupStatus,
  type DeleteBackupRequest,
  type Job,
  JobKind,
  JobState,
  RestoreBackupRequest,
} from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import { deleteFingerprint, deleteJobSpec } from "../jobs/delete-job";
import { fingerprint } from "../jobs/new-job";
import { probe } from "../jobs/probes";
import { type JobRecord, volumeLabel } from "../model";
import { deleteUnfinished, lockOfBackup, lockOfVolume, sharedLockOfBackup } from "../scheduler";
import * as v from "../validate";
import type { Admission } from "./admission";
import { refuseWhileCloned } from "./clones";
import type { ApiDeps } from "./deps";

export async function restoreBackup(
  deps: ApiDeps,
  adm: Admission,
  req: RestoreBackupRequest,
  ctx: CallContext,
  /** The fingerprint the job's idempotency key is kept with (FailoverVolume's own: its request, not this one). */
  keptFingerprint?: string,
  /** More writes in the transaction that queues the job (FailoverVolume pauses the volume's protection). */
  alsoWrite?: (job: JobRecord) => void,
): Promise<Job> {
  v.uuid(req.backupId, "backup_id");
  const target = v.volumeRef(req.target, "target");
  v.restoreMode(req.mode);
  if (req.mode === RestoreMode.RESTORE_MODE_FAILBACK) {
    throw invalidArgument("mode: FAILBACK is FailbackVolume's (it names the failed-over volume to send back)");
  }
  const clone = req.mode === RestoreMode.RESTORE_MODE_CLONE;
  if (req.flatten && !clone) throw invalidArgument("flatten: only a CLONE restore can be flattened (mode CLONE)");
  if (req.allowOpen && req.mode !== RestoreMode.RESTORE_MODE_ORIGINAL) {
    throw invalidArgument("allow_open: only a restore over an existing volume (mode ORIGINAL) writes a volume in use");
  }
  v.idempotencyKey(req.idempotencyKey);
  v.transferOptions(req.transfer);
  const fp = fingerprint(
    "restore",
    RestoreBackupRequest.toJSON({ ...req, idempotencyKey: "", transfer: v.transferOptions(req.transfer) }),
  );
  const again = adm.replay(req.idempotencyKey, keptFingerprint ?? fp);
  if (again) return adm.view(again);
  const b = deps.catalog.getBackup(req.backupId);
  if (!b?.location) throw notFound(`backup ${req.backupId} not found`);
  requireRestorable(b, req.allowCorrupt);
  adm.knownCluster(target.cluster, "target.cluster");
  if (clone && target.cluster !== b.location.cluster) {
    throw invalidArgument(
      `target.cluster: mode CLONE makes the target on the backup's own cluster ${b.location.cluster}, not on ${target.cluster}`,
    );
  }
  deps.sessions.any(b.location.cluster);
  requireTargetFree(deps, target);
  await checkTarget(deps, target, req.mode, ctx.signal);
  const job = adm.newJob({
    kind: JobKind.JOB_KIND_RESTORE,
    backupId: b.id,
    volume: target,
    operation: {
      kind: "restore",
      target,
      mode: req.mode,
      ...(req.flatten ? { flatten: true } : {}),
      ...(req.allowOpen ? { allowOpen: true } : {}),
      ...(req.skipImageMeta && !clone ? { skipImageMeta: true } : {}),
      ...v.transferField(req.transfer),
    },
    idempotencyKey: req.idempotencyKey,
    fingerprint: keptFingerprint ?? fp,
    // The backup only read: other restores, verifies and exports of it run beside this one.
    locks: [lockOfVolume(target), sharedLockOfBackup(b.id)],
    execCluster: b.location.cluster,
    peerCluster: clone ? "" : target.cluster,
  });
  // Again with the insert, as things are now: another restore onto the target may have been admitted
  // while the probe ran, and the backup may have been given to a DELETE meanwhile — unless that one is
  // this very request again (its retry): the insert then answers with its job.
  return adm.submit(job, () => {
    if (!(req.idempotencyKey && deps.catalog.jobByIdempotencyKey(req.idempotencyKey))) {
      requireTargetFree(deps, target);
      const now = deps.catalog.getBackup(b.id);
      if (!now) throw notFound(`backup ${b.id} not found (deleted while the target was checked)`);
      requireRestorable(now, req.allowCorrupt);
    }
    alsoWrite?.(job);
  });
}

/** AVAILABLE; CORRUPT only when the caller says so (allow_corrupt). */
function requireRestorable(b: Backup, allowCorrupt: boolean): void {
  if (b.status === BackupStatus.BACKUP_STATUS_AVAILABLE) return;
  if (b.status === BackupStatus.BACKUP_STATUS_CORRUPT) {
    if (allowCorrupt) return;
    const at = b.integrity?.firstBadLength
      ? ` at offset ${b.integrity.firstBadOffset} (+${b.integrity.firstBadLength} bytes)`
      : "";
    throw failedPrecondition(
      `backup ${b.id} is CORRUPT: a verification found its stored data differs${at}` +
        `${b.integrity?.corruptReason ? ` (${b.integrity.corruptReason})` : ""}; ` +
        "restore another backup, or this one anyway with allow_corrupt",
    );
  }
  throw failedPrecondition(`backup ${b.id} is ${BackupStatus[b.status]}; only an available backup can be restored`);
}

function requireTargetFree(deps: ApiDeps, target: VolumeRef): void {
  const busy = deps.catalog.activeJobs().find((j) => j.locks.includes(lockOfVolume(target)));
  if (busy) {
    throw failedPrecondition(
      `target ${volumeLabel(target)} is in use by job ${busy.id} (${JobKind[busy.kind]}, ${JobState[busy.state]}); retry when it has finished`,
    );
  }
}

/** NEW and CLONE need a name that is free; ORIGINAL restores over a volume that exists. */
async function checkTarget(deps: ApiDeps, target: VolumeRef, mode: RestoreMode, signal: AbortSignal): Promise<void> {
  const p = await probe(deps.sessions, target.cluster, { pools: [], image: target }, signal, "target");
  if (mode !== RestoreMode.RESTORE_MODE_ORIGINAL && p.imageExists) {
    throw alreadyExists(`target ${volumeLabel(target)} exists; restore to a new name, or over it with mode ORIGINAL`);
  }
  if (mode === RestoreMode.RESTORE_MODE_ORIGINAL && !p.imageExists) {
    throw notFound(`target ${volumeLabel(target)} not found (mode ORIGINAL restores over an existing volume)`);
  }
}

export async function deleteBackup(
  deps: ApiDeps,
  adm: Admission,
  req: DeleteBackupRequest,
  signal?: AbortSignal,
): Promise<Job> {
  const { catalog } = deps;
  v.uuid(req.backupId, "backup_id");
  v.idempotencyKey(req.idempotencyKey);
  const fp = deleteFingerprint(req.backupId);
  const again = adm.replay(req.idempotencyKey, fp);
  if (again) return adm.view(again);
  const b = deletable(deps, adm, req.backupId);
  await refuseWhileCloned(deps, b, signal);
  const job = adm.newJob(deleteJobSpec(b, req.idempotencyKey));
  // Checked again in the transaction, on the backup as it is now: the clones' probes awaited, and in
  // that time another delete, a verify (its CORRUPT mark) or a restore may have been admitted.
  return adm.submit(job, () => {
    const now = deletable(deps, adm, req.backupId);
    now.status = BackupStatus.BACKUP_STATUS_DELETING;
    catalog.updateBackup(now);
  });
}

/**
 * The backup, if it may be deleted now: found, no job on it, AVAILABLE, CORRUPT, FAILED (an attempt cut
 * short after its commit — the agent killed before it reported — leaves the snapshot and metadata on the
 * destination: the delete removes whatever is there), or DELETED 'delete unfinished' (else the refusal).
 */
function deletable(deps: ApiDeps, adm: Admission, backupId: string): Backup {
  const { catalog } = deps;
  const b = catalog.getBackup(backupId);
  if (!b?.volume || !b.location) throw notFound(`backup ${backupId} not found`);
  const holder = adm.activeHolder([lockOfBackup(b.id)]) ?? catalog.activeJobs().find((j) => j.backupId === b.id);
  if (holder) {
    throw failedPrecondition(
      `backup ${b.id} has a ${JobState[holder.state]} ${JobKind[holder.kind]} job ${holder.id}; cancel it or wait for it`,
    );
  }
  if (
    b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE &&
    b.status !== BackupStatus.BACKUP_STATUS_CORRUPT &&
    b.status !== BackupStatus.BACKUP_STATUS_FAILED &&
    !deleteUnfinished(b)
  ) {
    throw failedPrecondition(
      `backup ${b.id} is ${BackupStatus[b.status]}; only an available, corrupt or failed backup, or a deleted one whose delete did not finish, can be deleted`,
    );
  }
  return b;
}
