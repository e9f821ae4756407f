/**
 * A protected volume's recovery point: its newest AVAILABLE backup at the policy's destination, whoever
 * made it (a manual CreateBackup to the same place is as good a recovery point as a scheduled one). The
 * API's VolumeProtection and the runner's metrics both take it from here, so they never disagree.
 * Retention, by contrast, only ever touches the backups the policy made (retention-jobs.ts).
 */
import { BackupStatus } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Catalog } from "../catalog/catalog";
import type { Policy } from "./model";

export interface RecoveryPoint {
  id: string;
  /** Epoch ms: when the backup was created (its snapshot is taken just after), and when it completed. */
  at: number;
  completedAt: number;
}

export function recoveryPoint(catalog: Catalog, p: Policy, vol: VolumeRef): RecoveryPoint | undefined {
  const d = p.destination;
  let best: RecoveryPoint | undefined;
  for (const b of catalog.backupsOfVolume(vol.cluster, vol.pool, vol.namespace, vol.image)) {
    if (b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE || !b.location || !d) continue;
    if (b.location.cluster !== d.cluster || (d.pool && b.location.pool !== d.pool)) continue;
    if (b.location.namespace !== d.namespace) continue;
    const at = b.createdAt?.getTime() ?? 0;
    if (!best || at > best.at) best = { id: b.id, at, completedAt: b.completedAt?.getTime() ?? at };
  }
  return best;
}
