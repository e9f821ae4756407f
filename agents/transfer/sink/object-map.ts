/**
 * A full backup's base image is written without its object map, which is built once the data is in.
 *
 * Each write into an object that does not exist yet first updates the image's object map — one RADOS
 * object, whose updates the OSD applies one at a time — so a sparse image's scattered extents wait on
 * them whatever the write window (`rbd bench` 256 KiB random writes into a fresh 4 GiB image: 221–271
 * writes/s with object-map and fast-diff, 696–1,306 without). So a BACKUP_FULL base image asked with
 * object-map is created without object-map and fast-diff (`deferredFeatures`), and the commit enables
 * them and rebuilds the map (`buildObjectMap`: a scan of every object, ~15 ms per GiB of image) before
 * the digest map, the metadata object and the snapshot — the snapshot's object map is the rebuilt one.
 * Only up to DEFER_UP_TO_BYTES of image: past that the scan costs more than the updates it saves on most
 * images. The commit looks at the image itself, so a resumed transfer (its image opened, not created)
 * builds the map too; a failed build fails the commit, and the base image is removed as any failed full
 * backup's.
 */
import { RbdFeature as F } from "../../ceph";
import type { SinkImage } from "./ports";

/** The largest image whose object map is built after the data (64 GiB: a scan of ~1 s on the lab). */
export const DEFER_UP_TO_BYTES = 64 * 1024 ** 3;
const MAP = F.objectMap | F.fastDiff;
/** A header that names no features gets these: layering, exclusive-lock, object-map, fast-diff, deep-flatten. */
const BASE_FEATURES = 1n | 4n | 8n | 16n | 32n;

/** The features a header asks the new image to have. */
export function headerFeatures(features: number): bigint {
  return features === 0 ? BASE_FEATURES : BigInt(features);
}

/** The features left out of the create (object-map and fast-diff), or 0n when the map is kept. */
export function deferredFeatures(features: bigint, imageSize: number): bigint {
  if (!(features & F.objectMap) || imageSize > DEFER_UP_TO_BYTES) return 0n;
  return features & MAP;
}

/**
 * Enables the header's object-map and fast-diff when the image lacks them (created without: see above)
 * and rebuilds the map; nothing when the image has its map or the header asks for none.
 * Returns whether it built one.
 */
export async function buildObjectMap(
  image: Pick<SinkImage, "stat" | "updateFeatures" | "rebuildObjectMap">,
  headerFeatures: bigint,
): Promise<boolean> {
  const want = headerFeatures & MAP;
  if (!(want & F.objectMap)) return false;
  const have = (await image.stat()).features;
  if (have & F.objectMap) return false;
  await image.updateFeatures(want, true);
  await image.rebuildObjectMap();
  return true;
}
