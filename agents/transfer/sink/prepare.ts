/**
 * Getting the target image ready, per kind of transfer. Each step that leaves something cleanup must
 * undo is journalled first and recorded in the footprint:
 *
 * - BACKUP_FULL, RESTORE_NEW: create the image (it must not exist), marked incomplete until commit.
 * - BACKUP_INCREMENTAL: the base image and its from-snapshot must exist and the to-snapshot must not;
 *   a head left dirty by a failed attempt is rolled back to the from-snapshot; resized to the new size.
 * - RESTORE_ORIGINAL: the image must exist; what lies beyond the backup's size is discarded, then the
 *   image is resized to it.
 * - FAILBACK with a from-snapshot: the original volume must exist and hold it (FAILED_PRECONDITION
 *   otherwise, before anything is written: the source then sends a full copy); it is rolled back to the
 *   snapshot and resized. Without: a full copy, as RESTORE_ORIGINAL, or as RESTORE_NEW when it is gone.
 *   Either way, what the original holds that the failback would lose (writes since the snapshot, or all
 *   it holds for a full copy) is first kept in a snapshot of it, named in the warnings (keepBeforeFailback).
 *
 * Not abortable half-way (it creates what cleanup must know about); each step is bounded by the
 * cluster's op timeout.
 */
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "../../../src/common/errors";
import type { Logger } from "../../../src/common/log";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { isCephError } from "../../ceph";
import type { JournalEntry } from "../journal";
import { MAX_DISCARD_BYTES, NO_COMMON_SNAPSHOT, RefusalReason, withReason } from "../protocol";
import { createImageWithFeatures } from "./create-image";
import type { Footprint } from "./footprint";
import { baseInUse, headDiffers, holdsData, INCOMPLETE_KEY, isOwnWatch, otherWriters } from "./image-ops";
import type { SinkCluster, SinkDeps, SinkImage, SinkIoCtx } from "./ports";

const RBD_BASE_FEATURES = 1n | 4n | 8n | 16n | 32n; // layering, exclusive-lock, object-map, fast-diff, deep-flatten

type Deps = SinkDeps<SinkCluster>;

export async function prepare(deps: Deps, fp: Footprint, log: Logger): Promise<void> {
  switch (fp.h.kind) {
    case TransferKind.BACKUP_FULL:
    case TransferKind.RESTORE_NEW:
      return createImage(deps, fp, log);
    case TransferKind.BACKUP_INCREMENTAL:
      return openBaseImage(deps, fp, log);
    case TransferKind.RESTORE_ORIGINAL:
      return openOriginal(deps, fp);
    case TransferKind.FAILBACK:
      if (fp.h.fromSnapshot) return rollBackOriginal(deps, fp, log);
      return (await exists(fp)) ? openOriginal(deps, fp, log) : createImage(deps, fp, log);
    default:
      throw invalidArgument(`unknown transfer kind ${fp.h.kind}`);
  }
}

function journalEntry(deps: Deps, fp: Footprint): JournalEntry {
  const h = fp.h;
  return {
    transferId: h.transferId,
    kind: h.kind,
    pool: h.destination?.pool as string,
    namespace: h.destination?.namespace ?? "",
    image: h.destination?.image as string,
    createdImage: false,
    clientAddr: deps.clientAddr,
    startedAt: new Date().toISOString(),
    ...(h.toSnapshot ? { toSnapshot: h.toSnapshot } : {}),
    ...(h.backupId ? { backupId: h.backupId } : {}),
    // Said at once, so markResumable (resume.ts) need not write the entry again: an entry is held for a
    // retry only once the image carries its checkpoint (keep.ts), so saying it early changes nothing.
    ...(h.resumable ? { resumable: true } : {}),
  };
}

const ioOf = (fp: Footprint) => fp.io as SinkIoCtx;
const nameOf = (fp: Footprint) => fp.h.destination?.image as string;

/** BACKUP_FULL, RESTORE_NEW: a new image, carrying the incomplete marker until commit. */
async function createImage(deps: Deps, fp: Footprint, log: Logger): Promise<void> {
  const h = fp.h;
  // Journal the intent first: recovery removes the image only if it carries our marker.
  fp.journal = { ...journalEntry(deps, fp), createdImage: true };
  await deps.journal.write(fp.journal);
  const features = h.features === 0 ? RBD_BASE_FEATURES : BigInt(h.features);
  try {
    const layout = {
      features,
      ...(h.order ? { order: h.order } : {}),
      ...(h.stripeUnit ? { stripeUnit: h.stripeUnit } : {}),
      ...(h.stripeCount ? { stripeCount: h.stripeCount } : {}),
    };
    // A restore's features the target cluster refuses are dropped, with a warning (create-image.ts).
    if (h.kind === TransferKind.RESTORE_NEW)
      await createImageWithFeatures(ioOf(fp), nameOf(fp), h.imageSize, layout, fp.warnings);
    else await ioOf(fp).imageCreate(nameOf(fp), h.imageSize, layout);
  } catch (e) {
    if (!isCephError(e, "EEXIST") && h.kind === TransferKind.BACKUP_FULL) {
      // The create may have gone through (an op timeout, a lost reply): a base image is ours by its name,
      // so the failure's cleanup removes it if it is there, and the entry stays until that is done.
      fp.createdImage = true;
      throw e;
    }
    // A new volume (RESTORE_NEW, FAILBACK) bears the caller's name: removed only when provably untouched.
    if (!isCephError(e, "EEXIST")) await removeLostCreate(deps, fp, log);
    await deps.journal.remove(h.transferId);
    fp.journal = undefined;
    if (isCephError(e, "EEXIST")) {
      throw alreadyExists(
        h.kind === TransferKind.BACKUP_FULL
          ? `base image ${fp.where} already exists (backup id reused?)`
          : `image ${fp.where} already exists: restore to a new volume needs a free name (or restore over the original)`,
      );
    }
    throw e;
  }
  fp.createdImage = true;
  fp.fresh = true;
  fp.image = await ioOf(fp).imageOpen(nameOf(fp));
  // Before any write: recovery removes an unmarked base image only while it holds no data
  // (recovery.ts unmarkedBase), and a restore's unmarked volume is never touched. Setting it beside
  // the first writes was tried (2026-12-05): the prepare took ~0.3 s less under 0–100 ms of OSD
  // latency, the job no less — the source's snapshot bounds the transfer's start as much.
  await fp.image.metaSet(INCOMPLETE_KEY, h.transferId);
  log.debug("created image", { image: fp.where, size: h.imageSize });
}

/**
 * A new volume whose create failed yet may have gone through (an op timeout whose request went through,
 * a lost reply): left behind, it made the job's retry fail ALREADY_EXISTS and kept the caller's name
 * taken. It is removed when it is exactly what that create leaves — the size asked, no snapshot, no data,
 * no other client watching (a name that existed before the create fails EEXIST, not here); otherwise it
 * stays, logged. Failures here are logged: the create's own error is the one reported.
 */
async function removeLostCreate(deps: Deps, fp: Footprint, log: Logger): Promise<void> {
  const io = ioOf(fp);
  const name = nameOf(fp);
  let image: SinkImage;
  try {
    image = await io.imageOpen(name);
  } catch (e) {
    if (!isCephError(e, "ENOENT"))
      log.warn("a create failed; whether it made the image is unknown", { image: fp.where, err: e });
    return;
  }
  let untouched = false;
  try {
    untouched =
      (await image.stat()).size === fp.h.imageSize &&
      (await image.snapList()).length === 0 &&
      // Another transfer's image carries its incomplete marker from right after its create.
      !(await image.metaGet(INCOMPLETE_KEY)) &&
      (await image.watchers()).every((w) => isOwnWatch(deps, w)) &&
      !(await holdsData(image));
  } catch (e) {
    log.warn("a create failed, and the image it may have made could not be checked: left", { image: fp.where, err: e });
  } finally {
    await image.close().catch(() => {});
  }
  if (!untouched) {
    log.warn("a create failed, and an image of that name is there that it did not leave as is: left", {
      image: fp.where,
    });
    return;
  }
  await io.imageRemove(name).then(
    () => log.info("removed the image a failed create made anyway", { image: fp.where }),
    (e: unknown) => log.warn("could not remove the image a failed create made anyway", { image: fp.where, err: e }),
  );
}

/** BACKUP_INCREMENTAL: the chain's base image, its head at the from-snapshot, at the new size. */
async function openBaseImage(deps: Deps, fp: Footprint, log: Logger): Promise<void> {
  const h = fp.h;
  const image = await open(fp, `base image ${fp.where} not found`);
  const snaps = await image.snapList();
  if (!snaps.some((s) => s.name === h.fromSnapshot)) {
    throw notFound(`snapshot ${h.fromSnapshot} not found on base image ${fp.where}`);
  }
  if (snaps.some((s) => s.name === h.toSnapshot)) {
    throw alreadyExists(`snapshot ${h.toSnapshot} already exists on base image ${fp.where}`);
  }
  // Before anything is changed (the rollback below, the writes): nobody else writes this image now.
  const who = await otherWriters(image, deps);
  if (who) throw baseInUse(fp.where, who, "this attempt changed nothing (retried)");
  // The entry (undo = roll the head back to the from-snapshot) is written while the head is compared
  // with that snapshot (an exact walk of the objects that exist at either: ~12 ms per GiB of them on the
  // lab); undoing to the from-snapshot is right either way.
  fp.journal = { ...journalEntry(deps, fp), rollbackTo: h.fromSnapshot };
  // Both settle before either's failure is thrown: cleanup must not race the entry's write.
  const [differs, written] = await Promise.allSettled([
    headDiffers(image, h.fromSnapshot, fp.signal),
    deps.journal.write(fp.journal),
  ]);
  if (written.status === "rejected") throw written.reason;
  if (differs.status === "rejected") throw differs.reason;
  if (differs.value) {
    // A failed attempt left the head written (or newer backups exist): start from the parent's state.
    await image.snapRollback(h.fromSnapshot);
    fp.warnings.push(`rolled the head of ${fp.where} back to ${h.fromSnapshot} before writing`);
    log.info("rolled base image head back", { image: fp.where, to: h.fromSnapshot });
  }
  if ((await image.stat()).size !== h.imageSize) await image.resize(h.imageSize);
}

/**
 * An existing volume is written over only while no other client has it open: a VM, `rbd map` (krbd,
 * rbd-nbd) or any read-write open watches its header, and librbd would hand it the exclusive lock back
 * and forth while both write — the guest's filesystem corrupted. This agent's own handle is a watcher
 * too (same client instance): not counted. FAILED_PRECONDITION, before anything is changed.
 */
export async function refuseInUse(deps: Deps, fp: Footprint, image: SinkImage): Promise<void> {
  if (fp.h.kind === TransferKind.RESTORE_ORIGINAL && fp.h.allowOpen) return; // the caller holds it open itself
  const others = (await image.watchers()).filter((w) => !isOwnWatch(deps, w));
  if (others.length === 0) return;
  const who = others.map((w) => `client.${w.id} at ${w.addr}`).join(", ");
  throw failedPrecondition(
    `image ${fp.where} is in use (watched by ${who}): a VM, rbd map or another client has it open. ` +
      "Stop or unmap it, then restore again; this attempt changed nothing",
  );
}

/** The snapshot a failback takes of the original volume before it writes over data it would lose. */
export const failbackSafetySnapshot = (jobId: string): string => `rbdbackup-before-failback.${jobId}`;

/**
 * A failback writes over the original volume, which may hold what the failback would lose: writes made
 * after the failover's backup (or both sites written), or, for a full copy, everything on it. When
 * `wouldLose` says so, it is kept first in a snapshot named in the job's warnings — the operator removes it
 * once sure (`rbd snap rm`). Once per job: a retry finds the snapshot (the volume already changed by the
 * earlier attempt, which is not worth keeping) and goes on. Snapshots earlier failbacks (other jobs) kept
 * are named too: after one failed partway, the volume a new failback keeps is that partial state, and
 * what was there before the first is in the first one's snapshot. Said in the error too should this
 * failback fail (`fp.kept`).
 */
async function keepBeforeFailback(
  fp: Footprint,
  image: SinkImage,
  log: Logger,
  wouldLose: () => Promise<boolean>,
): Promise<void> {
  const name = failbackSafetySnapshot(fp.h.jobId || fp.h.transferId);
  const since = fp.h.fromSnapshot ? `written since ${fp.h.fromSnapshot}` : "on it before the full copy";
  const warning = `${fp.where} held data the failback overwrites (${since}): kept in its snapshot ${name}; remove it once sure (rbd snap rm ${fp.where}@${name})`;
  const snaps = (await image.snapList()).map((s) => s.name);
  const earlier = snaps.filter((s) => s !== name && s.startsWith(failbackSafetySnapshot("")));
  const said = (lines: string[]) => {
    fp.warnings.push(...lines);
    fp.kept = lines.join("; ");
  };
  const older =
    earlier.length > 0
      ? [
          `${fp.where} also carries ${earlier.join(", ")}: kept by earlier failbacks before they wrote (one that failed partway left the volume partly written); remove them once sure`,
        ]
      : [];
  // Said again by a retry (a job keeps its last attempt's warnings).
  if (snaps.includes(name)) return said([warning, ...older]);
  if (!(await wouldLose())) {
    if (older.length > 0) said(older);
    return;
  }
  await image.snapCreate(name);
  said([warning, ...older]);
  log.warn("kept the original volume's data before the failback", { image: fp.where, snapshot: name });
}

/** RESTORE_ORIGINAL (and a FAILBACK's full copy, `log` given): the existing image, cut or grown to the backup's size. */
async function openOriginal(deps: Deps, fp: Footprint, failbackLog?: Logger): Promise<void> {
  const want = fp.h.imageSize;
  const image = await open(fp, `image ${fp.where} not found (restore over the original needs it)`);
  await refuseInUse(deps, fp, image);
  if (failbackLog) await keepBeforeFailback(fp, image, failbackLog, () => holdsData(image));
  const size = (await image.stat()).size;
  // From here the volume is changed: a failure now says so (run-sink.ts), even before the first chunk.
  if (size !== want) fp.wrote = true;
  if (size > want) {
    // Discard what lies beyond the backup's size, in pieces under 2 GiB, then shrink.
    for (let off = want; off < size; off += MAX_DISCARD_BYTES) {
      await image.discard(off, Math.min(MAX_DISCARD_BYTES, size - off));
    }
  }
  if (size !== want) await image.resize(want);
}

/** FAILBACK with a from-snapshot: the original volume at that snapshot, at the new size. */
async function rollBackOriginal(deps: Deps, fp: Footprint, log: Logger): Promise<void> {
  const h = fp.h;
  const noCommon = (why: string) =>
    withReason(failedPrecondition(`${NO_COMMON_SNAPSHOT}: ${fp.where} ${why}`), RefusalReason.NO_COMMON_SNAPSHOT);
  if (!(await exists(fp))) throw noCommon("does not exist");
  const image = await open(fp, `image ${fp.where} not found`);
  if (!(await image.snapList()).some((s) => s.name === h.fromSnapshot)) {
    throw noCommon(`has no snapshot ${h.fromSnapshot}`);
  }
  await refuseInUse(deps, fp, image);
  // The rollback would lose data when the head differs from the snapshot — compared exactly (headDiffers:
  // the object map's answer is wrong after a Cinder revert to an older snapshot).
  await keepBeforeFailback(fp, image, log, () => headDiffers(image, h.fromSnapshot, fp.signal));
  // Not undoable, like RESTORE_ORIGINAL; a retry rolls back again, so the result does not depend on it.
  // A failure from here on says the volume was changed (run-sink.ts), even before the first chunk.
  fp.wrote = true;
  await image.snapRollback(h.fromSnapshot);
  log.info("rolled the original volume back", { image: fp.where, to: h.fromSnapshot });
  if ((await image.stat()).size !== h.imageSize) await image.resize(h.imageSize);
}

async function exists(fp: Footprint): Promise<boolean> {
  try {
    await (await ioOf(fp).imageOpen(nameOf(fp))).close();
    return true;
  } catch (e) {
    if (isCephError(e, "ENOENT")) return false;
    throw e;
  }
}

async function open(fp: Footprint, missing: string): Promise<SinkImage> {
  try {
    fp.image = await ioOf(fp).imageOpen(nameOf(fp));
  } catch (e) {
    if (isCephError(e, "ENOENT")) throw notFound(missing);
    throw e;
  }
  return fp.image;
}
