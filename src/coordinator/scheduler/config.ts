/** The scheduler's settings (the coordinator config's `scheduler` section) and their defaults. */

export interface SchedulerConfig {
  leaseTtlMs: number;
  heartbeatIntervalMs: number;
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** Jobs running at once on one cluster (as source, destination or target). */
  perClusterLimit: number;
  tickMs: number;
}

export const schedulerDefaults: SchedulerConfig = {
  leaseTtlMs: 15_000,
  heartbeatIntervalMs: 3_000,
  maxAttempts: 3,
  backoffBaseMs: 1_000,
  backoffMaxMs: 60_000,
  perClusterLimit: 4,
  tickMs: 1_000,
};

/** How long a dead agent's Ceph client stays blocklisted (it is dead: its successor has a new address). */
export const FENCE_SECONDS = 3600;
