/**
 * What the coordinator keeps about protection: the policies themselves (the public Policy message, as
 * backups are the public Backup message) and one ProtectionRecord per (policy, selected volume) — the
 * runner's persistent state, so a restart neither repeats nor skips a slot.
 */
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy } from "../../gen/rbdbackup/v1/policy";

export type { Policy };

export interface ProtectionRecord {
  policy: string;
  volume: VolumeRef;
  /** How the volume came into the policy. */
  source: "explicit" | "discovered";
  /** Epoch ms: the slot the next run belongs to (the schedule's time, before jitter), and when it starts. */
  nextSlotAt: number;
  nextRunAt: number;
  /** Epoch ms of the last slot a run was queued for (0 = none yet). */
  lastSlotAt: number;
  /** The job of the last run (scheduled or RunPolicyNow) and its failure, if it failed. */
  lastJobId: string;
  lastError: string;
  consecutiveFailures: number;
  missedRuns: number;
  /** Non-empty: this volume is paused on its own (e.g. failed over), whatever the policy says. */
  pausedReason: string;
  /** Epoch ms: when discovery (or the explicit list) last saw the volume selected. */
  lastSeenAt: number;
  createdAt: number;
}

/** "cluster/pool/namespace/image": a volume's key in protection records and idempotency keys. */
export function volumeKey(v: VolumeRef): string {
  return `${v.cluster}/${v.pool}/${v.namespace}/${v.image}`;
}

/**
 * A cluster's default backup pool as its backups use it: a connected agent's (the jobs take it from the
 * agent they run on), else the one its agents last registered with ("" = not known).
 */
export function defaultPoolOf(
  sessions: { ofCluster(cluster: string): Array<{ info: { defaultBackupPool: string } }> },
  agents: Array<{ clusterName: string; defaultBackupPool: string }>,
): (cluster: string) => string {
  return (cluster) =>
    sessions.ofCluster(cluster)[0]?.info.defaultBackupPool ||
    agents.find((a) => a.clusterName === cluster)?.defaultBackupPool ||
    "";
}
