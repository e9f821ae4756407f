/**
 * A fake image's stat() for the source tests (unit and integration): no object map (features 0), so
 * rbdMessages' diff is the fake's own diff() as it is (agents/ceph/pruned-diff.ts walks changed objects
 * first only with one).
 */
import type { ImageStat } from "../../agents/ceph";

export function statWithoutObjectMap(size: number): () => Promise<ImageStat> {
  const objectSize = 4 * 1024 * 1024;
  return async () => ({
    size,
    objectSize,
    numObjects: Math.ceil(size / objectSize),
    order: 22,
    features: 0n,
    flags: 0,
    stripeUnit: objectSize,
    stripeCount: 1,
    parentOverlap: 0,
  });
}
