/**
 * Backup snapshots ("backup.<id>.snap.<ts>") on an RBD image, as listed: the form the Cinder driver's
 * get_backup_snaps, chain listings and confirmations answer with. Below the engine, so the sink lists
 * what it just committed with the same code (sink/recent-commits.ts).
 */
import { notFound } from "../../src/common/errors";
import { parseBackupSnap } from "../../src/common/ids";
import type { BackupSnapshot } from "../../src/gen/rbdbackup/v1/transfer";
import type { Cluster, Image, IoCtx, SnapInfo } from "../ceph";
import { isCephError } from "../ceph";

/** A listed snapshot as a backup snapshot (null: its name is not a backup snapshot's). */
export function backupSnapshotOf(s: SnapInfo): BackupSnapshot | null {
  const p = parseBackupSnap(s.name);
  return p ? { name: s.name, backupId: p.backupId, timestamp: p.timestamp, snapId: s.id, size: s.size } : null;
}

/** The backup snapshots among `snaps`, by snapshot id. */
export function backupSnapshots(snaps: SnapInfo[]): BackupSnapshot[] {
  const out: BackupSnapshot[] = [];
  for (const s of snaps) {
    const b = backupSnapshotOf(s);
    if (b) out.push(b);
  }
  return out.sort((a, b) => a.snapId - b.snapId);
}

/** The few calls listing needs (the real Cluster, and the sink's, have them). */
export interface ListingCluster extends Pick<Cluster, "poolExists"> {
  openIoCtx(
    pool: string,
    opts: { namespace?: string },
  ): Promise<
    Pick<IoCtx, "close"> & {
      imageOpen(name: string, opts?: { readOnly?: boolean }): Promise<Pick<Image, "snapList" | "close">>;
    }
  >;
}

/** Backup snapshots of an image (NOT_FOUND when the pool or image does not exist). */
export async function listImageBackupSnapshots(
  cluster: ListingCluster,
  pool: string,
  namespace: string,
  image: string,
): Promise<BackupSnapshot[]> {
  if (!(await cluster.poolExists(pool))) throw notFound(`pool ${pool} not found`);
  const io = await cluster.openIoCtx(pool, { namespace });
  try {
    const img = await io.imageOpen(image, { readOnly: true }).catch((e) => {
      if (isCephError(e, "ENOENT"))
        throw notFound(`image ${pool}/${namespace ? `${namespace}/` : ""}${image} not found`);
      throw e;
    });
    try {
      return backupSnapshots(await img.snapList());
    } finally {
      await img.close();
    }
  } finally {
    await io.close();
  }
}
