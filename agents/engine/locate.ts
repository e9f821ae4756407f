/** Finding a backup in a pool of this cluster: its base image and snapshot, from the catalog's hint or by scanning. */

import { notFound } from "../../src/common/errors";
import { isBaseImage, parseBackupSnap } from "../../src/common/ids";
import type { Image, IoCtx } from "../ceph";
import { isCephError } from "../ceph";

export interface Located {
  baseImage: string;
  snapshot: string;
  /** Size of the image at the snapshot. */
  size: number;
  protected: boolean;
}

async function findOn(img: Image, backupId: string): Promise<Omit<Located, "baseImage"> | null> {
  for (const s of await img.snapList()) {
    if (parseBackupSnap(s.name)?.backupId === backupId)
      return { snapshot: s.name, size: s.size, protected: s.protected };
  }
  return null;
}

/**
 * The base image and snapshot of backup `backupId`. With `baseImage` given, looks only there;
 * otherwise scans the base images of the pool. NOT_FOUND when it is nowhere.
 */
export async function locateBackup(io: IoCtx, backupId: string, baseImage?: string): Promise<Located> {
  const candidates = baseImage ? [baseImage] : (await io.imageList()).filter(isBaseImage);
  // Scan newest-looking names last is not possible (ids are random); the base image of a chain's
  // first backup is the most likely hit.
  candidates.sort((a, b) => Number(b.endsWith(backupId)) - Number(a.endsWith(backupId)));
  for (const name of candidates) {
    let img: Image;
    try {
      img = await io.imageOpen(name, { readOnly: true });
    } catch (e) {
      if (isCephError(e, "ENOENT")) continue;
      throw e;
    }
    try {
      const hit = await findOn(img, backupId);
      if (hit) return { baseImage: name, ...hit };
    } finally {
      await img.close();
    }
  }
  const where = baseImage ? `base image ${io.label}/${baseImage}` : `any base image in ${io.label}`;
  throw notFound(`backup ${backupId} not found on ${where}`);
}
