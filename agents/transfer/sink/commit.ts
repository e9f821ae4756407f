/**
 * Committing a transfer, once every write is done and flushed. A backup writes its digest map
 * (backup.<id>.digests), its metadata object (backup.<id>.meta, exclusive create) and then creates its snapshot — the point from which the
 * backup exists; a restore applies the image-meta it carries. An image this transfer created loses
 * its incomplete marker last, in what follows the commit (run-sink.ts settleCommitted: before the answer,
 * or after it for a backup recorded for its confirmation — until its journal entry goes, recovery removes
 * the marker of an image whose snapshot exists); a failure there is only a warning.
 */
import { alreadyExists } from "../../../src/common/errors";
import { metaObjectName } from "../../../src/common/ids";
import type { Logger } from "../../../src/common/log";
import { isCephError } from "../../ceph";
import { digestsObjectName } from "../digests";
import { isBackupKind } from "../protocol";
import { writeDigests } from "./digests";
import type { Footprint } from "./footprint";
import { applyImageMeta, baseInUse, INCOMPLETE_KEY, otherWriters } from "./image-ops";
import type { SinkCluster, SinkDeps, SinkImage, SinkIoCtx } from "./ports";

export async function commit(deps: SinkDeps<SinkCluster>, fp: Footprint, log: Logger): Promise<void> {
  const h = fp.h;
  const image = fp.image as SinkImage;
  const io = fp.io as SinkIoCtx;
  if (isBackupKind(h.kind)) {
    // Another client that opened the base image during the transfer may have written it (a mapped
    // filesystem's journal replay): its bytes would be committed as the backup's. Not committed.
    const who = await otherWriters(image, deps);
    if (who) throw baseInUse(fp.where, who, "opened during the transfer, so it was not committed");
    // The digest map and the metadata object are created side by side, both exclusively (neither counts
    // without the snapshot); both settle before a failure is thrown, so cleanup sees what exists and
    // removes only what this transfer made. A backup id that is not this transfer's (its metadata object
    // already there) touches neither object of the backup that has it.
    if (fp.journal && h.metadataJson.length > 0) {
      // Journalled before either create: recovery removes this backup's two objects only when it says so.
      fp.journal = { ...fp.journal, metaCreated: true };
      await deps.journal.write(fp.journal);
    }
    const [digests, meta] = await Promise.allSettled([writeDigests(fp), createMeta(deps, io, fp)]);
    const taken = digests.status === "rejected" && isCephError(digests.reason, "EEXIST");
    // A create that failed otherwise may have gone through: this backup's to remove, once the id is its own.
    if (digests.status === "rejected" && !taken && fp.metaCreated) fp.digestsCreated = true;
    if (meta.status === "rejected") throw meta.reason;
    if (digests.status === "rejected") {
      if (!taken) throw digests.reason;
      if (!fp.metaCreated) throw alreadyExists(`${digestsObjectName(h.backupId)} already exists (backup id reused?)`);
      // The id is this transfer's: the map there is an earlier attempt's of this backup, written over.
      await writeDigests(fp, { overwrite: true });
    }
    // The backup exists from here on. No quiesce: a base image is this agent's alone (no client maps it
    // to freeze), and asking its watchers costs two notify round trips (~200 ms with OSD messages held
    // 0–100 ms, ~10 ms at 0–4 ms: test/bench/snapshot-quiesce.c).
    await image.snapCreate(h.toSnapshot, { skipQuiesce: true }).catch((e) => madeAnyway(image, fp, e, log));
    fp.snapshotCreated = true;
  } else {
    await applyImageMeta(image, h.imageMeta, fp.warnings);
  }
}

/**
 * A snapshot create that failed may still have been made (an op timeout whose request went through, a
 * lost reply): the backup then exists, and undoing the transfer would strip a committed backup of its
 * metadata object and digest map. Returns when the snapshot is there (committed after all); throws the
 * creation's error when it is not, or — with `commitUnknown` set, so cleanup undoes nothing and recovery
 * decides — when the listing fails too.
 */
async function madeAnyway(image: SinkImage, fp: Footprint, error: unknown, log: Logger): Promise<void> {
  const name = fp.h.toSnapshot;
  let made: boolean;
  try {
    made = (await image.snapList()).some((s) => s.name === name);
  } catch (e) {
    fp.commitUnknown = true;
    log.error("the snapshot's creation failed and its listing too: left for recovery", { err: e, snapshot: name });
    throw error;
  }
  if (!made) throw error;
  log.warn("the snapshot's creation reported an error, yet the snapshot exists: committed", {
    err: error,
    snapshot: name,
  });
}

/**
 * The committed image this transfer created loses its incomplete marker; a failure is a warning.
 * A restore has no snapshot to prove its commit, so an image that keeps the marker must not stay this
 * transfer's to remove: its journal entry is rewritten without `createdImage` first — else, should
 * the entry outlive the transfer (its removal failing too), recovery would remove the restored volume
 * the caller was told is done.
 */
export async function removeMarker(
  deps: SinkDeps<SinkCluster>,
  image: SinkImage,
  fp: Footprint,
  warnings: string[],
  log: Logger,
): Promise<void> {
  if (!fp.createdImage) return;
  try {
    await image.metaRemove(INCOMPLETE_KEY);
    return;
  } catch (e) {
    warnings.push(`could not remove the ${INCOMPLETE_KEY} marker: ${(e as Error).message}`);
    log.warn("marker removal failed", { err: e });
  }
  if (fp.snapshotCreated || !fp.journal) return; // a backup: recovery keeps an image whose snapshot exists
  fp.journal = { ...fp.journal, createdImage: false };
  await deps.journal.write(fp.journal).catch((e: Error) => {
    warnings.push(`could not journal the restored image as complete: ${e.message}`);
    log.error("the restored image keeps its marker and its journal entry could not be rewritten", { err: e });
  });
}

/**
 * Creates backup.<id>.meta (exclusive), unless the header carries no metadata. The journal says so
 * first — recovery removes it when the snapshot never came, and a kill between the object and the
 * journal left it behind (then every retry of that backup met "already exists"). An object already
 * there that an earlier attempt of this very backup wrote (`earlierAttempts`: a resumed transfer whose
 * held attempt got that far, or one whose cleanup failed) is written over; another's (EEXIST) is
 * unsaid before the error; a failure that may have created it (a timeout) leaves it to cleanup
 * (`metaCreated`; its removal takes a missing object as removed).
 */
async function createMeta(deps: SinkDeps<SinkCluster>, io: SinkIoCtx, fp: Footprint): Promise<void> {
  const { backupId, metadataJson } = fp.h;
  if (metadataJson.length === 0) return;
  fp.metaCreated = true; // from here it may exist: cleanup removes it unless another's is there
  const oid = metaObjectName(backupId);
  try {
    await io.objCreateExclusive(oid, Buffer.from(metadataJson));
  } catch (e) {
    if (!isCephError(e, "EEXIST")) throw e;
    if (await earlierAttempts(await io.objRead(oid).catch(() => null), fp)) {
      await io.objWriteFull(oid, Buffer.from(metadataJson));
      return;
    }
    fp.metaCreated = false;
    if (fp.journal) {
      fp.journal = { ...fp.journal, metaCreated: false };
      await deps.journal.write(fp.journal).catch(() => {}); // cleanup removes the entry anyway
    }
    throw alreadyExists(`${metaObjectName(backupId)} already exists (backup id reused?)`);
  }
}

/**
 * Whether a metadata object already there was written by an earlier attempt of this transfer's
 * backup: the same backup id and base image, and either the same snapshot (a resumed attempt) or a
 * snapshot that is not on the base image — never committed (an attempt whose cleanup failed; a retry
 * takes its own snapshot name). A reused backup id names another base image, or a snapshot that is
 * there. An unreadable or foreign object is not.
 */
async function earlierAttempts(existing: Buffer | null, fp: Footprint): Promise<boolean> {
  if (!existing) return false;
  let m: { backup_id?: unknown; chain?: { base_image?: unknown; snapshot?: unknown } };
  try {
    m = JSON.parse(existing.toString());
  } catch {
    return false;
  }
  const h = fp.h;
  if (m?.backup_id !== h.backupId || m.chain?.base_image !== h.destination?.image || h.toSnapshot === "") return false;
  const snap = m.chain?.snapshot;
  if (snap === h.toSnapshot) return true;
  if (typeof snap !== "string" || !fp.image) return false;
  const snaps = await fp.image.snapList().catch(() => null); // unknown: not taken for ours
  return snaps !== null && !snaps.some((s) => s.name === snap);
}
