/**
 * Which backup snapshots on a source volume may go — pure, so it is tested with plain records. The
 * source keeps only what a live chain needs (or up to max_snapshots):
 *
 *  - a snapshot of a backup the catalog holds DELETED or FAILED goes (its base-image snapshot is gone or
 *    never was: no incremental can start from it);
 *  - of the AVAILABLE backups, each location (cluster/pool/namespace) keeps the one whose snapshot is the
 *    newest on the source — the parent its next incremental diffs from (the agent's choosePlan picks the
 *    newest snapshot found on both sides); with max_snapshots > 0 the newest max_snapshots live backup
 *    snapshots stay too; the other AVAILABLE ones go. When max_snapshots is unknown (the volume's newest
 *    backup job is gone from the catalog), every AVAILABLE backup's snapshot stays;
 *  - everything else stays: backups being made or deleted (CREATING, DELETING), any other status
 *    (CORRUPT: a SOURCE verification may still want it), names the catalog does not know (another
 *    catalog's, or a user's), and the snapshots of backups a SOURCE verification queued or running reads
 *    (`reading`: it holds only the backup's shared lock, not the volume's, so a backup of the volume may
 *    end — and sweep — while it runs).
 */
import { BackupStatus } from "../../gen/rbdbackup/v1/backup_service";
import type { Backup } from "../model";

/** A backup snapshot on the source volume (as the agent lists it). */
export interface SourceSnap {
  name: string;
  backupId: string;
  snapId: number;
}

export interface Removal {
  backupId: string;
  snapshot: string;
  reason: string;
}

const locationOf = (b: Backup): string =>
  b.location ? `${b.location.cluster}/${b.location.pool}/${b.location.namespace}` : "";

/**
 * The snapshots of `onSource` that may go, given the catalog's backups of the volume and max_snapshots of
 * its newest backup job (null: unknown, AVAILABLE backups' snapshots all stay).
 */
export function snapshotsToRemove(
  onSource: SourceSnap[],
  backups: Backup[],
  maxSnapshots: number | null,
  reading: ReadonlySet<string> = new Set(),
): Removal[] {
  return planRemovals(onSource, backups, maxSnapshots).filter((r) => !reading.has(r.backupId));
}

function planRemovals(onSource: SourceSnap[], backups: Backup[], maxSnapshots: number | null): Removal[] {
  const byId = new Map(backups.map((b) => [b.id, b]));
  const snaps = [...onSource].sort((a, b) => a.snapId - b.snapId);
  const out: Removal[] = [];
  const live: SourceSnap[] = [];
  for (const s of snaps) {
    const b = byId.get(s.backupId);
    if (!b) continue;
    if (b.status === BackupStatus.BACKUP_STATUS_DELETED || b.status === BackupStatus.BACKUP_STATUS_FAILED) {
      out.push({ backupId: s.backupId, snapshot: s.name, reason: `backup ${b.id} is ${statusName(b.status)}` });
    } else live.push(s);
  }
  if (maxSnapshots === null) return out;
  const keep = new Set<string>();
  // Each location's newest AVAILABLE backup snapshot on the source (snaps are in creation order).
  const newestAt = new Map<string, string>();
  for (const s of live) {
    const b = byId.get(s.backupId) as Backup;
    if (b.status === BackupStatus.BACKUP_STATUS_AVAILABLE) newestAt.set(locationOf(b), s.name);
  }
  for (const name of newestAt.values()) keep.add(name);
  if (maxSnapshots > 0) for (const s of live.slice(-maxSnapshots)) keep.add(s.name);
  // The agent removes by backup id, every snapshot of it (source-prune.ts): a backup with a snapshot
  // kept is not named at all — its second snapshot (two attempts at once, a look-alike name) stays too.
  const keptIds = new Set(live.filter((s) => keep.has(s.name)).map((s) => s.backupId));
  for (const s of live) {
    const b = byId.get(s.backupId) as Backup;
    if (b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE || keptIds.has(s.backupId)) continue;
    const beyond = maxSnapshots > 0 ? ` and beyond max_snapshots ${maxSnapshots}` : "";
    out.push({
      backupId: s.backupId,
      snapshot: s.name,
      reason: `backup ${b.id} is not the newest available backup in ${locationOf(b)}${beyond}`,
    });
  }
  return out;
}

function statusName(s: BackupStatus): string {
  return (BackupStatus[s] ?? String(s)).replace("BACKUP_STATUS_", "");
}
