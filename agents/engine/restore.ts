/**
 * Restore of a backup kept on this cluster, in one pass from its own snapshot on the base image (never
 * a replay of the chain), to a volume on the target agent's cluster: a new volume (only allocated
 * extents are written; the image is re-created with the backup's order, striping and features:
 * restore-layout.ts) or the original volume (every byte is written, the volume ends at the backup's
 * size). The metadata saved with the backup is re-applied (image-meta) and returned. Mode CLONE makes
 * no copy at all: clone.ts; mode FAILBACK sends a failed-over clone's changes back: failback.ts.
 */

import { invalidArgument, notFound } from "../../src/common/errors";
import { isUuid, metaObjectName } from "../../src/common/ids";
import { RestoreMode, type RestoreRequest, type RestoreResult } from "../../src/gen/rbdbackup/v1/agent";
import { type TransferHeader, TransferKind } from "../../src/gen/rbdbackup/v1/transfer";
import type { Image, IoCtx } from "../ceph";
import { isCephError } from "../ceph";
import { validName } from "../transfer/protocol";
import { newStats, rbdMessages, type SourceResume } from "../transfer/source";
import { restoreClone } from "./clone";
import type { EngineContext } from "./context";
import { failback } from "./failback";
import { locateBackup } from "./locate";
import { type BackupMetadataV1, decodeMetadata } from "./metadata";
import { newProgress, type Progress } from "./progress";
import { restoreLayout } from "./restore-layout";
import { sendResumable } from "./resume";

export function validateRestoreRequest(req: RestoreRequest): void {
  if (!isUuid(req.backupId)) throw invalidArgument("backup_id must be a lowercase UUID");
  validName(req.backupPool, "backup_pool");
  validName(req.backupNamespace, "backup_namespace", { allowEmpty: true });
  validName(req.baseImage, "base_image", { allowEmpty: true });
  validName(req.snapshot, "snapshot", { allowEmpty: true });
  if (!req.target) throw invalidArgument("target (pool, image) is required");
  validName(req.target.pool, "target pool");
  validName(req.target.namespace, "target namespace", { allowEmpty: true });
  validName(req.target.image, "target image");
  const modes = [
    RestoreMode.RESTORE_MODE_NEW,
    RestoreMode.RESTORE_MODE_ORIGINAL,
    RestoreMode.RESTORE_MODE_CLONE,
    RestoreMode.RESTORE_MODE_FAILBACK,
  ];
  if (!modes.includes(req.mode)) throw invalidArgument(`mode ${req.mode} is not NEW, ORIGINAL, CLONE or FAILBACK`);
}

/** Reads backup.<id>.meta; null when it does not exist. */
export async function readMetadata(io: IoCtx, backupId: string): Promise<BackupMetadataV1 | null> {
  try {
    return decodeMetadata(await io.objRead(metaObjectName(backupId)), backupId);
  } catch (e) {
    if (isCephError(e, "ENOENT")) return null;
    throw e;
  }
}

export async function restore(
  ctx: EngineContext,
  req: RestoreRequest,
  signal: AbortSignal,
  progress: Progress = newProgress(),
): Promise<RestoreResult> {
  validateRestoreRequest(req);
  if (req.mode === RestoreMode.RESTORE_MODE_CLONE) return restoreClone(ctx, req);
  if (req.mode === RestoreMode.RESTORE_MODE_FAILBACK) return failback(ctx, req, signal, progress);
  const started = Date.now();
  const log = ctx.log.child({ op: "restore", backup: req.backupId, job: req.jobId || undefined });
  if (!(await ctx.cluster.poolExists(req.backupPool))) throw notFound(`backup pool ${req.backupPool} not found`);
  const io = await ctx.cluster.openIoCtx(req.backupPool, { namespace: req.backupNamespace });
  let img: Image | null = null;
  try {
    const loc = await locateBackup(io, req.backupId, req.baseImage || undefined);
    if (req.snapshot && req.snapshot !== loc.snapshot) {
      throw notFound(`snapshot ${req.snapshot} of backup ${req.backupId} not found (it is ${loc.snapshot})`);
    }
    const warnings: string[] = [];
    const meta = await readMetadata(io, req.backupId); // unknown version: fails here, before any write
    if (!meta) warnings.push(`${metaObjectName(req.backupId)} is missing: volume metadata and image-meta not restored`);
    img = await io.imageOpen(loc.baseImage, { snapshot: loc.snapshot });
    const info = await img.stat();
    const target = req.target as NonNullable<RestoreRequest["target"]>;
    const fullCopy = req.mode === RestoreMode.RESTORE_MODE_ORIGINAL;
    const layout = restoreLayout(meta, info);
    if (!fullCopy) warnings.push(...layout.warnings);
    // Skipped when the caller owns the target's settings (the Cinder driver: its volume type's QoS).
    const imageMeta = req.skipImageMeta ? {} : (meta?.image.image_meta ?? {});
    const header: TransferHeader = {
      transferId: crypto.randomUUID(),
      jobId: req.jobId,
      kind: fullCopy ? TransferKind.RESTORE_ORIGINAL : TransferKind.RESTORE_NEW,
      destination: target,
      fromSnapshot: "",
      toSnapshot: "",
      imageSize: loc.size,
      // A new volume is re-created with the backup's layout (restore-layout.ts); RESTORE_ORIGINAL ignores it.
      features: Number(layout.features),
      order: layout.order,
      stripeUnit: layout.stripeUnit,
      stripeCount: layout.stripeCount,
      imageMeta,
      // The backup restored from: the destination checks it against the transfer capability
      // (src/common/grants.ts transferAsks); the sink writes no metadata for a restore.
      backupId: req.backupId,
      metadataJson: Buffer.alloc(0),
      expectedFsid: req.targetAgent?.clusterFsid ?? "",
      chunkSize: ctx.source.chunkSize,
      resumeOffset: 0,
      resumePrefixDigest: new Uint8Array(0),
      resumable: req.resumable,
      compression: 0, // COMPRESSION_NONE; a shaped target (agents/transfer/shaping) sets it
      allowOpen: fullCopy && req.allowOpen,
    };
    let stats = newStats();
    progress.phase = "transfer";
    progress.bytesTotal = loc.size;
    const source = img;
    const messages = (h: TransferHeader, resume?: SourceResume) => {
      stats = newStats();
      progress.stats = stats;
      const o = { ...ctx.source, meter: ctx.meter, meterPool: req.backupPool };
      return rbdMessages(source, h, { fullCopy, ...(resume ? { resume } : {}) }, o, stats);
    };
    // A job's attempt asks where an earlier one stopped (nothing kept: a plain start).
    const sent = await sendResumable(
      ctx.target(req.targetAgent?.address ?? "", req.transferOptions),
      header,
      messages,
      signal,
      req.transferCapability || undefined,
      req.jobId !== "" || req.resumable,
      log,
    );
    const summary = sent.summary;
    log.info("restore done", { target: `${target.pool}/${target.image}`, dataBytes: stats.dataBytes });
    return {
      backupId: req.backupId,
      target,
      imageSize: loc.size,
      dataBytesSent: stats.dataBytes,
      zeroBytes: stats.zeroBytes,
      dataChunks: stats.dataChunks,
      zeroRanges: stats.zeroRanges,
      seconds: (Date.now() - started) / 1000,
      volumeId: meta?.volume.id ?? "",
      volumeMetadata: meta?.volume.metadata ?? {},
      imageMeta,
      warnings: [...warnings, ...summary.warnings],
      fullCopyReason: "",
      resumedFrom: sent.resumedFrom,
      resumeFallbackReason: sent.fallbackReason,
    };
  } finally {
    await img?.close().catch(() => {});
    await io.close().catch(() => {});
  }
}
