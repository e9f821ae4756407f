/**
 * The layout a restore to a new volume re-creates — pure: the backup's order, stripe unit and count and
 * features, as backup.<id>.meta records the source image at the backup's snapshot (the base image's own
 * when the metadata object is missing: it was created with the source's geometry). Features no new image
 * can be created with are dropped here, named in a warning: a data pool (the source cluster's pool, not
 * the target's) and the bits librbd sets itself (operations, migrating, non-primary, ...). Those
 * the target cluster's librbd refuses are dropped by the sink when it creates the image
 * (agents/transfer/sink/create-image.ts).
 */
import { RbdFeature as F, featureNames } from "../ceph";
import type { BackupMetadataV1 } from "./metadata";

/** Features a new image may be created with. */
const CREATABLE = F.layering | F.stripingV2 | F.exclusiveLock | F.objectMap | F.fastDiff | F.deepFlatten | F.journaling;
const KNOWN = Object.values(F).reduce((a, b) => a | b, 0n);

/** The names of the bits set (librbd's names, unknown bits as their value). */
export function describeFeatures(features: bigint): string {
  const unknown = features & ~KNOWN;
  return [...featureNames(features), ...(unknown ? [`0x${unknown.toString(16)}`] : [])].join(", ");
}

export interface ImageFacts {
  features: bigint;
  order: number;
  stripeUnit: number;
  stripeCount: number;
}

export interface RestoreLayout {
  features: bigint;
  order: number;
  /** 0 / 0 when the image is not striped (librbd's default: stripe unit = object size, count 1). */
  stripeUnit: number;
  stripeCount: number;
  warnings: string[];
}

/** The new volume's layout from the backup's metadata (or, without it, the base image's facts). */
export function restoreLayout(meta: BackupMetadataV1 | null, base: ImageFacts): RestoreLayout {
  const src: ImageFacts = meta
    ? {
        features: BigInt(meta.image.features),
        order: meta.image.order || base.order,
        stripeUnit: meta.image.stripe_unit ?? 0,
        stripeCount: meta.image.stripe_count ?? 0,
      }
    : base;
  const warnings: string[] = [];
  const striped = src.stripeCount > 1 || (src.stripeUnit !== 0 && src.stripeUnit !== 2 ** src.order);
  let features = src.features;
  const dropped = features & ~CREATABLE;
  if (dropped) {
    const why =
      dropped & F.dataPool
        ? "a data pool is the source cluster's pool and is not carried over; librbd sets the others itself"
        : "librbd sets them itself; a new image cannot be created with them";
    warnings.push(`features dropped on the restored image: ${describeFeatures(dropped)} (${why})`);
    features &= CREATABLE;
  }
  features = striped ? features | F.stripingV2 : features & ~F.stripingV2;
  // A header with no features means "the defaults" to the sink: keep at least layering.
  if (features === 0n) features = F.layering;
  return {
    features,
    order: src.order,
    stripeUnit: striped ? src.stripeUnit : 0,
    stripeCount: striped ? src.stripeCount : 0,
    warnings,
  };
}
