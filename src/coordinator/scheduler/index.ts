/** The scheduler's public surface: the Scheduler façade, its settings, and the job facts the API shares. */
export type { SchedulerConfig } from "./config";
export type { SchedulerDeps, SchedulerEvents } from "./context";
export {
  clustersOf,
  isFinal,
  lockOfBackup,
  lockOfVolume,
  locksConflict,
  type RunningCounts,
  sharedLockOfBackup,
  TRANSIENT_NAMES,
} from "./jobs";
export type { LiveProgress } from "./progress";
export { Scheduler } from "./scheduler";
export {
  corruptChainReason,
  DEFAULT_SAMPLE_PERCENT,
  deleteUnfinished,
  statusBeforeDelete,
  verifyModeName,
  verifyModeOf,
} from "./verify";
export { SAFETY_PASS_MS, WakeTimer, type WakeTimerOptions } from "./wake-timer";
