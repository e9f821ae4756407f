/**
 * The destination side of a transfer (see README.md): `runSink` writes one transfer's stream into
 * an image and commits it; `recoverInterrupted` undoes what transfers cut short by a crash left.
 */

export { discardHeldInto, sweepHeld, sweepLeftovers } from "./abandon";
export { applyImageMeta, headDiffers, INCOMPLETE_KEY, otherWriters, removeImageRetrying } from "./image-ops";
export { DEFAULT_RESUME_TTL_SECONDS } from "./keep";
export type { ResumeOptions, SinkCluster, SinkDeps, SinkImage, SinkIoCtx, SinkLimits } from "./ports";
export { type CommittedBackup, RECENT_COMMIT_TTL_MS, RecentCommits } from "./recent-commits";
export { recoverInterrupted } from "./recovery";
export { resumePoint } from "./resume";
export { overwroteTarget, runSink, type SinkOptions } from "./run-sink";
export { chainsSettled, EARLIER_TRANSFER_WAIT_MS } from "./running";
