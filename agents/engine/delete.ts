/**
 * Deletion of a backup kept on this cluster: its snapshot on the base image, the base image once no
 * backup snapshot remains, backup.<id>.digests and backup.<id>.meta. A missing pool or image is a warning, not a failure;
 * a busy image is retried with backoff, then reported (FAILED_PRECONDITION). A backup whose snapshot has
 * clones (CLONE restores) is refused, FAILED_PRECONDITION naming them, before anything is removed.
 *
 * Once the snapshot is removed the backup's data is gone: a later step that fails (the base image busy,
 * an object not removed) is a DeleteIncomplete — UNAVAILABLE, so the job is retried, carrying what was
 * removed, so the coordinator records the backup DELETED and never as it was. A retry that finds the
 * snapshot gone removes what is left: the metadata, and the named base image once no snapshot is on it.
 */

import { AppError, failedPrecondition, invalidArgument, messageOf, Status } from "../../src/common/errors";
import { isBaseImage, isUuid, metaObjectName, parseBackupSnap } from "../../src/common/ids";
import { retry } from "../../src/common/retry";
import type { DeleteBackupDataRequest, DeleteBackupDataResult } from "../../src/gen/rbdbackup/v1/agent";
import type { Image, IoCtx } from "../ceph";
import { isCephError } from "../ceph";
import { digestsObjectName } from "../transfer/digests";
import { validName } from "../transfer/protocol";
import { removeImageRetrying } from "../transfer/sink";
import { childLabel, clonesOf } from "./clone";
import type { EngineContext } from "./context";
import { locateBackup } from "./locate";

/** Busy-image retries: 6 attempts, waits of 0.4, 0.8, 1.6, 3 and 3 s. */
const BUSY_RETRY = { attempts: 6, baseMs: 400, maxMs: 3000 };

/** Runs `f`, retrying while the image is busy (EBUSY); then FAILED_PRECONDITION naming `what`. */
function retryBusy<T>(what: string, f: () => Promise<T>): Promise<T> {
  return retry(f, {
    ...BUSY_RETRY,
    retryIf: (e) => isCephError(e, "EBUSY"),
    onExhausted: (e, attempts) =>
      failedPrecondition(`${what}: still busy after ${attempts} attempts (${(e as Error).message})`),
  });
}

/**
 * A clone (CLONE restore) of the snapshot still reads through to it: refuse, naming the clones. librbd
 * would otherwise move a format-2 clone's parent snapshot to the trash and keep the base image busy.
 */
async function refuseWhileCloned(io: IoCtx, backupId: string, baseImage: string, snapshot: string): Promise<void> {
  const children = await clonesOf(io, baseImage, snapshot).catch((e) => {
    if (isCephError(e, "ENOENT")) return []; // gone meanwhile: the removal below reports it
    throw e;
  });
  if (children.length === 0) return;
  throw failedPrecondition(
    `backup ${backupId} has clones that depend on its snapshot: ${children.map(childLabel).join(", ")}; flatten or remove them first`,
  );
}

/** A delete that failed after the backup's snapshot was removed: what it removed, for the outcome. */
export class DeleteIncomplete extends AppError {
  constructor(
    readonly partial: DeleteBackupDataResult,
    cause: unknown,
  ) {
    super(
      Status.UNAVAILABLE,
      `snapshot ${partial.removedSnapshot || "(already gone)"} removed, but the rest of the delete failed (retried): ${messageOf(cause)}`,
      { cause },
    );
  }
}

/** Removes `baseImage` when no snapshot is left on it; a warning when it is gone or still holds some. */
async function removeEmptyBaseImage(
  io: IoCtx,
  baseImage: string,
  result: DeleteBackupDataResult,
  { warn }: { warn: boolean },
): Promise<void> {
  let others: number;
  try {
    const i = await io.imageOpen(baseImage, { readOnly: true });
    try {
      others = (await i.snapList()).length;
    } finally {
      await i.close();
    }
  } catch (e) {
    if (isCephError(e, "ENOENT")) return;
    throw e;
  }
  if (others > 0) {
    if (warn)
      result.warnings.push(`base image ${baseImage} kept: it still has ${others} snapshot(s) that are not backups`);
    return;
  }
  try {
    await removeImageRetrying(io, baseImage);
  } catch (e) {
    if (isCephError(e, "ENOENT")) return;
    if (isCephError(e, "EBUSY"))
      throw failedPrecondition(`base image ${baseImage} is busy (open by another client): try again later`);
    throw e;
  }
  result.removedBaseImage = true;
}

/** backup.<id>.digests goes with the backup (absent: a backup made before digest maps, or none was made). */
async function removeDigestMap(io: IoCtx, backupId: string): Promise<void> {
  await io.objRemove(digestsObjectName(backupId)).catch((e) => {
    if (!isCephError(e, "ENOENT")) throw e;
  });
}

export async function deleteBackup(ctx: EngineContext, req: DeleteBackupDataRequest): Promise<DeleteBackupDataResult> {
  if (!isUuid(req.backupId)) throw invalidArgument("backup_id must be a lowercase UUID");
  validName(req.pool, "pool");
  validName(req.namespace, "namespace", { allowEmpty: true });
  validName(req.baseImage, "base_image", { allowEmpty: true });
  // Only a base image (this product's layout) is ever removed here: never a volume named by mistake.
  if (req.baseImage && !isBaseImage(req.baseImage)) {
    throw invalidArgument(`base_image "${req.baseImage}" is not a base image name (<volume>.backup.<backup uuid>)`);
  }
  const log = ctx.log.child({ op: "delete", backup: req.backupId, job: req.jobId || undefined });
  const result: DeleteBackupDataResult = {
    removedSnapshot: "",
    removedBaseImage: false,
    removedMetadata: false,
    warnings: [],
  };
  if (!(await ctx.cluster.poolExists(req.pool))) {
    result.warnings.push(`pool ${req.pool} not found: nothing to delete`);
    log.warn(result.warnings[0] as string);
    return result;
  }
  const io = await ctx.cluster.openIoCtx(req.pool, { namespace: req.namespace });
  try {
    let loc: Awaited<ReturnType<typeof locateBackup>> | null = null;
    try {
      loc = await locateBackup(io, req.backupId, req.baseImage || undefined);
    } catch (e) {
      if ((e as { status?: number }).status !== 5 /* NOT_FOUND */) throw e;
      result.warnings.push(`${(e as Error).message}: removing its metadata only`);
    }
    if (loc) {
      const located = loc;
      await refuseWhileCloned(io, req.backupId, located.baseImage, located.snapshot);
      let img: Image | null = await io.imageOpen(located.baseImage);
      try {
        if (located.protected)
          await retryBusy(`unprotecting ${located.snapshot}`, () => (img as Image).snapUnprotect(located.snapshot));
        await retryBusy(`removing snapshot ${located.snapshot}`, () => (img as Image).snapRemove(located.snapshot));
        result.removedSnapshot = located.snapshot;
        const remaining = (await img.snapList()).filter((s) => parseBackupSnap(s.name));
        await img.close();
        img = null;
        if (remaining.length === 0) await removeEmptyBaseImage(io, located.baseImage, result, { warn: true });
      } catch (e) {
        if (isCephError(e, "ENOENT")) result.warnings.push(`base image ${located.baseImage} disappeared meanwhile`);
        else if (result.removedSnapshot) throw new DeleteIncomplete(result, e);
        else throw e;
      } finally {
        await img?.close().catch(() => {});
      }
    } else if (req.baseImage) {
      // The snapshot is gone (a retry of a delete that removed it): its base image goes once nothing is on it.
      await removeEmptyBaseImage(io, req.baseImage, result, { warn: false }).catch((e) => {
        throw new DeleteIncomplete(result, e);
      });
    }
    try {
      await removeDigestMap(io, req.backupId);
      await io.objRemove(metaObjectName(req.backupId)).then(
        () => {
          result.removedMetadata = true;
        },
        (e) => {
          if (!isCephError(e, "ENOENT")) throw e;
          result.warnings.push(`${metaObjectName(req.backupId)} was already gone`);
        },
      );
    } catch (e) {
      // The snapshot is gone (removed now or before): the backup is, whatever is left to remove.
      throw new DeleteIncomplete(result, e);
    }
    for (const w of result.warnings) log.warn(w);
    log.info("backup deleted", { snapshot: result.removedSnapshot, baseImage: result.removedBaseImage });
    return result;
  } finally {
    await io.close().catch(() => {});
  }
}
