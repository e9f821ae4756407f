/**
 * Retention after a successful policy backup: the available backups this policy made (Backup.policy) of
 * the volume at its destination — from the catalog's in-memory index, no row read — go through planRetention (retention.ts); each one it drops becomes an ordinary DELETE
 * job (jobs/delete-job.ts), keyed by the backup so a second pass never queues two while one is active
 * (one that ended without deleting it is followed by another on a later pass). Pinned, whatever the
 * rules: a backup a queued or running job uses, and a backup an RBD clone depends on.
 */
import type { Logger } from "../../common/log";
import { BackupStatus, JobKind, JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy } from "../../gen/rbdbackup/v1/policy";
import type { AvailableBackup, Catalog } from "../catalog/catalog";
import { deleteJobSpec } from "../jobs/delete-job";
import { isUniqueViolation, newJobRecord, POLICY_RUN_KEY_PREFIX } from "../jobs/new-job";
import { type JobRecord, volumeLabel } from "../model";
import { isFinal } from "../scheduler";
import { volumeKey } from "./model";
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

/** How a retention DELETE withdrawn before it ran ends its message (CANCELLED). */
export const WITHDRAWN = "withdrawn before it ran: ";

/**
 * Withdraws the retention DELETEs still queued (CANCELLED, WITHDRAWN + `why`; their backups AVAILABLE
 * again) that `which` picks — of one volume when a failover pauses its protection ("no retention until
 * resumed": its next pass once resumed decides again), of one policy when it is deleted ("its backups
 * stay"). A DELETE already running, or attempted before, goes on (a backup half removed would be
 * worse). Returns the jobs.
 */
export function withdrawRetentionDeletes(
  deps: { catalog: Catalog; scheduler: { cancel(j: JobRecord, reason?: string): JobRecord }; log: Logger },
  which: { policy?: string; volume?: VolumeRef },
  why: string,
): string[] {
  const withdrawn: string[] = [];
  const vkey = which.volume ? volumeKey(which.volume) : undefined;
  for (const j of deps.catalog.activeJobs()) {
    // Never attempted only: a retry's earlier attempt may have removed the snapshot already (its lease
    // expired: deleteFateUnknown), and withdrawn it would leave the backup DELETED, its delete unfinished.
    if (j.kind !== JobKind.JOB_KIND_DELETE || j.state !== JobState.JOB_STATE_QUEUED || j.attempts > 0) continue;
    const policy = retentionPolicyOf(j.idempotencyKey);
    if (policy === undefined || (which.policy !== undefined && policy !== which.policy)) continue;
    if (vkey !== undefined && (!j.volume || volumeKey(j.volume) !== vkey)) continue;
    deps.scheduler.cancel(j, `${WITHDRAWN}${why}`);
    deps.log.info("queued retention delete withdrawn", { job: j.id, backup: j.backupId, policy, why });
    withdrawn.push(j.id);
  }
  return withdrawn;
}

/** The policy whose retention queued a job of this idempotency key ("pol:<policy>:del:<backup>…"), else undefined. */
function retentionPolicyOf(key: string): string | undefined {
  if (!key.startsWith(POLICY_RUN_KEY_PREFIX)) return undefined;
  const rest = key.slice(POLICY_RUN_KEY_PREFIX.length);
  const colon = rest.indexOf(":");
  return colon > 0 && rest.startsWith("del:", colon + 1) ? rest.slice(0, colon) : undefined;
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
    // An operator who cancelled the DELETE meant to keep the backup: retention does not overrule it. One
    // withdrawn while still queued (a failover paused the volume's protection) is decided again later.
    if (j.state === JobState.JOB_STATE_CANCELLED && !j.errorMessage.startsWith(WITHDRAWN)) return undefined;
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
