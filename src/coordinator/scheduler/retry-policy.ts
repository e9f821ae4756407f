/**
 * Whether a failed attempt gets another one, and after how long:
 *
 *  - RESOURCE_EXHAUSTED (a full pool, or a destination at its transfer limit) is retried, but only after
 *    `fullPoolBackoffMs` (5 min by default, at least that, doubling up to 4×), never within seconds. The message does
 *    not reliably tell a full pool from a busy agent, and the two costs are lopsided: a busy agent's job
 *    waiting 5 minutes costs little (perClusterLimit keeps agents below their transfer limit anyway),
 *    while writing into a full pool again and again filled an OSD to 100 % (issue 12 (b)). Not retrying
 *    at all was rejected: an operator who frees or adds space should not have to resubmit the job.
 *  - ALREADY_EXISTS of a backup on a retry (attempt > 1): a fresh backup id is never reused, so the base
 *    image in the way is the previous attempt's, whose destination may still be cleaning it up — after a
 *    lease expiry (agent lost) the coordinator cannot know when the old stream's destination notices
 *    that its peer is gone. The retry waits `leftoverWaitMs` and tries again, up to LEFTOVER_RETRIES
 *    times, without spending the job's attempts (issue 12 (c)). The same for a restore to a new volume:
 *    the target its first attempt was refused for ALREADY_EXISTS never reaches a retry (final at once),
 *    so on a retry the image is the previous attempt's, kept for a resume once its sink has wound down,
 *    or removed. On a first attempt it stays final.
 *  - ABORTED of a backup saying its base image is open by another client (the destination's sink,
 *    image-ops.ts baseInUse: BASE_IN_USE in the message), on any attempt — an earlier attempt's agent
 *    still winding down, or someone who mapped it. Waited for the same way (`leftoverWaitMs`, up to LEFTOVER_RETRIES extra attempts): a backoff of
 *    seconds would spend the attempts before a lost stream's destination notices its peer is gone.
 *  - Other transient failures (jobs.ts `isTransient`): exponential backoff with jitter, while attempts remain.
 */
import { Status } from "nice-grpc-common";
import { backoffDelay } from "../../common/retry";
import { RestoreMode } from "../../gen/rbdbackup/v1/agent";
import type { JobRecord } from "../model";
import type { SchedulerConfig } from "./config";
import { isTransient } from "./jobs";

/** Retries granted beyond maxAttempts for an attempt that found the previous attempt's leftovers. */
export const LEFTOVER_RETRIES = 3;

export interface RetryDecision {
  /** Delay before the next attempt, ms. */
  delayMs: number;
  /** The next attempt does not count against maxAttempts (it only waits for a cleanup). */
  extraAttempt: boolean;
}

/** Attempts a job may make: its maxAttempts, and those granted or given back beyond them. */
export const attemptBudget = (j: JobRecord): number =>
  j.maxAttempts + (j.extraAttempts ?? 0) + (j.refundedAttempts ?? 0);

/** Another attempt, or null when the failure is final (or attempts are spent). */
export function retryDecision(
  cfg: SchedulerConfig,
  j: JobRecord,
  code: Status,
  random: () => number,
  message = "",
): RetryDecision | null {
  if (isLeftover(j, code, message)) {
    if ((j.extraAttempts ?? 0) >= LEFTOVER_RETRIES) return null;
    return { delayMs: cfg.leftoverWaitMs, extraAttempt: true };
  }
  if (!isTransient(code) || j.attempts >= attemptBudget(j)) return null;
  if (code === Status.RESOURCE_EXHAUSTED) {
    const baseMs = cfg.fullPoolBackoffMs;
    const d = backoffDelay(j.attempts, { baseMs, maxMs: 4 * baseMs, jitter: 1 }, random);
    return { delayMs: Math.max(baseMs, d), extraAttempt: false };
  }
  const o = { baseMs: cfg.backoffBaseMs, maxMs: cfg.backoffMaxMs, jitter: 1 };
  return { delayMs: backoffDelay(j.attempts, o, random), extraAttempt: false };
}

/**
 * A retry that ran into the image its previous attempt made: a backup's base image of its own backup id,
 * or a restore-to-new's target — whose earlier sink may still be winding down (seen under a loaded,
 * nearly full lab: the source gave up on a slow destination, the retry came ~1 s later, the destination
 * still held the image and had not yet kept it for a resume, so the retry started over and met it).
 */
export function isLeftover(j: JobRecord, code: Status, message = ""): boolean {
  const op = j.operation;
  if (isBaseInUse(j, code, message)) return true;
  if (code !== Status.ALREADY_EXISTS || j.attempts <= 1) return false;
  return op.kind === "backup" || (op.kind === "restore" && op.mode === RestoreMode.RESTORE_MODE_NEW);
}

/** What the destination's refusal says (agents/transfer/sink/image-ops.ts baseInUse; kept in step by a test). */
export const BASE_IN_USE = "is open by another client (";

/** A backup refused ABORTED because its base image is open by another client (not any other ABORTED). */
export const isBaseInUse = (j: JobRecord, code: Status, message: string): boolean =>
  code === Status.ABORTED && j.operation.kind === "backup" && message.includes(BASE_IN_USE);
