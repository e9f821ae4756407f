/**
 * Creating a new image with the features the header asks for, on a cluster whose librbd may not support
 * them all: when librbd refuses the features (ENOSYS: bits it does not know; EINVAL: a combination it
 * cannot create), the optional ones are dropped newest first — journaling, deep-flatten, fast-diff,
 * object-map, exclusive-lock — and the create tried again; a warning names what was dropped and why.
 * Layering and striping (the layout itself) are never dropped: a create that still fails fails.
 */
import { RbdFeature as F, featureNames, type ImageCreateOptions, isCephError } from "../../ceph";
import type { SinkIoCtx } from "./ports";

/** Droppable features, the first dropped first. */
const OPTIONAL = [F.journaling, F.deepFlatten, F.fastDiff, F.objectMap, F.exclusiveLock];

export async function createImageWithFeatures(
  io: Pick<SinkIoCtx, "imageCreate">,
  name: string,
  size: number,
  opts: ImageCreateOptions & { features: bigint },
  warnings: string[],
): Promise<void> {
  let features = opts.features;
  let first: unknown = null;
  for (;;) {
    try {
      await io.imageCreate(name, size, { ...opts, features });
      break;
    } catch (e) {
      if (!isCephError(e, "ENOSYS", "EINVAL")) throw e;
      first ??= e;
      const next = OPTIONAL.find((b) => features & b);
      if (next === undefined) throw first;
      features &= ~next;
    }
  }
  const dropped = opts.features & ~features;
  if (dropped) {
    warnings.push(
      `features dropped on ${name}: ${featureNames(dropped).join(", ")} (the target cluster refused them: ${(first as Error).message})`,
    );
  }
}
