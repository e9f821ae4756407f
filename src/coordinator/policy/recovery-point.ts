/**
 * A protected volume's recovery point: its newest AVAILABLE backup at the policy's destination, whoever
 * made it (a manual CreateBackup to the same place is as good a recovery point as a scheduled one). The
 * API's VolumeProtection and the runner's metrics both take it from here, so they never disagree.
 * Retention, by contrast, only ever touches the backups the policy made (retention-jobs.ts).
 */
import type { BackupLocation, VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { AvailableBackup, Catalog } from "../catalog/catalog";
import type { Backup } from "../model";
import { defaultPoolOf, type Policy } from "./model";

export interface RecoveryPoint {
  id: string;
  /** Epoch ms: when the backup was created (its snapshot is taken just after), and when it completed. */
  at: number;
  completedAt: number;
}

/** The newest of the AVAILABLE backups of `vol` that `here` accepts by their location (the catalog's index). */
function newestSummary(
  catalog: Catalog,
  vol: VolumeRef,
  here: (at: BackupLocation) => boolean,
): AvailableBackup | undefined {
  let best: AvailableBackup | undefined;
  for (const b of catalog.availableBackupsOfVolume(vol.cluster, vol.pool, vol.namespace, vol.image)) {
    if (!b.location || !here(b.location)) continue;
    if (!best || b.createdAt >= best.createdAt) best = b;
  }
  return best;
}

/** The newest AVAILABLE backup of `vol` among those `here` accepts by their location (newest createdAt). */
export function newestAvailable(
  catalog: Catalog,
  vol: VolumeRef,
  here: (at: BackupLocation) => boolean,
): Backup | undefined {
  const s = newestSummary(catalog, vol, here);
  return s ? catalog.getBackup(s.id) : undefined;
}

/**
 * Where `p` keeps its backups, as a test of a backup's location: its destination pool "" is the
 * cluster's default backup pool (`defaultPool`), as its jobs resolve it — not "any pool", which let
 * another policy's or a manual backup in another pool of that cluster stand as this policy's recovery
 * point (hiding LATE) or be verified in its place. Any pool only while that default is not known.
 */
export const atDestination =
  (p: Policy, defaultPool: (cluster: string) => string) =>
  (at: { cluster: string; pool: string; namespace: string }): boolean => {
    const d = p.destination;
    if (!d || at.cluster !== d.cluster || at.namespace !== d.namespace) return false;
    const pool = d.pool || defaultPool(d.cluster);
    return !pool || at.pool === pool;
  };

/** Each cluster's default backup pool as its agents registered it (defaultPoolOf without sessions). */
export const registeredDefaultPool = (catalog: Pick<Catalog, "listAgents">): ((cluster: string) => string) =>
  defaultPoolOf({ ofCluster: () => [] }, catalog.listAgents());

export function recoveryPoint(
  catalog: Catalog,
  p: Policy,
  vol: VolumeRef,
  defaultPool: (cluster: string) => string = registeredDefaultPool(catalog),
): RecoveryPoint | undefined {
  if (!p.destination) return undefined;
  const b = newestSummary(catalog, vol, atDestination(p, defaultPool));
  if (!b) return undefined;
  return { id: b.id, at: b.createdAt, completedAt: b.completedAt ?? b.createdAt };
}
