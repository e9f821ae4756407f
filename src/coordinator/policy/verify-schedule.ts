/**
 * A policy's verification schedule (Policy.verify, policy.proto VerifySchedule): its validation for the
 * API and what a protected volume shows of verification (VolumeProtection.last_verified_at,
 * last_verify_ok, corrupt_backups). Pure functions of the policy and the catalog's backups.
 */
import { invalidArgument } from "../../common/errors";
import { BackupStatus } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { VerifySchedule } from "../../gen/rbdbackup/v1/policy";
import type { Catalog } from "../catalog/catalog";
import * as v from "../validate";
import type { Policy } from "./model";
import { atDestination, newestAvailable, registeredDefaultPool } from "./recovery-point";

/** The longest verify interval: a year. */
export const MAX_VERIFY_INTERVAL_SECONDS = 366 * 86_400;

/** INVALID_ARGUMENT naming the field; absent or interval 0 = no verification (nothing else may be set then). */
export function validateVerifySchedule(s: VerifySchedule | undefined, minIntervalSeconds: number): void {
  if (!s) return;
  const f = "policy.verify";
  v.verifyMode(s.mode, `${f}.mode`);
  v.samplePercent(s.samplePercent, s.mode, `${f}.sample_percent`);
  if (s.intervalSeconds === 0) {
    if (s.mode || s.samplePercent) throw invalidArgument(`${f}.interval_seconds is 0 (no verification): set it too`);
    return;
  }
  if (s.intervalSeconds < minIntervalSeconds || s.intervalSeconds > MAX_VERIFY_INTERVAL_SECONDS) {
    throw invalidArgument(
      `${f}.interval_seconds ${s.intervalSeconds} is outside ${minIntervalSeconds}..${MAX_VERIFY_INTERVAL_SECONDS}`,
    );
  }
}

export interface VerifyStatus {
  lastVerifiedAt: Date | undefined;
  lastVerifyOk: boolean;
  corruptBackups: number;
}

/** The newest available backup's last verification, and the volume's CORRUPT backups at the destination. */
export function verifyStatus(
  catalog: Catalog,
  p: Policy,
  vol: VolumeRef,
  defaultPool: (cluster: string) => string = registeredDefaultPool(catalog),
): VerifyStatus {
  const here = atDestination(p, defaultPool);
  const newest = newestAvailable(catalog, vol, here);
  let corruptBackups = 0;
  // Only the CORRUPT rows are read: the volume's history (a DELETED row a run) is not parsed per view.
  const corrupt = BackupStatus.BACKUP_STATUS_CORRUPT;
  for (const b of catalog.backupsOfVolume(vol.cluster, vol.pool, vol.namespace, vol.image, corrupt)) {
    if (b.status === corrupt && b.location && here(b.location)) corruptBackups++;
  }
  return {
    lastVerifiedAt: newest?.integrity?.lastVerifiedAt,
    lastVerifyOk: newest?.integrity?.lastVerifyOk ?? false,
    corruptBackups,
  };
}
