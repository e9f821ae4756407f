/**
 * Retention after a successful policy backup: the available backups this policy made of the volume at
 * its destination go through planRetention (retention.ts); each one it drops becomes an ordinary DELETE
 * job (jobs/delete-job.ts), keyed by the backup so a second pass never queues two. Pinned, whatever the
 * rules: a backup a queued or running job uses, and a backup an RBD clone depends on.
 */
import type { Logger } from "../../common/log";
import { BackupStatus } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy } from "../../gen/rbdbackup/v1/policy";
import type { Catalog } from "../catalog/catalog";
import { deleteJobSpec } from "../jobs/delete-job";
import { isUniqueViolation, newJobRecord } from "../jobs/new-job";
import type { Backup } from "../model";
import { planRetention, type RetentionCandidate } from "./retention";

/** Idempotency keys of a policy's jobs start with this. */
export const policyKeyPrefix = (policy: string): string => `pol:${policy}:`;

/** The available backups of `vol` at `p`'s destination (any maker: madeByPolicy tells). */
function availableAtDestination(catalog: Catalog, p: Policy, vol: VolumeRef): Backup[] {
  const dest = p.destination;
  return catalog
    .backupsOfVolume(vol.cluster, vol.pool, vol.namespace, vol.image)
    .filter(
      (b) =>
        b.status === BackupStatus.BACKUP_STATUS_AVAILABLE &&
        b.location !== undefined &&
        b.location.cluster === dest?.cluster &&
        (!dest.pool || b.location.pool === dest.pool) &&
        b.location.namespace === dest.namespace,
    );
}

/** The backup's job was one of `p`'s (its idempotency key says so): one catalog read. */
const madeByPolicy = (catalog: Catalog, p: Policy, b: Backup): boolean =>
  (catalog.getJob(b.jobId)?.idempotencyKey ?? "").startsWith(policyKeyPrefix(p.name));

/** The available backups `p` made of `vol` at its destination. */
export function policyBackups(catalog: Catalog, p: Policy, vol: VolumeRef): Backup[] {
  return availableAtDestination(catalog, p, vol).filter((b) => madeByPolicy(catalog, p, b));
}

/**
 * The newest of policyBackups (createdAt; the first of equals in catalog order), reading the jobs of
 * the newest candidates only — usually one — instead of every available backup's (metrics scrapes ask
 * this for every protected volume).
 */
export function newestPolicyBackup(catalog: Catalog, p: Policy, vol: VolumeRef): Backup | undefined {
  return availableAtDestination(catalog, p, vol)
    .sort((a, b) => (b.createdAt?.getTime() ?? 0) - (a.createdAt?.getTime() ?? 0))
    .find((b) => madeByPolicy(catalog, p, b));
}

/** Queues the DELETE jobs retention asks for; returns how many it queued. */
export function enforceRetention(
  deps: { catalog: Catalog; log: Logger; maxAttempts: number },
  p: Policy,
  vol: VolumeRef,
  nowMs: number,
): number {
  const { catalog } = deps;
  if (!p.retention) return 0;
  const backups = policyBackups(catalog, p, vol);
  const inUse = new Set(catalog.activeJobs().map((j) => j.backupId));
  const candidates: RetentionCandidate[] = backups.map((b) => ({
    id: b.id,
    at: b.createdAt?.getTime() ?? 0,
    pinned: inUse.has(b.id) ? "in use" : b.clones.length ? "has clones" : undefined,
  }));
  const plan = planRetention(p.retention, candidates, nowMs, p.schedule?.timeZone ?? "");
  let queued = 0;
  for (const id of plan.drop) {
    const job = queueDelete(deps, p, id, nowMs);
    if (job) queued++;
  }
  return queued;
}

/** One DELETE job, if the backup is still available and no job uses it (checked in the transaction). */
function queueDelete(
  deps: { catalog: Catalog; log: Logger; maxAttempts: number },
  p: Policy,
  backupId: string,
  nowMs: number,
): string | undefined {
  const { catalog, log } = deps;
  const key = `${policyKeyPrefix(p.name)}del:${backupId}`;
  try {
    return catalog.transaction(() => {
      const b = catalog.getBackup(backupId);
      if (!b || b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE || catalog.jobByIdempotencyKey(key)) return undefined;
      if (catalog.activeJobs().some((j) => j.backupId === b.id)) return undefined;
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
