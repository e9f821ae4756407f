/**
 * The exact diff of an image, walked only over the objects that changed. librbd 16's exact diff
 * (rbd_diff_iterate2 with whole_object false) asks every object of the range about its extents, one
 * RADOS op each (list_snaps), however little changed — measured on the lab: 1.1 s and 0.85 CPU-s for the
 * exact diff of a 64 GiB image with 128 objects changed, against 0.11 s for its whole-object diff, and
 * it grows with the image (an hourly incremental of a 1 TiB volume would walk 262,144 objects). With
 * fast-diff and a valid object map, the whole-object diff reads the object maps instead; so the changed
 * objects are found first that way, at almost no cost, and the exact walk then covers only their runs
 * (runs a few unchanged objects apart are walked as one: an unchanged object costs one op).
 * The extents are the same, in the same ascending order.
 *
 * Used only where the object map can answer: fast-diff and object-map on, neither flagged invalid at the
 * snapshot the image is open at, and no fancy striping (an object is then one contiguous range of the
 * image). Otherwise — or when whole objects are asked for anyway — the plain diff. Nor for a clone's
 * diff from its creation with the parent's data (a full backup of a volume made from an image): librbd's
 * whole-object diff in fast-diff mode left the parent's extents out before ceph/ceph#44496 (16.2.8), and
 * the pruned walk would then send none of the data the clone reads through to its parent.
 */
import type { DiffOptions, Extent } from "./image";
import { RbdFeature } from "./io-ctx";
import type { ImageStat } from "./native";

/** RBD_FLAG_OBJECT_MAP_INVALID | RBD_FLAG_FAST_DIFF_INVALID (librbd/Features.h). */
const MAP_INVALID_FLAGS = 1 | 2;
/** Runs of changed objects at most this many unchanged objects apart are walked as one. */
export const RUN_GAP_OBJECTS = 8;

/** What prunedDiff needs of an image (Image has it; tests pass a fake). */
export interface DiffableImage {
  stat(): Promise<ImageStat>;
  diff(opts?: DiffOptions): AsyncGenerator<Extent[], void, undefined>;
}

/** Whether the image's object map can say which objects changed (see the module comment). */
export function objectMapAnswers(st: ImageStat): boolean {
  const needed = RbdFeature.objectMap | RbdFeature.fastDiff;
  if ((st.features & needed) !== needed) return false;
  if ((st.flags & MAP_INVALID_FLAGS) !== 0) return false;
  return st.stripeCount <= 1 || st.stripeUnit === st.objectSize;
}

/** Changed objects (whole-object extents, ascending) coalesced into runs [offset, length). */
export async function changedRuns(
  image: DiffableImage,
  opts: DiffOptions,
  objectSize: number,
): Promise<Array<[number, number]>> {
  const runs: Array<[number, number]> = [];
  const gap = RUN_GAP_OBJECTS * objectSize;
  for await (const batch of image.diff({ ...opts, wholeObject: true, batchSize: 4096 })) {
    for (const e of batch) {
      const last = runs[runs.length - 1];
      if (last && e.offset <= last[0] + last[1] + gap) last[1] = Math.max(last[1], e.offset + e.length - last[0]);
      else runs.push([e.offset, e.length]);
    }
  }
  return runs;
}

/** The exact diff (DiffOptions as Image.diff), walked only over changed objects when the object map can say which. */
export async function* prunedDiff(
  image: DiffableImage,
  opts: DiffOptions = {},
): AsyncGenerator<Extent[], void, undefined> {
  if (opts.wholeObject) {
    yield* image.diff(opts);
    return;
  }
  const st = await image.stat();
  const throughParent = !opts.fromSnapshot && opts.includeParent !== false && st.parentOverlap > 0;
  if (!objectMapAnswers(st) || throughParent) {
    yield* image.diff(opts);
    return;
  }
  for (const [offset, length] of await changedRuns(image, opts, st.objectSize)) {
    yield* image.diff({ ...opts, offset, length });
  }
}
