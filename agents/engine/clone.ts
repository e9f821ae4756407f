/**
 * Instant restore and its undoing, on the backup's own cluster:
 *
 *  - restoreClone: RESTORE_MODE_CLONE makes the target an RBD clone (format 2: no snapshot protection,
 *    whatever the cluster's require-min-compat-client) of the backup's snapshot on its base image. No
 *    data is copied: the target is usable at once and reads through to the backup until flattened.
 *  - flattenClone: copies the parent's data into such a clone so it no longer depends on the backup.
 *  - clonesOf: the clones of a backup's snapshot (librbd's children listing), which delete.ts refuses
 *    to orphan.
 */

import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "../../src/common/errors";
import { isUuid, metaObjectName } from "../../src/common/ids";
import type { FlattenRequest, FlattenResult, RestoreRequest, RestoreResult } from "../../src/gen/rbdbackup/v1/agent";
import type { ChildImage, Image, IoCtx } from "../ceph";
import { isCephError } from "../ceph";
import { validName } from "../transfer/protocol";
import { applyImageMeta, removeImageRetrying } from "../transfer/sink";
import { newStats } from "../transfer/source";
import type { EngineContext } from "./context";
import { locateBackup } from "./locate";
import { newProgress, type Progress } from "./progress";
import { readMetadata } from "./restore";

type Target = NonNullable<RestoreRequest["target"]>;

const label = (t: { pool: string; namespace: string; image: string }): string =>
  `${t.pool}/${t.namespace ? `${t.namespace}/` : ""}${t.image}`;

/** The clones of `snapshot` of `baseImage` in `io`'s pool (any pool of the cluster), trash included. */
export async function clonesOf(io: IoCtx, baseImage: string, snapshot: string): Promise<ChildImage[]> {
  const img = await io.imageOpen(baseImage, { snapshot });
  try {
    return await img.listChildren();
  } finally {
    await img.close().catch(() => {});
  }
}

export const childLabel = (c: ChildImage): string => `${label(c)}${c.trash ? " (in the trash)" : ""}`;

/** The target of a CLONE restore must be served by this agent (the backup's own cluster). */
function requireSameCluster(ctx: EngineContext, req: RestoreRequest): void {
  const peer = req.targetAgent;
  if (peer?.clusterFsid && peer.clusterFsid !== ctx.fsid) {
    throw failedPrecondition(
      `mode CLONE makes the target on the backup's own cluster (${ctx.fsid}), not on cluster ${peer.clusterFsid}`,
    );
  }
}

async function exists(io: IoCtx, name: string): Promise<boolean> {
  try {
    await (await io.imageOpen(name, { readOnly: true })).close();
    return true;
  } catch (e) {
    if (isCephError(e, "ENOENT")) return false;
    throw e;
  }
}

export async function isCloneOf(io: IoCtx, loc: { baseImage: string; snapshot: string }, t: Target): Promise<boolean> {
  const children = await clonesOf(io, loc.baseImage, loc.snapshot);
  return children.some((c) => c.pool === t.pool && c.namespace === t.namespace && c.image === t.image && !c.trash);
}

/** RESTORE_MODE_CLONE: the target becomes a format-2 clone of the backup's snapshot (no data copied). */
export async function restoreClone(ctx: EngineContext, req: RestoreRequest): Promise<RestoreResult> {
  const started = Date.now();
  requireSameCluster(ctx, req);
  const target = req.target as Target;
  const log = ctx.log.child({ op: "restore-clone", backup: req.backupId, job: req.jobId || undefined });
  if (!(await ctx.cluster.poolExists(req.backupPool))) throw notFound(`backup pool ${req.backupPool} not found`);
  if (!(await ctx.cluster.poolExists(target.pool))) throw notFound(`target pool ${target.pool} not found`);
  const io = await ctx.cluster.openIoCtx(req.backupPool, { namespace: req.backupNamespace });
  let dest: IoCtx | null = null;
  let clone: Image | null = null;
  /** This attempt made the clone and has not finished it. */
  let made = false;
  try {
    const loc = await locateBackup(io, req.backupId, req.baseImage || undefined);
    if (req.snapshot && req.snapshot !== loc.snapshot) {
      throw notFound(`snapshot ${req.snapshot} of backup ${req.backupId} not found (it is ${loc.snapshot})`);
    }
    const warnings: string[] = [];
    const meta = await readMetadata(io, req.backupId);
    if (!meta) warnings.push(`${metaObjectName(req.backupId)} is missing: volume metadata and image-meta not restored`);
    dest = await ctx.cluster.openIoCtx(target.pool, { namespace: target.namespace });
    if (await exists(dest, target.image)) {
      // A retry of a job whose earlier attempt made the clone but never reported: that clone is the result.
      if (!req.jobId || !(await isCloneOf(io, loc, target))) {
        throw alreadyExists(`target ${label(target)} exists; clone to a new name`);
      }
      warnings.push(`${label(target)} was already a clone of this backup (made by an earlier attempt of the job)`);
    } else {
      try {
        await io.imageClone(loc.baseImage, loc.snapshot, dest, target.image, { cloneFormat: 2 });
      } catch (e) {
        if (isCephError(e, "EEXIST")) throw alreadyExists(`target ${label(target)} exists; clone to a new name`);
        throw e;
      }
      made = true;
    }
    const imageMeta = meta?.image.image_meta ?? {};
    clone = await dest.imageOpen(target.image);
    await applyImageMeta(clone, imageMeta, warnings);
    made = false; // done: the clone is the result
    log.info("clone restore done", { target: label(target), parent: `${loc.baseImage}@${loc.snapshot}` });
    return {
      backupId: req.backupId,
      target,
      imageSize: loc.size,
      dataBytesSent: 0,
      zeroBytes: 0,
      dataChunks: 0,
      zeroRanges: 0,
      seconds: (Date.now() - started) / 1000,
      volumeId: meta?.volume.id ?? "",
      volumeMetadata: meta?.volume.metadata ?? {},
      imageMeta,
      warnings,
      fullCopyReason: "",
      resumedFrom: 0,
      resumeFallbackReason: "",
    };
  } finally {
    await clone?.close().catch(() => {});
    // A clone this attempt made, then failed to finish: removed, or it would outlive the job untracked
    // (Backup.clones lists only the clones of succeeded jobs) and block the backup's deletion.
    if (made && dest) {
      await removeImageRetrying(dest, target.image).then(
        () => log.info("removed the clone this attempt made before it failed", { target: label(target) }),
        (err: Error) => log.warn("could not remove the clone this attempt made", { target: label(target), err }),
      );
    }
    await dest?.close().catch(() => {});
    await io.close().catch(() => {});
  }
}

export function validateFlattenRequest(req: FlattenRequest): asserts req is FlattenRequest & { image: Target } {
  if (!isUuid(req.backupId)) throw invalidArgument("backup_id must be a lowercase UUID");
  validName(req.backupPool, "backup_pool");
  validName(req.backupNamespace, "backup_namespace", { allowEmpty: true });
  validName(req.baseImage, "base_image", { allowEmpty: true });
  if (!req.image) throw invalidArgument("image (pool, image) is required");
  validName(req.image.pool, "image pool");
  validName(req.image.namespace, "image namespace", { allowEmpty: true });
  validName(req.image.image, "image image");
}

/**
 * Flattens a clone of the backup's snapshot. Idempotent: an image that is no longer its clone (an
 * earlier attempt finished, or someone flattened it) is reported with flattened = false.
 */
export async function flattenClone(
  ctx: EngineContext,
  req: FlattenRequest,
  signal: AbortSignal,
  progress: Progress = newProgress(),
): Promise<FlattenResult> {
  validateFlattenRequest(req);
  const started = Date.now();
  const target = req.image;
  const log = ctx.log.child({ op: "flatten", backup: req.backupId, job: req.jobId || undefined });
  const result: FlattenResult = { image: target, flattened: false, seconds: 0, warnings: [] };
  // A clone removed by hand depends on nothing any more: a success with a warning, so that the
  // coordinator drops it from Backup.clones.
  const gone = () => {
    result.warnings.push(`${label(target)} no longer exists (removed): nothing depends on backup ${req.backupId}`);
    result.seconds = (Date.now() - started) / 1000;
    log.info("flatten: the clone is gone", { image: label(target) });
    return result;
  };
  if (!(await ctx.cluster.poolExists(target.pool))) return gone();
  const dest = await ctx.cluster.openIoCtx(target.pool, { namespace: target.namespace });
  let img: Image | null = null;
  try {
    try {
      img = await dest.imageOpen(target.image);
    } catch (e) {
      if (isCephError(e, "ENOENT")) return gone();
      throw e;
    }
    if (!(await isCloneOfBackup(ctx, req))) {
      result.warnings.push(`${label(target)} is not a clone of backup ${req.backupId} (already flattened)`);
    } else {
      signal.throwIfAborted();
      // Cancelled, librbd stops starting object copies; the clone stays a clone (Image.flatten).
      const size = (await img.stat()).size;
      const stats = newStats();
      progress.phase = "flatten";
      progress.bytesTotal = size;
      progress.stats = stats;
      await img.flatten({
        signal,
        onProgress: (done, total) => {
          stats.position = total > 0 ? Math.min(size, Math.round((done / total) * size)) : 0;
        },
      });
      stats.position = size;
      result.flattened = true;
    }
    result.seconds = (Date.now() - started) / 1000;
    log.info("flatten done", { image: label(target), flattened: result.flattened, seconds: result.seconds });
    return result;
  } finally {
    await img?.close().catch(() => {});
    await dest.close().catch(() => {});
  }
}

/** Whether req.image is listed among the children of the backup's snapshot. */
async function isCloneOfBackup(ctx: EngineContext, req: FlattenRequest & { image: Target }): Promise<boolean> {
  if (!(await ctx.cluster.poolExists(req.backupPool))) return false;
  const io = await ctx.cluster.openIoCtx(req.backupPool, { namespace: req.backupNamespace });
  try {
    let loc: Awaited<ReturnType<typeof locateBackup>>;
    try {
      loc = await locateBackup(io, req.backupId, req.baseImage || undefined);
    } catch (e) {
      if ((e as { status?: number }).status === 5 /* NOT_FOUND */) return false;
      throw e;
    }
    return await isCloneOf(io, loc, req.image);
  } finally {
    await io.close().catch(() => {});
  }
}
