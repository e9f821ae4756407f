/**
 * Retention after a successful policy backup: the available backups this policy made (Backup.policy) of
 * the volume at its destination — from the catalog's in-memory index, no row read — go through planRetention (retention.ts); each one it drops becomes an ordinary DELETE
 * job (jobs/delete-job.ts), keyed by the backup so a second pass never queues two while one is active
 * (one that ended without deleting it is followed by another on a later pass). Pinned, whatever the
 * rules: a backup a queued or running job uses, and a backup an RBD clone depends on.
 */
import type { Logger } from "../../common/log";
import { BackupStatus, JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy } from "../../gen/rbdbackup/v1/policy";
import type { AvailableBackup, Catalog } from "../catalog/catalog";
import { deleteJobSpec } from "../jobs/delete-job";
import { isUniqueViolation, newJobRecord, POLICY_RUN_KEY_PREFIX } from "../jobs/new-job";
import { volumeLabel } from "../model";
import { isFinal } from "../scheduler";
import { planRetention, type RetentionCandidate } from "./retention";

/** Idempotency keys of a policy's jobs start with this. */
export const policyKeyPrefix = (policy: string): string => `${POLICY_RUN_KEY_PREFIX}${policy}:`;

/**
 * The available backups `p` made of `vol` at its destination (Backup.policy, set by the runner). A
 * destination pool "" is the cluster's default backup pool, resolved by `defaultPool` (validate.ts
 * defaultPoolOf) as the jobs resolve it — never "any pool": a policy moved from pool X to "" must not
 * reach the backups it left in X. A default pool not known now: none (retention deletes nothing).
 */
export function policyBackups(
  catalog: Catalog,
  p: Policy,
  vol: VolumeRef,
  defaultPool: (cluster: string) => string,
): AvailableBackup[] {
  const dest = p.destination;
  if (!dest) return [];
  const pool = dest.pool || defaultPool(dest.cluster);
  if (!pool) return [];
  // A policy made again under a deleted one's name does not inherit its backups ("its backups stay"):
  // only backups made since this policy was created are its own.
  const since = p.createdAt?.getTime() ?? 0;
  return catalog
    .availableBackupsOfVolume(vol.cluster, vol.pool, vol.namespace, vol.image)
    .filter(
      (b) =>
        b.policy === p.name &&
        b.createdAt >= since &&
        b.location !== undefined &&
        b.location.cluster === dest.cluster &&
        b.location.pool === pool &&
        b.location.namespace === dest.namespace,
    );
}

/**
 * Queues the DELETE jobs retention asks for; returns how many it queued. `justMade`: the backup of the run
 * being settled, which stays whatever the rules say (a clock behind the one that dated the others by less
 * than retention.ts CLOCK_SKEW_MS still sorts it behind them).
 */
export function enforceRetention(
  deps: { catalog: Catalog; log: Logger; maxAttempts: number },
  p: Policy,
  vol: VolumeRef,
  nowMs: number,
  defaultPool: (cluster: string) => string,
  justMade = "",
): number {
  const { catalog } = deps;
  if (!p.retention) return 0;
  const backups = policyBackups(catalog, p, vol, defaultPool);
  const candidates: RetentionCandidate[] = backups.map((b) => ({
    id: b.id,
    at: b.createdAt,
    pinned:
      b.id === justMade ? "just made" : catalog.backupInUse(b.id) ? "in use" : b.clones ? "has clones" : undefined,
  }));
  const plan = planRetention(p.retention, candidates, nowMs, p.schedule?.timeZone ?? "");
  if (plan.clockBehind) {
    deps.log.warn("retention held: a backup is dated after now (this coordinator's clock is behind)", {
      policy: p.name,
      volume: volumeLabel(vol),
    });
  }
  let queued = 0;
  for (const id of plan.drop) {
    const job = queueDelete(deps, p, id, nowMs);
    if (job) queued++;
  }
  return queued;
}

/** DELETE attempts of one backup a retention pass may queue over time (each after the last one ended). */
const MAX_DELETE_KEYS = 100;

/**
 * The idempotency key of the next retention DELETE of `backupId`: "pol:<p>:del:<id>", then ":2", ":3"…
 * for each earlier one that FAILED (the backup back to AVAILABLE: the next pass tries again rather than
 * never). undefined while one is still active, once one was CANCELLED (an operator's choice to keep
 * the backup), or after MAX_DELETE_KEYS attempts.
 */
function deleteKey(catalog: Catalog, p: Policy, backupId: string): string | undefined {
  const base = `${policyKeyPrefix(p.name)}del:${backupId}`;
  for (let n = 1; n <= MAX_DELETE_KEYS; n++) {
    const key = n === 1 ? base : `${base}:${n}`;
    const j = catalog.jobByIdempotencyKey(key);
    if (!j) return key;
    if (!isFinal(j.state)) return undefined;
    // An operator who cancelled the DELETE meant to keep the backup: retention does not overrule it.
    if (j.state === JobState.JOB_STATE_CANCELLED) return undefined;
  }
  return undefined;
}

/** One DELETE job, if the backup is still available and no job uses it (checked in the transaction). */
function queueDelete(
  deps: { catalog: Catalog; log: Logger; maxAttempts: number },
  p: Policy,
  backupId: string,
  nowMs: number,
): string | undefined {
  const { catalog, log } = deps;
  try {
    return catalog.transaction(() => {
      const b = catalog.getBackup(backupId);
      if (!b || b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE) return undefined;
      const key = deleteKey(catalog, p, backupId);
      if (!key) return undefined;
      if (catalog.backupInUse(b.id)) return undefined;
      const job = newJobRecord(deleteJobSpec(b, key), deps.maxAttempts, nowMs);
      b.status = BackupStatus.BACKUP_STATUS_DELETING;
      catalog.updateBackup(b);
      catalog.insertJob(job);
      log.info("policy retention: backup queued for deletion", { policy: p.name, backup: b.id, job: job.id });
      return job.id;
    });
  } catch (e) {
    if (isUniqueViolation(e)) return undefined;
    throw e;
  }
}
