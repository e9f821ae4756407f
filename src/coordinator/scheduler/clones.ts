/**
 * Bookkeeping of CLONE restores: a backup's `clones` lists the volumes that read through to its
 * snapshot. A successful CLONE restore adds its target (and, when asked, queues the FLATTEN job that
 * will detach it); a successful FLATTEN removes it. Both run inside the transaction that ends the job
 * (transitions.ts), so the list and the job states never disagree.
 */
import { randomUUID } from "node:crypto";
import { RestoreMode } from "../../gen/rbdbackup/v1/agent";
import { JobKind, JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import { type Backup, type JobRecord, volumeKey, volumeLabel } from "../model";
import type { SchedulerContext } from "./context";
import { lockOfVolume } from "./jobs";

const same = (a: VolumeRef, b: VolumeRef): boolean => volumeKey(a) === volumeKey(b);

/** Whether a finished job is a CLONE restore. */
export const isCloneRestore = (j: JobRecord): boolean =>
  j.operation.kind === "restore" && j.operation.mode === RestoreMode.RESTORE_MODE_CLONE;

/** A FLATTEN job for `target`, a clone of backup `b` (runs on the backup's cluster; locks the target only). */
export function flattenJob(b: Backup, target: VolumeRef, maxAttempts: number, now: number, key = ""): JobRecord {
  return {
    id: randomUUID(),
    kind: JobKind.JOB_KIND_FLATTEN,
    state: JobState.JOB_STATE_QUEUED,
    backupId: b.id,
    volume: { ...target },
    idempotencyKey: key,
    fingerprint: "",
    operation: { kind: "flatten", target: { ...target } },
    attempts: 0,
    maxAttempts,
    errorCode: "",
    errorMessage: "",
    agentId: "",
    waitingReason: "queued",
    createdAt: now,
    startedAt: 0,
    finishedAt: 0,
    nextAttemptAt: 0,
    lease: null,
    cancelRequested: false,
    locks: [lockOfVolume(target)],
    execCluster: b.location?.cluster ?? target.cluster,
    peerCluster: "",
    result: null,
    warnings: [],
    fence: [],
  };
}

/**
 * A CLONE restore succeeded: its target depends on the backup now. Returns the FLATTEN job queued for
 * it, if the restore asked for one. Call inside the transaction that ends the restore job.
 */
export function cloneMade(ctx: SchedulerContext, j: JobRecord, b: Backup): JobRecord | null {
  if (j.operation.kind !== "restore") return null;
  const target = j.operation.target;
  if (!b.clones.some((c) => same(c, target))) {
    b.clones.push({ ...target });
    ctx.catalog.updateBackup(b);
  }
  if (!j.operation.flatten) return null;
  const f = flattenJob(b, target, ctx.cfg.maxAttempts, ctx.now());
  ctx.catalog.insertJob(f);
  ctx.log.info("flatten queued after a clone restore", { job: f.id, restore: j.id, target: volumeLabel(target) });
  return f;
}

/** A FLATTEN succeeded: its target no longer depends on the backup. */
export function cloneDetached(ctx: SchedulerContext, j: JobRecord, b: Backup): void {
  if (j.operation.kind !== "flatten") return;
  const target = j.operation.target;
  const left = b.clones.filter((c) => !same(c, target));
  if (left.length === b.clones.length) return;
  b.clones = left;
  ctx.catalog.updateBackup(b);
}
