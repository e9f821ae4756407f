/**
 * VERIFY jobs and what their findings do to the catalog. A VERIFY re-reads a backup against its digest
 * map (backup.<id>.digests): METADATA, SAMPLE and FULL on an agent of the backup's cluster; SOURCE on an
 * agent of the source volume's cluster, with the map the coordinator fetched (./digest-maps.ts).
 *
 * A finding that the data differs marks the backup CORRUPT (never deletes it) and records where in
 * Backup.integrity; the job itself SUCCEEDS (it did its work). CORRUPT is sticky: a later verification
 * that passes records itself in integrity but does not make the backup AVAILABLE again (the chain was
 * damaged once; its next backup is a new full chain). A backup's next backup to the same location is
 * leased as FULL while the chain it would extend holds a CORRUPT backup (`corruptChainReason`).
 */
import { VerifyMode, type VerifyRequest, type VerifyResult } from "../../gen/rbdbackup/v1/agent";
import { BackupStatus } from "../../gen/rbdbackup/v1/backup_service";
import type { Catalog } from "../catalog/catalog";
import { type Backup, DELETE_UNFINISHED, type JobRecord } from "../model";
import type { Located } from "./capabilities";
import type { SchedulerContext } from "./context";

/** SAMPLE's percent when none is asked (VerifyBackupRequest.sample_percent 0). */
export const DEFAULT_SAMPLE_PERCENT = 10;

/** The mode a request means (UNSPECIFIED = SAMPLE). */
export const verifyModeOf = (m: VerifyMode): VerifyMode =>
  m === VerifyMode.VERIFY_MODE_UNSPECIFIED ? VerifyMode.VERIFY_MODE_SAMPLE : m;

/** The short name of a mode, for messages and metric labels ("metadata", "sample", "full", "source"). */
export const verifyModeName = (m: VerifyMode): string =>
  (VerifyMode[m] ?? String(m)).replace("VERIFY_MODE_", "").toLowerCase();

/** The lease operation of a VERIFY attempt (`digestMap`: SOURCE only, the map as the backup's cluster keeps it). */
export function verifyRequest(
  b: Located,
  j: JobRecord,
  op: Extract<JobRecord["operation"], { kind: "verify" }>,
  digestMap: Uint8Array | undefined,
): VerifyRequest {
  const source = op.mode === VerifyMode.VERIFY_MODE_SOURCE;
  const v = b.volume;
  return {
    backupId: b.id,
    mode: op.mode,
    samplePercent: op.samplePercent,
    backupPool: b.location.pool,
    backupNamespace: b.location.namespace,
    baseImage: b.baseImage,
    snapshot: b.snapshot,
    imageDigest: b.integrity?.imageDigest ?? "",
    jobId: j.id,
    source: source ? { pool: v.pool, namespace: v.namespace, image: v.image } : undefined,
    digestMap: source ? (digestMap ?? new Uint8Array()) : new Uint8Array(),
  };
}

/**
 * A VERIFY's result: the backup's integrity records it; a mismatch makes an AVAILABLE backup CORRUPT.
 * Call inside the transaction that ends the job.
 */
export function verified(ctx: SchedulerContext, b: Backup, r: VerifyResult): void {
  const integrity = {
    imageDigest: "",
    digestBlockSize: 0,
    corruptReason: "",
    firstBadOffset: 0,
    firstBadLength: 0,
    ...b.integrity,
    lastVerifiedAt: new Date(ctx.now()),
    lastVerifyMode: r.mode,
    lastVerifyOk: r.ok,
  };
  if (!r.ok) {
    integrity.corruptReason = r.reason || `a ${verifyModeName(r.mode)} verification found a mismatch`;
    integrity.firstBadOffset = r.firstBadOffset;
    integrity.firstBadLength = r.firstBadLength;
    if (b.status === BackupStatus.BACKUP_STATUS_AVAILABLE) b.status = BackupStatus.BACKUP_STATUS_CORRUPT;
    ctx.log.error("a verification found a backup corrupt", {
      backup: b.id,
      mode: verifyModeName(r.mode),
      reason: integrity.corruptReason,
      firstBadOffset: r.firstBadOffset,
      firstBadLength: r.firstBadLength,
    });
  }
  b.integrity = integrity;
  ctx.catalog.updateBackup(b);
}

export { DELETE_UNFINISHED };

/** Whether a DELETED backup's delete left something behind (DeleteBackup may run again). */
export const deleteUnfinished = (b: Backup): boolean =>
  b.status === BackupStatus.BACKUP_STATUS_DELETED && b.error.startsWith(DELETE_UNFINISHED);

/**
 * The status a backup whose delete failed goes back to: FAILED for a failed backup's (`failedBackup`, the
 * delete job's mark); CORRUPT when a verification found it so; DELETED for one an earlier delete already
 * emptied (a second delete of its leftovers that failed too).
 */
export const statusBeforeDelete = (b: Backup, failedBackup = false): BackupStatus =>
  failedBackup
    ? BackupStatus.BACKUP_STATUS_FAILED
    : b.error.startsWith(DELETE_UNFINISHED)
      ? BackupStatus.BACKUP_STATUS_DELETED
      : b.integrity?.corruptReason
        ? BackupStatus.BACKUP_STATUS_CORRUPT
        : BackupStatus.BACKUP_STATUS_AVAILABLE;

const locationOf = (b: Backup): string => `${b.location?.cluster}/${b.location?.pool}/${b.location?.namespace}`;

/** The other backups of `b`'s volume at `b`'s location, in one of `statuses`, oldest first. */
function othersAt(catalog: Catalog, b: Located, statuses: BackupStatus[]): Backup[] {
  const v = b.volume;
  const here = locationOf(b);
  return catalog
    .backupsOfVolume(v.cluster, v.pool, v.namespace, v.image, statuses)
    .filter((o) => o.id !== b.id && o.baseImage && locationOf(o) === here && statuses.includes(o.status));
}

/**
 * The most blocks a chain's digest map may have: a chain keeps the block size its full backup chose
 * (≤ 2^18 blocks: agents/transfer/digests/format.ts blockSizeFor) until the volume passes 2^18 of
 * them, when the destination coarsens an incremental's map (DigestMapBuilder.overlay) — an agent before
 * 2026-12-07 did not, so a volume that grew added blocks. Past three times that from the newest map
 * (a 6 MiB map; a SOURCE verification carries the map in one session message), the next backup starts
 * a new chain, whose full backup sizes its blocks for the volume as it is.
 */
export const MAX_CHAIN_MAP_BLOCKS = 3 * 2 ** 18;

/**
 * Why a backup of `b` (sizeBytes: the volume's size when it was queued) to `b`'s location must be FULL
 * because its volume outgrew the chain's digest map: "" when it need not.
 */
export function grownChainReason(catalog: Catalog, b: Located): string {
  const newest = othersAt(catalog, b, [BackupStatus.BACKUP_STATUS_AVAILABLE]).at(-1);
  // Only a chain with a map (its newest backup has a digest): the block size is the map's.
  const block = newest?.integrity?.imageDigest ? newest.integrity.digestBlockSize : 0;
  if (!newest || block <= 0 || b.sizeBytes <= 0) return "";
  const blocks = Math.ceil(b.sizeBytes / block);
  if (blocks <= MAX_CHAIN_MAP_BLOCKS) return "";
  return `the volume grew to ${b.sizeBytes} bytes: chain ${newest.baseImage}'s digest map (${block}-byte blocks) would hold ${blocks} blocks, over ${MAX_CHAIN_MAP_BLOCKS}: a new chain starts with a full backup`;
}

/**
 * Why a backup of `b`'s volume to `b`'s location must be FULL: the chain it would extend (the base
 * image of the newest AVAILABLE or CORRUPT backup there) holds a CORRUPT backup. "" when it need not.
 */
export function corruptChainReason(catalog: Catalog, b: Located): string {
  const chainOf = othersAt(catalog, b, [BackupStatus.BACKUP_STATUS_AVAILABLE, BackupStatus.BACKUP_STATUS_CORRUPT]);
  const newest = chainOf.at(-1);
  if (!newest) return "";
  const bad = chainOf.filter(
    (o) => o.baseImage === newest.baseImage && o.status === BackupStatus.BACKUP_STATUS_CORRUPT,
  );
  const first = bad.at(-1);
  if (!first) return "";
  const why = first.integrity?.corruptReason ? ` (${first.integrity.corruptReason})` : "";
  return `backup ${first.id} of chain ${newest.baseImage} is CORRUPT${why}: a new chain starts with a full backup`;
}
