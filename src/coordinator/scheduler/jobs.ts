/**
 * Facts about a job record that every part of the scheduler (and the API's admission) shares: which
 * states are final, which failures deserve another attempt, the locks a job takes and the cluster
 * slots and agent capacity it uses while it runs.
 */
import { Status } from "nice-grpc-common";
import { JobState } from "../../gen/rbdbackup/v1/backup_service";
import { type JobRecord, volumeKey } from "../model";

/** Failures worth another attempt (an expired lease is reported as UNAVAILABLE). */
const TRANSIENT = new Set<Status>([
  Status.UNAVAILABLE,
  Status.ABORTED,
  Status.DEADLINE_EXCEEDED,
  Status.RESOURCE_EXHAUSTED,
  Status.INTERNAL,
  Status.UNKNOWN,
]);

export const isTransient = (code: Status): boolean => TRANSIENT.has(code);
/** The status names a retry can have as its cause (rbdbackup_job_retries_total{cause}). */
export const TRANSIENT_NAMES: readonly string[] = [...TRANSIENT].map((c) => Status[c] as string);

export const isFinal = (s: JobState): boolean =>
  s === JobState.JOB_STATE_SUCCEEDED || s === JobState.JOB_STATE_FAILED || s === JobState.JOB_STATE_CANCELLED;

/** The clusters whose slots a job uses. */
export function clustersOf(j: JobRecord): string[] {
  return j.peerCluster && j.peerCluster !== j.execCluster ? [j.execCluster, j.peerCluster] : [j.execCluster];
}

/**
 * Locks a job takes while it runs (JobRecord.locks, kept with the job): a volume's, a backup's. A lock is
 * exclusive, or shared when it ends in SHARED: the jobs that only read a backup (restores, verifies,
 * exports, an import's parent) hold it shared and run side by side — two volumes made from one backup at
 * once, a failover while a verify of the same backup runs; its DELETE holds it exclusive and waits for
 * them all, and they for it. Jobs queued before shared locks existed hold the exclusive form: they keep
 * waiting as they did.
 */
const SHARED = "#shared";
export const lockOfVolume = (v: Parameters<typeof volumeKey>[0]): string => `vol:${volumeKey(v)}`;
export const lockOfBackup = (id: string): string => `backup:${id}`;
/** The backup's lock, shared with every other job that only reads it. */
export const sharedLockOfBackup = (id: string): string => `${lockOfBackup(id)}${SHARED}`;
/**
 * Whether a lock is a backup's shared lock. Only a backup's lock can be: its id is a UUID, while a
 * volume's lock holds names a user chose (an image may be named "db#shared").
 */
export const isSharedLock = (k: string): boolean => k.startsWith(lockOfBackup("")) && k.endsWith(SHARED);
/** What a lock guards (a shared lock's resource is its exclusive form). */
export const lockedResource = (k: string): string => (isSharedLock(k) ? k.slice(0, -SHARED.length) : k);
/** Whether two locks exclude each other: the same resource, not both shared. */
export const locksConflict = (a: string, b: string): boolean =>
  lockedResource(a) === lockedResource(b) && !(isSharedLock(a) && isSharedLock(b));

export interface RunningCounts {
  byCluster: Map<string, number>;
  byAgent: Map<string, number>;
}

const bump = (m: Map<string, number>, k: string): void => {
  m.set(k, (m.get(k) ?? 0) + 1);
};

/** Running jobs by cluster (each job counts on every cluster it touches) and by agent. */
export function runningCounts(jobs: JobRecord[]): RunningCounts {
  const counts: RunningCounts = { byCluster: new Map(), byAgent: new Map() };
  for (const j of jobs) if (j.state === JobState.JOB_STATE_RUNNING) countRunning(counts, j, j.lease?.agentId);
  return counts;
}

/** Adds one running job to the counts (agentId: the agent holding its lease, if any). */
export function countRunning(counts: RunningCounts, j: JobRecord, agentId: string | undefined): void {
  for (const c of clustersOf(j)) bump(counts.byCluster, c);
  if (agentId) bump(counts.byAgent, agentId);
}
