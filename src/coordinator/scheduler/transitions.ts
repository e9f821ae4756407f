/**
 * Job state transitions, the only code that moves a job between states once it exists:
 *
 *   QUEUED ─lease─▶ RUNNING ─ok─▶ SUCCEEDED          (restore; delete: the backup becomes DELETED;
 *                      │                                 CLONE restore / flatten: the backup's clones, clones.ts;
 *                      │                                 verify: its integrity, CORRUPT on a mismatch, verify.ts)
 *                      │ backup ok ─▶ RUNNING, confirming ─confirmed by the destination─▶ SUCCEEDED (AVAILABLE)
 *                      │ restore ok ─▶ RUNNING, confirming ─confirmed by the target's agent─▶ SUCCEEDED
 *                      │                                  └ denied or unconfirmable ─▶ attempt failed
 *                      │ transient failure, attempts left ─▶ QUEUED after a backoff (retry-policy.ts)
 *                      │ other failure, or attempts spent  ─▶ FAILED (a backup being made → FAILED)
 *                      └ cancel requested                  ─▶ CANCELLED when the agent reports
 *   QUEUED ─cancel─▶ CANCELLED at once
 *   QUEUED, RUNNING (not confirming) ─abandon─▶ FAILED at once (EXPORT/IMPORT whose data never came)
 *
 * Every change is saved in the catalog and announced as a "job" event ("finished" for final states).
 */
import { Status } from "nice-grpc-common";
import { PARTLY_OVERWRITTEN } from "../../common/outcome-words";
import {
  BackupResult,
  DeleteBackupDataResult,
  ExportResult,
  FlattenResult,
  RestoreResult,
  VerifyResult,
} from "../../gen/rbdbackup/v1/agent";
import { BackupIntegrity, BackupStatus, JobKind, JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { JobOutcome } from "../../gen/rbdbackup/v1/session";
import { type Backup, type JobRecord, volumeLabel } from "../model";
import { cloneDetached, cloneMade, isCloneRestore } from "./clones";
import type { SchedulerContext } from "./context";
import { isFinal } from "./jobs";
import { isBaseInUse, isLeftover, LEFTOVER_RETRIES, type RetryDecision, retryDecision } from "./retry-policy";
import { DELETE_UNFINISHED, statusBeforeDelete, verified } from "./verify";

/** Announces a change; a final job also leaves the live progress. */
export function changed(ctx: SchedulerContext, j: JobRecord): void {
  ctx.emit("job", j.id);
  if (isFinal(j.state)) {
    ctx.progress.delete(j.id);
    ctx.emit("finished", j);
  }
}

/** Records why a queued job is not running yet (saved only when the reason changes). */
export function wait(ctx: SchedulerContext, j: JobRecord, reason: string): void {
  if (j.waitingReason === reason) return;
  j.waitingReason = reason;
  ctx.catalog.updateJob(j);
  changed(ctx, j);
}

export const retryReason = (at: number): string => `retrying after a failed attempt at ${new Date(at).toISOString()}`;

/** An attempt failed: queued again after a backoff when the failure is transient and attempts remain. */
export function attemptFailed(ctx: SchedulerContext, j: JobRecord, code: Status, message: string): void {
  // What this attempt sent counts in Job.bytes_transferred_all_attempts (a resumed retry sends only the rest).
  const sent = ctx.progress.get(j.id)?.bytesTransferred ?? 0;
  if (sent > 0) j.bytesEarlierAttempts = (j.bytesEarlierAttempts ?? 0) + sent;
  j.errorCode = Status[code] ?? String(code);
  j.errorMessage = message;
  j.lease = null;
  const confirming = j.confirming;
  j.confirming = null;
  if (
    j.cancelRequested &&
    confirming?.kind === "backup" &&
    j.operation.kind === "backup" &&
    code !== Status.DATA_LOSS
  ) {
    // The cancel came after the agent reported the backup made (it may well exist): too late to stop it,
    // and CANCELLED would say nothing exists. The attempt is retried like any failed confirmation (a
    // retry finds the backup committed and reports it); the cancel no longer applies. A restore has no
    // such retry (it would write the target again after the user said stop): it ends CANCELLED, as a
    // cancelled restore may leave its target written.
    j.cancelRequested = false;
    ctx.log.warn("a cancel came after the work was reported done; its confirmation failed and is retried", {
      job: j.id,
      code: j.errorCode,
      message,
    });
  } else if (j.cancelRequested) {
    finish(ctx, j, JobState.JOB_STATE_CANCELLED, Status.CANCELLED, "cancelled");
    return;
  }
  const next = retryDecision(ctx.cfg, j, code, ctx.random, message);
  if (next) requeue(ctx, j, message, next);
  else if (isLeftover(j, code, message)) {
    const still = isBaseInUse(j, code, message)
      ? "the base image is still open by another client"
      : "the previous attempt's image is still there";
    const waited = `${still} after ${LEFTOVER_RETRIES} waits of ${ctx.cfg.leftoverWaitMs} ms`;
    finish(ctx, j, JobState.JOB_STATE_FAILED, code, `${message} (${waited}; see the leftovers check)`);
  } else finish(ctx, j, JobState.JOB_STATE_FAILED, code, message);
}

function requeue(ctx: SchedulerContext, j: JobRecord, message: string, next: RetryDecision): void {
  if (next.extraAttempt) j.extraAttempts = (j.extraAttempts ?? 0) + 1;
  j.nextAttemptAt = ctx.now() + next.delayMs;
  j.state = JobState.JOB_STATE_QUEUED;
  j.waitingReason = retryReason(j.nextAttemptAt);
  ctx.catalog.updateJob(j);
  ctx.log.warn("attempt failed, retrying", { job: j.id, attempt: j.attempts, code: j.errorCode, message });
  ctx.progress.delete(j.id);
  ctx.emit("retry", j, j.errorCode);
  changed(ctx, j);
}

/** Ends a job (FAILED or CANCELLED here) and puts its backup in the matching state. */
export function finish(ctx: SchedulerContext, j: JobRecord, state: JobState, code: Status, message: string): void {
  ctx.catalog.transaction(() => {
    j.state = state;
    j.finishedAt = ctx.now();
    j.lease = null;
    j.confirming = null;
    j.waitingReason = "";
    if (state !== JobState.JOB_STATE_SUCCEEDED) {
      j.errorCode = Status[code] ?? String(code);
      j.errorMessage =
        j.targetOverwritten && !message.includes(PARTLY_OVERWRITTEN)
          ? `${message} (its target ${PARTLY_OVERWRITTEN} by an attempt of this job: restore or fail back again)`
          : message;
    }
    ctx.catalog.updateJob(j);
    if (state !== JobState.JOB_STATE_SUCCEEDED) backupAfterFailure(ctx, j, state, message);
  });
  ctx.log.info("job finished", { job: j.id, state: JobState[state], code: j.errorCode, message: j.errorMessage });
  changed(ctx, j);
  discardHeld(ctx, j);
}

/**
 * A DELETE whose attempt removed the backup's snapshot but failed after it: the backup is DELETED now (its
 * data is gone; `warnings` say what was left), so that the job's failure or cancel cannot make it AVAILABLE.
 */
export function backupGone(ctx: SchedulerContext, j: JobRecord, warnings: string[]): void {
  const b = ctx.catalog.getBackup(j.backupId);
  if (!b) return;
  b.status = BackupStatus.BACKUP_STATUS_DELETED;
  b.warnings = warnings;
  // Another DeleteBackup may run on it, to remove what is left.
  b.error = `${DELETE_UNFINISHED}${warnings.at(-1) ?? ""}`;
  ctx.catalog.updateBackup(b);
  ctx.log.warn("backup deleted, its delete unfinished", { job: j.id, backup: b.id, warnings });
}

/** A backup being made failed with its job; a backup being deleted is as it was again (AVAILABLE, CORRUPT or FAILED). */
function backupAfterFailure(ctx: SchedulerContext, j: JobRecord, state: JobState, message: string): void {
  const b = ctx.catalog.getBackup(j.backupId);
  if (!b) return;
  if (j.operation.kind === "backup" || j.operation.kind === "import") {
    b.status = BackupStatus.BACKUP_STATUS_FAILED;
    b.error = state === JobState.JOB_STATE_CANCELLED ? "cancelled" : `${j.errorCode}: ${message}`;
    b.completedAt = new Date(ctx.now());
    ctx.catalog.updateBackup(b);
  } else if (j.operation.kind === "delete" && b.status === BackupStatus.BACKUP_STATUS_DELETING) {
    if (j.deleteFateUnknown) {
      // An attempt may have removed its snapshot: not AVAILABLE again on a guess; DeleteBackup finishes it.
      backupGone(ctx, j, [...b.warnings, `an attempt of delete job ${j.id} ended without its agent's word`]);
      return;
    }
    b.status = statusBeforeDelete(b, j.operation.failedBackup === true);
    ctx.catalog.updateBackup(b);
  }
}

/**
 * The agent reported a backup made (or a restore done): the attempt's lease is done, but the job stays
 * RUNNING (holding its locks) until an agent of the cluster that holds the data — the backup's
 * destination, the restore's target — confirms it (confirmation.ts).
 */
export function awaitConfirmation(
  ctx: SchedulerContext,
  j: JobRecord,
  r: { $case: "backup"; value: BackupResult } | { $case: "restore"; value: RestoreResult },
): void {
  const now = ctx.now();
  j.lease = null;
  j.confirming = {
    kind: r.$case,
    result: r.$case === "backup" ? BackupResult.toJSON(r.value) : RestoreResult.toJSON(r.value),
    deadline: now + ctx.cfg.confirmTimeoutMs,
    nextCheckAt: now,
    checks: 0,
  };
  j.waitingReason = confirmingReason(j, "asking an agent of the cluster that holds it");
  ctx.catalog.updateJob(j);
  // The attempt's last progress stays while it is confirmed: Job.progress and the bytes of all attempts
  // do not go back meanwhile, and a failed confirmation counts its bytes (attemptFailed).
  ctx.log.info(`${r.$case} reported done; confirming it with the cluster that holds it`, {
    job: j.id,
    backup: j.backupId,
  });
  changed(ctx, j);
  ctx.kick();
}

export const confirmingReason = (j: JobRecord, what: string): string =>
  j.confirming?.kind === "restore" && j.operation.kind === "restore"
    ? `confirming the restore of backup ${j.backupId} with target cluster ${j.operation.target.cluster}: ${what}`
    : `confirming backup ${j.backupId} with its destination: ${what}`;

/** The agent reported success: the backup takes the result, the job is SUCCEEDED. */
export function succeeded(ctx: SchedulerContext, j: JobRecord, o: JobOutcome): void {
  const r = o.result;
  let queued: JobRecord | null = null;
  ctx.catalog.transaction(() => {
    const b = ctx.catalog.getBackup(j.backupId);
    if (r?.$case === "backup" && b) {
      const op = j.operation;
      // An import of older data: its completion is the data's time too (ImportBackupHeader.taken_at).
      const completedAt = op.kind === "import" && op.takenAtMs !== undefined ? op.takenAtMs : ctx.now();
      backupMade(ctx, b, r.value, op.kind === "backup" ? (op.forcedFull ?? "") : "", completedAt);
      j.warnings = r.value.warnings;
      j.result = BackupResult.toJSON(r.value);
    } else if (r?.$case === "delete" && b) {
      b.status = BackupStatus.BACKUP_STATUS_DELETED;
      b.warnings = r.value.warnings;
      if (b.error.startsWith(DELETE_UNFINISHED)) b.error = "";
      ctx.catalog.updateBackup(b);
      j.warnings = r.value.warnings;
      j.result = DeleteBackupDataResult.toJSON(r.value);
    } else if (r?.$case === "restore") {
      j.result = RestoreResult.toJSON(r.value);
      j.warnings = r.value.warnings;
      if (b && isCloneRestore(j)) queued = cloneMade(ctx, j, b);
    } else if (r?.$case === "export") {
      j.result = ExportResult.toJSON(r.value);
    } else if (r?.$case === "flatten") {
      j.result = FlattenResult.toJSON(r.value);
      j.warnings = r.value.warnings;
      if (b) cloneDetached(ctx, j, b);
    } else if (r?.$case === "verify") {
      j.result = VerifyResult.toJSON(r.value);
      j.warnings = r.value.warnings;
      if (b) verified(ctx, b, r.value);
    }
    j.state = JobState.JOB_STATE_SUCCEEDED;
    j.finishedAt = ctx.now();
    j.lease = null;
    j.confirming = null;
    j.waitingReason = "";
    j.errorCode = "";
    j.errorMessage = "";
    ctx.catalog.updateJob(j);
  });
  ctx.log.info("job succeeded", { job: j.id, kind: JobKind[j.kind], volume: volumeLabel(j.volume) });
  changed(ctx, j);
  if (j.attempts > 1) endJob(ctx, j);
  if (queued) {
    changed(ctx, queued);
    ctx.kick();
  }
}

/** `forcedFull`: why the coordinator leased it as FULL (a corrupt chain), when it did; `completedAt`: epoch ms. */
function backupMade(ctx: SchedulerContext, b: Backup, x: BackupResult, forcedFull: string, completedAt: number): void {
  Object.assign(b, {
    status: BackupStatus.BACKUP_STATUS_AVAILABLE,
    baseImage: x.baseImage,
    snapshot: x.snapshot,
    incremental: x.incremental,
    parentSnapshot: x.parentSnapshot,
    forcedFullReason: x.forcedFullReason || forcedFull,
    sizeBytes: x.imageSize,
    dataBytesSent: x.dataBytesSent,
    zeroBytes: x.zeroBytes,
    transferSeconds: x.seconds,
    locationFsid: x.destinationFsid,
    completedAt: new Date(completedAt),
    warnings: x.warnings,
    error: "",
  } satisfies Partial<Backup>);
  if (x.imageDigest) {
    b.integrity = BackupIntegrity.fromPartial({ imageDigest: x.imageDigest, digestBlockSize: x.digestBlockSize });
  }
  if (b.location) b.location.pool = x.destinationPool || b.location.pool;
  ctx.catalog.updateBackup(b);
}

/** How long the agents have to undo a cancelled job's held transfer (nothing waits on it). */
const DISCARD_CALL_TIMEOUT_MS = 30_000;

/**
 * A job that ended CANCELLED or FAILED after an attempt ran — cancelled between its attempts, or while
 * running with an attempt cut short before the cancel reached it; failed for good after an attempt cut
 * short whose later attempts never reached the destination (a source gone, a partition outlasting the
 * retries) — may have left that attempt's transfer held for a resume at the destination (a partial
 * volume or base image, a base image's head part-written, for transfer.resumeTtlSeconds) that no attempt
 * will resume. Every agent of the destination's cluster that serves discard_held is asked to undo it
 * now, best effort, without waiting (a hold nobody discards still expires: a restore's new volume then
 * stayed, refusing a new restore to its name ALREADY_EXISTS, up to an hour; a transfer that is not held
 * is left alone, and so is a volume another client has opened since). A restore names its target (NEW, ORIGINAL, FAILBACK: a CLONE writes
 * no transfer); a backup's image is chosen by its agent (a new chain's base image, or the chain it
 * continues), so it names the location's pool and namespace with no image: any image there held for
 * this backup id. It names the job too: each agent then refuses the job's transfer capabilities, which
 * would otherwise stay usable for their hour.
 */
function discardHeld(ctx: SchedulerContext, j: JobRecord): void {
  if (j.attempts === 0) return;
  const dest = transferDestination(ctx, j);
  if (!dest) return;
  const { cluster, image } = dest;
  for (const a of ctx.sessions.ofCluster(cluster)) {
    if (!a.features.has("discard_held")) continue;
    a.call(
      { $case: "discardHeld", value: { image, backupId: j.backupId, jobId: j.id } },
      "discardHeld",
      DISCARD_CALL_TIMEOUT_MS,
    ).then(
      (r) => {
        if (r.done.length)
          ctx.log.info("job ended: held transfer undone", { job: j.id, agent: a.agentId, done: r.done });
      },
      (err) =>
        ctx.log.warn("job ended: could not undo a held transfer (its hold expires)", {
          job: j.id,
          agent: a.agentId,
          err,
        }),
    );
  }
}

/**
 * Where a backup's or restore's transfers write: the cluster and the image (a backup's: its location's
 * pool and namespace, image "" — its agent chose it); null for jobs that write no transfer (a CLONE
 * restore, the other kinds) or a backup no longer catalogued.
 */
function transferDestination(
  ctx: SchedulerContext,
  j: JobRecord,
): { cluster: string; image: { pool: string; namespace: string; image: string } } | null {
  const op = j.operation;
  if (op.kind === "restore" && !isCloneRestore(j)) {
    const t = op.target;
    return { cluster: t.cluster, image: { pool: t.pool, namespace: t.namespace, image: t.image } };
  }
  if (op.kind !== "backup") return null;
  const loc = ctx.catalog.getBackup(j.backupId)?.location;
  return loc ? { cluster: loc.cluster, image: { pool: loc.pool, namespace: loc.namespace, image: "" } } : null;
}

/**
 * A backup or restore that SUCCEEDED after more than one attempt: every agent of its destination cluster
 * that serves end_job is told, so that an earlier attempt's transfer capability — minted for another
 * agent than the one that committed, and not voided by that commit — writes nothing there (session.proto
 * EndJobRequest). Best effort, without waiting; nothing held is undone.
 */
function endJob(ctx: SchedulerContext, j: JobRecord): void {
  const dest = transferDestination(ctx, j);
  if (!dest) return;
  for (const a of ctx.sessions.ofCluster(dest.cluster)) {
    if (!a.features.has("end_job")) continue;
    a.call({ $case: "endJob", value: { jobId: j.id } }, "endJob", DISCARD_CALL_TIMEOUT_MS).catch((err) =>
      ctx.log.warn("job succeeded: an agent could not be told to refuse its earlier attempts' capabilities", {
        job: j.id,
        agent: a.agentId,
        err,
      }),
    );
  }
}

/** Cancels a job: at once when queued; a running one is asked to stop and ends when its agent reports. */
export function cancel(ctx: SchedulerContext, j: JobRecord, reason = "cancelled"): JobRecord {
  if (j.state === JobState.JOB_STATE_QUEUED) {
    finish(ctx, j, JobState.JOB_STATE_CANCELLED, Status.CANCELLED, reason);
  } else if (j.state === JobState.JOB_STATE_RUNNING && !j.cancelRequested) {
    j.cancelRequested = true;
    ctx.catalog.updateJob(j);
    const lease = j.lease;
    if (lease) {
      ctx.sessions
        .get(lease.agentId)
        ?.send({ $case: "cancel", value: { jobId: j.id, token: lease.token, reason: "cancelled by a user" } });
    }
    changed(ctx, j);
  }
  ctx.kick();
  return j;
}

/**
 * Ends a job FAILED from the coordinator's side (an EXPORT or IMPORT whose data never came): a queued
 * one at once; a running one's agent is told to stop, and its later outcome is stale (ignored). A job
 * whose outcome is being confirmed is left alone (the work is done; the confirmation decides).
 */
export function abandon(ctx: SchedulerContext, j: JobRecord, code: Status, message: string): void {
  if (isFinal(j.state) || j.confirming) return;
  const lease = j.lease;
  const running = j.state === JobState.JOB_STATE_RUNNING;
  // The write first (fenced: a coordinator that no longer leads stops here), then the agent is told —
  // as cancel() does; told first, a deposed leader stopped an attempt the new leader still counts.
  finish(ctx, j, JobState.JOB_STATE_FAILED, code, message);
  if (running && lease) {
    const s = ctx.sessions.get(lease.agentId);
    s?.jobs.delete(j.id);
    s?.send({ $case: "cancel", value: { jobId: j.id, token: lease.token, reason: message } });
  }
  ctx.kick();
}
