/**
 * Limits of the coordinator's API that its clients check too (the CLI refuses what the API would,
 * before it connects). The API enforces them (src/coordinator/validate.ts, policy/retention.ts).
 */

/** CreateBackupRequest.max_snapshots and Policy.max_snapshots: at most this many. */
export const MAX_SNAPSHOTS = 1000;

/** The largest count a retention rule may ask for (keep_last, hourly … yearly). */
export const MAX_RETENTION_COUNT = 10_000;
