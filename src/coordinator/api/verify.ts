/**
 * VerifyBackup: a VERIFY job of an AVAILABLE or CORRUPT backup (../jobs/verify-job.ts). Refused at once
 * when it cannot run: a backup in another state, SAMPLE/FULL/SOURCE on a backup made before digest maps
 * existed, SOURCE when the volume no longer holds the backup's snapshot (asked of an agent of the
 * volume's cluster). The finding is the job's result; the backup's integrity records it.
 */
import type { CallContext } from "nice-grpc-common";
import { failedPrecondition, notFound } from "../../common/errors";
import { VerifyMode } from "../../gen/rbdbackup/v1/agent";
import { type Backup, BackupStatus, type Job, type VerifyBackupRequest } from "../../gen/rbdbackup/v1/backup_service";
import { probe } from "../jobs/probes";
import { verifyFingerprint, verifyJobSpec } from "../jobs/verify-job";
import { volumeLabel } from "../model";
import { verifyModeName, verifyModeOf } from "../scheduler";
import * as v from "../validate";
import type { Admission } from "./admission";
import type { ApiDeps } from "./deps";

export async function verifyBackup(
  deps: ApiDeps,
  adm: Admission,
  req: VerifyBackupRequest,
  ctx: CallContext,
): Promise<Job> {
  v.uuid(req.backupId, "backup_id");
  v.verifyMode(req.mode);
  v.samplePercent(req.samplePercent, req.mode);
  v.idempotencyKey(req.idempotencyKey);
  const fp = verifyFingerprint(req.backupId, req.mode, req.samplePercent);
  const again = adm.replay(req.idempotencyKey, fp);
  if (again) return adm.view(again);
  const b = deps.catalog.getBackup(req.backupId);
  if (!b?.location || !b.volume) throw notFound(`backup ${req.backupId} not found`);
  requireVerifiable(b, verifyModeOf(req.mode));
  // SOURCE: from before the probe until the job is in the catalog, no snapshot sweep removes what the
  // probe finds (a sweep in flight is waited for first); the queued job then keeps it (snapshot-hygiene.ts).
  const source = verifyModeOf(req.mode) === VerifyMode.VERIFY_MODE_SOURCE;
  const release = source ? await deps.scheduler.holdForVerify(b.id, b.volume, ctx.signal) : undefined;
  try {
    if (source) await requireSourceSnapshot(deps, b, ctx.signal);
    // Judged again with the job's insert: a DeleteBackup admitted during the probe's wait made it DELETING.
    return adm.submit(adm.newJob(verifyJobSpec(b, req.mode, req.samplePercent, req.idempotencyKey)), () => {
      const now = deps.catalog.getBackup(req.backupId);
      if (!now) throw notFound(`backup ${req.backupId} not found`);
      requireVerifiable(now, verifyModeOf(req.mode));
    });
  } finally {
    release?.();
  }
}

/** Only AVAILABLE and CORRUPT backups; only METADATA without a digest map. */
export function requireVerifiable(b: Backup, mode: VerifyMode): void {
  if (b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE && b.status !== BackupStatus.BACKUP_STATUS_CORRUPT) {
    throw failedPrecondition(
      `backup ${b.id} is ${BackupStatus[b.status]}; only an available (or corrupt) backup can be verified`,
    );
  }
  if (mode !== VerifyMode.VERIFY_MODE_METADATA && !b.integrity?.imageDigest) {
    throw failedPrecondition(
      `backup ${b.id} was made before digest maps existed: mode ${verifyModeName(mode).toUpperCase()} needs one; ` +
        "use mode METADATA (the snapshot and metadata object are checked)",
    );
  }
}

/** SOURCE compares the volume's snapshot of the backup: it must still be there. */
async function requireSourceSnapshot(deps: ApiDeps, b: Backup, signal: AbortSignal): Promise<void> {
  const vol = b.volume;
  if (!vol) return;
  const p = await probe(deps.sessions, vol.cluster, { pools: [], image: vol }, signal, "volume");
  if (!p.imageExists) {
    throw failedPrecondition(`mode SOURCE: volume ${volumeLabel(vol)} of backup ${b.id} no longer exists`);
  }
  if (!p.imageSnapshots.some((s) => s.name === b.snapshot)) {
    throw failedPrecondition(
      `mode SOURCE: volume ${volumeLabel(vol)} no longer holds snapshot ${b.snapshot} of backup ${b.id}; ` +
        "verify the stored copy with mode FULL",
    );
  }
}
