/**
 * Source snapshot hygiene on the coordinator's word (session Call `prune_snapshots`): removes the backup
 * snapshots "backup.<id>.snap.<ts>" of the named backup ids from one image, and nothing else. Which ids
 * may go is the coordinator's decision (src/coordinator/scheduler/hygiene-plan.ts); this side is narrow:
 * only names that parse as backup snapshots of those ids, never a protected one (a warning instead), and
 * a pool or image that is gone is nothing to do (a warning), not a failure.
 */
import { invalidArgument } from "../../src/common/errors";
import { isUuid, parseBackupSnap } from "../../src/common/ids";
import type { ImageRef } from "../../src/gen/rbdbackup/v1/common";
import type { PruneBackupSnapshotsRequest, PruneBackupSnapshotsResponse } from "../../src/gen/rbdbackup/v1/session";
import type { Cluster, Image, SnapInfo } from "../ceph";
import { isCephError } from "../ceph";
import { validName } from "../transfer/protocol";

/** At most this many backup ids in one call. */
export const MAX_PRUNE_IDS = 1000;

/** The request's image and ids, checked (INVALID_ARGUMENT naming the field). */
export function validatePrune(req: PruneBackupSnapshotsRequest): { image: ImageRef; ids: Set<string> } {
  const im = req.image;
  if (!im) throw invalidArgument("image is required");
  validName(im.pool, "image.pool");
  validName(im.namespace, "image.namespace", { allowEmpty: true });
  validName(im.image, "image.image");
  if (req.backupIds.length > MAX_PRUNE_IDS) throw invalidArgument(`at most ${MAX_PRUNE_IDS} backup_ids`);
  for (const id of req.backupIds) {
    if (!isUuid(id)) throw invalidArgument(`backup_ids: ${JSON.stringify(id)} is not a lowercase UUID`);
  }
  return { image: im, ids: new Set(req.backupIds) };
}

/** Pure: the snapshots of `snaps` to remove for `ids`, and the protected ones left (named in warnings). */
export function pruneSelection(snaps: SnapInfo[], ids: Set<string>): { remove: string[]; warnings: string[] } {
  const remove: string[] = [];
  const warnings: string[] = [];
  for (const s of snaps) {
    const p = parseBackupSnap(s.name);
    if (!p || !ids.has(p.backupId)) continue;
    if (s.protected) warnings.push(`${s.name} kept: it is protected`);
    else remove.push(s.name);
  }
  return { remove, warnings };
}

export async function pruneBackupSnapshots(
  cluster: Cluster,
  req: PruneBackupSnapshotsRequest,
): Promise<PruneBackupSnapshotsResponse> {
  const { image: im, ids } = validatePrune(req);
  const label = `${im.pool}/${im.namespace ? `${im.namespace}/` : ""}${im.image}`;
  const out: PruneBackupSnapshotsResponse = { removed: [], warnings: [] };
  if (ids.size === 0) return out;
  if (!(await cluster.poolExists(im.pool))) {
    out.warnings.push(`pool ${im.pool} not found: nothing to remove`);
    return out;
  }
  const io = await cluster.openIoCtx(im.pool, { namespace: im.namespace });
  let img: Image | null = null;
  try {
    try {
      img = await io.imageOpen(im.image);
    } catch (e) {
      if (!isCephError(e, "ENOENT")) throw e;
      out.warnings.push(`image ${label} not found: nothing to remove`);
      return out;
    }
    const { remove, warnings } = pruneSelection(await img.snapList(), ids);
    out.warnings.push(...warnings);
    for (const name of remove) {
      try {
        await img.snapRemove(name);
        out.removed.push(name);
      } catch (e) {
        if (!isCephError(e, "ENOENT"))
          out.warnings.push(`could not remove ${name} from ${label}: ${(e as Error).message}`);
      }
    }
    return out;
  } finally {
    await img?.close().catch(() => {});
    await io.close().catch(() => {});
  }
}
