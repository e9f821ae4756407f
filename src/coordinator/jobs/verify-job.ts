/**
 * A VERIFY job of a backup, by VerifyBackup (api/verify.ts) and by a policy's verify schedule
 * (policy/verify-runner.ts): it locks the backup only (a delete or restore of it waits; backups of the
 * volume go on) and runs on an agent of the backup's cluster — SOURCE on an agent of the volume's
 * cluster, which compares the volume's snapshot with the map the scheduler fetches for it.
 */
import { VerifyMode } from "../../gen/rbdbackup/v1/agent";
import { JobKind } from "../../gen/rbdbackup/v1/backup_service";
import type { Backup } from "../model";
import { DEFAULT_SAMPLE_PERCENT, sharedLockOfBackup, verifyModeOf } from "../scheduler";
import { fingerprint, type JobSpec } from "./new-job";

/** The fingerprint of a verify request (mode and percent as they are meant: UNSPECIFIED = SAMPLE, 0 = 10). */
export const verifyFingerprint = (backupId: string, mode: VerifyMode, samplePercent: number): string =>
  fingerprint("verify", { backupId, mode: verifyModeOf(mode), samplePercent: percentOf(mode, samplePercent) });

/** SAMPLE's percent (0 = the default); 0 for the other modes. */
const percentOf = (mode: VerifyMode, samplePercent: number): number =>
  verifyModeOf(mode) === VerifyMode.VERIFY_MODE_SAMPLE ? samplePercent || DEFAULT_SAMPLE_PERCENT : 0;

export function verifyJobSpec(b: Backup, mode: VerifyMode, samplePercent: number, idempotencyKey: string): JobSpec {
  if (!b.volume || !b.location) throw new Error(`backup ${b.id} has no volume or location`);
  const m = verifyModeOf(mode);
  const percent = percentOf(mode, samplePercent);
  return {
    kind: JobKind.JOB_KIND_VERIFY,
    backupId: b.id,
    volume: { ...b.volume },
    operation: { kind: "verify", mode: m, samplePercent: percent },
    idempotencyKey,
    fingerprint: verifyFingerprint(b.id, mode, samplePercent),
    locks: [sharedLockOfBackup(b.id)],
    execCluster: m === VerifyMode.VERIFY_MODE_SOURCE ? b.volume.cluster : b.location.cluster,
    peerCluster: "",
  };
}
