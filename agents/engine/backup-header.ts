/**
 * What a backup tells the destination before the first byte: the transfer header (kind, base image,
 * snapshots, geometry, features the base image may carry) and the backup.<id>.meta it stores at
 * commit. Pure: built from the request, the plan and the source image's facts.
 */

import type { BackupRequest } from "../../src/gen/rbdbackup/v1/agent";
import { type TransferHeader, TransferKind } from "../../src/gen/rbdbackup/v1/transfer";
import { RbdFeature } from "../ceph";
import type { Plan } from "./backup-plan";
import type { EngineContext } from "./context";
import { type BackupMetadataV1, encodeMetadata } from "./metadata";

/** Features a base image may carry: layering, striping, exclusive-lock, object-map, fast-diff, deep-flatten. */
const BASE_FEATURE_MASK = 1n | 2n | 4n | 8n | 16n | 32n;
/** The striping feature bit. */
const STRIPINGV2 = 2n;

/** Facts of the source image at the backup's snapshot. */
export interface SourceImageInfo {
  size: number;
  features: bigint;
  order: number;
  stripeUnit: number;
  stripeCount: number;
}

/**
 * The facts of a source image as a backup records and compares them: its features without
 * `operations`, the bit librbd sets itself while the image has op_features — for a while during any
 * snapshot's removal (snap-trash: another client's, or the coordinator's hygiene after the previous
 * backup), for clone v2 parents and children. Not part of the layout: recorded, it only earned a restore
 * a "features dropped" warning; compared, a removal in flight looked like the volume changing under its
 * snapshot.
 */
export function sourceFacts<T extends SourceImageInfo>(stat: T): T {
  return { ...stat, features: stat.features & ~RbdFeature.operations };
}

/** Whether the image is really striped (not the default stripe unit = object size, count 1). */
export function isStriped(info: SourceImageInfo): boolean {
  return info.stripeCount > 1 || (info.stripeUnit !== 0 && info.stripeUnit !== 2 ** info.order);
}

/** The base image's features: the source's, masked to what a base image may carry, layering always. */
export function baseImageFeatures(info: SourceImageInfo): number {
  const striped = isStriped(info);
  return Number((info.features & BASE_FEATURE_MASK & (striped ? ~0n : ~STRIPINGV2)) | 1n);
}

/** Where the backup goes. */
export interface Destination {
  pool: string;
  namespace: string;
  /** The destination's fsid as its chain listing reported it ("" = unknown). */
  fsid: string;
}

export function backupHeader(
  ctx: Pick<EngineContext, "source">,
  req: BackupRequest,
  p: Plan,
  snapName: string,
  info: SourceImageInfo,
  dest: Destination,
  meta: BackupMetadataV1,
): TransferHeader {
  const striped = isStriped(info);
  return {
    transferId: crypto.randomUUID(),
    jobId: req.jobId,
    kind: p.incremental ? TransferKind.BACKUP_INCREMENTAL : TransferKind.BACKUP_FULL,
    destination: { pool: dest.pool, namespace: dest.namespace, image: p.baseImage },
    fromSnapshot: p.parent ?? "",
    toSnapshot: snapName,
    imageSize: info.size,
    features: baseImageFeatures(info),
    order: info.order,
    stripeUnit: striped ? info.stripeUnit : 0,
    stripeCount: striped ? info.stripeCount : 0,
    imageMeta: {},
    backupId: req.backupId,
    metadataJson: encodeMetadata(meta),
    expectedFsid: req.destination?.clusterFsid || dest.fsid || "",
    chunkSize: ctx.source.chunkSize,
    resumeOffset: 0,
    resumePrefixDigest: new Uint8Array(0),
    resumable: false,
    allowOpen: false,
    compression: 0, // COMPRESSION_NONE; a shaped target (agents/transfer/shaping) sets it
  };
}

/** backup.<id>.meta of a volume backup. */
export function volumeMetadata(
  req: BackupRequest,
  source: { fsid: string; clusterName: string; pool: string; namespace: string; image: string; snapshot: string },
  info: SourceImageInfo,
  imageMeta: Record<string, string>,
  p: Plan,
): BackupMetadataV1 {
  return {
    version: 1,
    backup_id: req.backupId,
    created_at: new Date().toISOString(),
    volume: { id: req.volumeId, metadata: req.volumeMetadata },
    source: {
      kind: "rbd",
      cluster_fsid: source.fsid,
      cluster_name: source.clusterName,
      pool: source.pool,
      namespace: source.namespace,
      image: source.image,
      snapshot: source.snapshot,
    },
    image: {
      size: info.size,
      features: info.features.toString(),
      order: info.order,
      stripe_unit: info.stripeUnit,
      stripe_count: info.stripeCount,
      image_meta: imageMeta,
    },
    chain: {
      base_image: p.baseImage,
      incremental: p.incremental,
      parent_snapshot: p.parent,
      snapshot: source.snapshot,
      forced_full_reason: p.forcedFullReason,
    },
  };
}
