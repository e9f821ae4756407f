/**
 * The decisions of a volume backup, pure (no Ceph): what an earlier attempt of the same backup left
 * behind, full or incremental (which chain, which parent snapshot), and when a failed incremental is
 * redone as a full backup. The volume backup (backup-volume.ts) acts on them.
 */
import { failedPrecondition } from "../../src/common/errors";
import { baseImageName, parseBackupSnap } from "../../src/common/ids";
import { BackupMode, type BackupRequest } from "../../src/gen/rbdbackup/v1/agent";
import { SourceReadError } from "../transfer/source";

export interface Plan {
  incremental: boolean;
  baseImage: string;
  /** The snapshot the diff starts from (null: full). */
  parent: string | null;
  /** Why AUTO fell back to a full backup ("" when it did not, or FULL was asked for). */
  forcedFullReason: string;
  /** Snapshots on the chosen chain's base image (pruning removes the volume's older ones). */
  chainSnapshots: Set<string>;
}

/** A chain kept in the destination pool, as the destination lists it. */
export interface ChainView {
  baseImage: string;
  snapshots: Array<{ name: string; snapId: number; backupId: string; size: number }>;
}

/** A full backup into a new base image "<volume>.backup.<id>". */
export function fullPlan(volumeImage: string, backupId: string, reason: string): Plan {
  return {
    incremental: false,
    baseImage: baseImageName(volumeImage, backupId),
    parent: null,
    forcedFullReason: reason,
    chainSnapshots: new Set(),
  };
}

/** Chooses full or incremental from the volume's snapshots and the destination's chains. */
export function choosePlan(
  req: BackupRequest,
  volumeImage: string,
  sourceSnapNames: string[],
  chains: Array<{ baseImage: string; snapshots: Array<{ name: string; snapId: number }> }>,
): Plan {
  if (req.mode === BackupMode.BACKUP_MODE_FULL) return fullPlan(volumeImage, req.backupId, "");
  const onSource = new Set(sourceSnapNames.filter((n) => parseBackupSnap(n)));
  // The newest (by creation order on the source) backup snapshot present on a base image too.
  let best: { chain: (typeof chains)[number]; name: string; order: number } | null = null;
  for (const chain of chains) {
    for (const s of chain.snapshots) {
      if (!onSource.has(s.name)) continue;
      const order = sourceSnapNames.indexOf(s.name);
      if (!best || order > best.order) best = { chain, name: s.name, order };
    }
  }
  if (!best) {
    const reason =
      chains.length === 0
        ? "no earlier backup of this volume exists in the destination pool"
        : onSource.size === 0
          ? `the volume has no backup snapshot left to diff from (base images: ${chains.map((c) => c.baseImage).join(", ")})`
          : "no backup snapshot exists on both the volume and a base image";
    if (req.mode === BackupMode.BACKUP_MODE_INCREMENTAL) {
      throw failedPrecondition(`an incremental backup is not possible: ${reason}`);
    }
    return fullPlan(volumeImage, req.backupId, reason);
  }
  return {
    incremental: true,
    baseImage: best.chain.baseImage,
    parent: best.name,
    forcedFullReason: "",
    chainSnapshots: new Set(best.chain.snapshots.map((s) => s.name)),
  };
}

/**
 * What an earlier attempt of this backup id left, judged only when the volume still carries a
 * snapshot of this backup id (an attempt whose agent died before cleaning up):
 *  - "completed": the backup exists on a base image and this is a job's retry — an earlier attempt
 *    committed it (its snapshot on the base image is a backup's last step) but its outcome was lost;
 *  - "exists": the backup exists and no job retries it — the same id again is a conflict;
 *  - "leftovers": only source snapshots are left, to remove before going on;
 *  - "none": nothing is left.
 */
export type EarlierAttempt =
  | { kind: "none" }
  | { kind: "completed"; chain: ChainView }
  | { kind: "exists"; baseImage: string }
  | { kind: "leftovers"; snapshots: string[] };

export function earlierAttempt(req: BackupRequest, sourceSnapNames: string[], chains: ChainView[]): EarlierAttempt {
  const leftovers = sourceSnapNames.filter((n) => parseBackupSnap(n)?.backupId === req.backupId);
  if (leftovers.length === 0) return { kind: "none" };
  const done = chains.find((ch) => ch.snapshots.some((s) => s.backupId === req.backupId));
  if (done && req.jobId) return { kind: "completed", chain: done };
  if (done) return { kind: "exists", baseImage: done.baseImage };
  return { kind: "leftovers", snapshots: leftovers };
}

/** AUTO: an incremental whose diff failed on our side is redone as a full backup (null: not redone). */
export function fallbackPlan(req: BackupRequest, volumeImage: string, failed: Plan, e: unknown): Plan | null {
  if (!(failed.incremental && req.mode === BackupMode.BACKUP_MODE_AUTO && e instanceof SourceReadError)) return null;
  return fullPlan(volumeImage, req.backupId, `the incremental diff from ${failed.parent} failed (${e.message})`);
}
