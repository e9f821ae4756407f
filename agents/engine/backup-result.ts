/**
 * The BackupResult of the cases that are not a fresh transfer's plain report: the counts a source
 * read and sent, and the result of a backup an earlier attempt of the same job completed (the "lost
 * outcome": its agent stopped before the coordinator heard, so the retry reports it, with a warning).
 */
import type { BackupRequest, BackupResult } from "../../src/gen/rbdbackup/v1/agent";
import type { BackupSnapshot } from "../../src/gen/rbdbackup/v1/transfer";
import { newStats, type SourceStats } from "../transfer/source";

/**
 * The backup snapshots left on the volume after a backup's prune (listed there, minus what it removed),
 * carried on the BackupResult object under a symbol — never encoded, so nothing goes on the wire: the
 * lease runner puts them into JobOutcome.source_snapshots instead of opening the volume again to list
 * them. Absent when the prune's listing failed (the runner then lists).
 */
export const SOURCE_SNAPSHOTS: unique symbol = Symbol("sourceSnapshots");
export type WithSourceSnapshots = BackupResult & { [SOURCE_SNAPSHOTS]?: BackupSnapshot[] };

/** The warning of a result whose backup an earlier attempt completed. */
export const COMPLETED_EARLIER_WARNING =
  "completed by an earlier attempt whose result was lost (its agent stopped before reporting): the data counts are not known, and older source snapshots are pruned by the next backup";

/** The warning of a result whose backup the destination committed while this attempt was being stopped. */
export const COMMITTED_WHILE_STOPPED_WARNING =
  "stopped after the destination had every byte: it committed the backup, which is kept (its data counts are not known here)";

/** The result fields that count what the source read and sent. */
export function sentFields(s: SourceStats) {
  return {
    bytesRead: s.bytesRead,
    dataBytesSent: s.dataBytes,
    zeroBytes: s.zeroBytes,
    dataChunks: s.dataChunks,
    zeroRanges: s.zeroRanges,
    extents: s.extents,
  };
}

/** The result for a backup an earlier attempt of the same job completed on `chain`. */
export function completedEarlier(
  req: BackupRequest,
  chain: { baseImage: string; snapshots: Array<{ name: string; backupId: string; size: number }> },
  started: number,
  where: { destPool: string; destNs: string; fsid: string },
  warning = COMPLETED_EARLIER_WARNING,
): BackupResult {
  const i = chain.snapshots.findIndex((s) => s.backupId === req.backupId);
  const snap = chain.snapshots[i] as { name: string; size: number };
  return {
    backupId: req.backupId,
    baseImage: chain.baseImage,
    snapshot: snap.name,
    incremental: i > 0,
    parentSnapshot: i > 0 ? (chain.snapshots[i - 1]?.name ?? "") : "",
    forcedFullReason: "",
    imageSize: snap.size,
    ...sentFields(newStats()),
    seconds: (Date.now() - started) / 1000,
    sourceSnapshotsRemoved: [],
    warnings: [warning],
    destinationPool: where.destPool,
    destinationNamespace: where.destNs,
    destinationFsid: where.fsid,
    imageDigest: "",
    digestBlockSize: 0,
    resumedFrom: 0,
    resumeFallbackReason: "",
  };
}
