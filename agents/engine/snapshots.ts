/**
 * Backup snapshots on RBD images: listing (the Cinder driver's get_backup_snaps), the chains kept in
 * a backup pool, and source snapshot hygiene after a backup. Only names matching the backup pattern
 * are ever touched.
 */

import { notFound } from "../../src/common/errors";
import { parseBaseImage } from "../../src/common/ids";
import type { BackupSnapshot, Chain } from "../../src/gen/rbdbackup/v1/transfer";
import type { Cluster, Image, SnapInfo } from "../ceph";
import { isCephError } from "../ceph";
import { backupSnapshots } from "../transfer/backup-snapshots";

export { backupSnapshots, listImageBackupSnapshots } from "../transfer/backup-snapshots";

/** Chains of `volumeImage` kept in pool/namespace: base images "<volumeImage>.backup.<id>" and their snapshots. */
export async function listChains(
  cluster: Cluster,
  pool: string,
  namespace: string,
  volumeImage: string,
): Promise<Chain[]> {
  if (!(await cluster.poolExists(pool))) throw notFound(`backup pool ${pool} not found`);
  const io = await cluster.openIoCtx(pool, { namespace });
  try {
    const chains: Chain[] = [];
    for (const name of await io.imageList()) {
      if (!parseBaseImage(name, volumeImage)) continue;
      let img: Image;
      try {
        img = await io.imageOpen(name, { readOnly: true });
      } catch (e) {
        if (isCephError(e, "ENOENT")) continue; // removed meanwhile
        throw e;
      }
      try {
        chains.push({ baseImage: name, snapshots: backupSnapshots(await img.snapList()) });
      } finally {
        await img.close();
      }
    }
    return chains;
  } finally {
    await io.close();
  }
}

/**
 * Which backup snapshots of the source to remove after a backup that created `newest` on the chain
 * whose base image holds `chainSnapshots`:
 *  - maxSnapshots > 0: keep the newest maxSnapshots backup snapshots, remove the older ones;
 *  - otherwise: remove this chain's older snapshots (the chain only needs its newest); snapshots the
 *    chain does not hold (other chains', unknown) stay.
 * Snapshots in `keep`, and protected ones, always stay.
 */
export function snapshotsToPrune(
  source: SnapInfo[],
  newest: string,
  chainSnapshots: Set<string>,
  maxSnapshots: number,
  keep: Set<string>,
): string[] {
  const ours = backupSnapshots(source);
  const newestSnap = ours.find((s) => s.name === newest);
  if (!newestSnap) return [];
  const protectedNames = new Set(source.filter((s) => s.protected).map((s) => s.name));
  let candidates: BackupSnapshot[];
  if (maxSnapshots > 0) {
    candidates = ours.slice(0, Math.max(0, ours.length - maxSnapshots));
  } else {
    candidates = ours.filter((s) => s.snapId < newestSnap.snapId && chainSnapshots.has(s.name));
  }
  return candidates.map((s) => s.name).filter((n) => n !== newest && !keep.has(n) && !protectedNames.has(n));
}
