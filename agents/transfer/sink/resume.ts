/**
 * Resumable transfers on the destination (transfer.proto: TransferHeader.resumable, ResumePoint,
 * resume_offset). A resumable transfer checkpoints as it goes (checkpoint.ts). When it is cut short —
 * the source vanished or the network broke (the call aborted before the stream ended), or this agent
 * was killed (recovery at the next start) — and a checkpoint exists, its image is not cleaned up: its
 * journal entry is "held" until `heldUntil` (transfer.resumeTtlSeconds), then undone like any
 * interrupted transfer (held.ts). A cancel (the source ends its stream without a trailer), a bad
 * stream, a refusal or a full pool clean up as before.
 *
 * ResumePoint answers a retry's header with the held checkpoint (same kind, image, backup id,
 * snapshots and size, the image still at that size, its marker unchanged; a restore's volume open by
 * nobody else). What was written into the prefix while the image was held is not seen: a restore's
 * target is the caller's to keep unused until the restore ends; the retry's Transfer with resume_offset takes the held entry
 * over (its own journal entry, the incomplete marker, the checkpoint re-labelled) and continues the
 * counts and the digest where the checkpoint left them.
 */
import { failedPrecondition } from "../../../src/common/errors";
import type { Logger } from "../../../src/common/log";
import type { ResumePointResponse, TransferHeader } from "../../../src/gen/rbdbackup/v1/transfer";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { isCephError } from "../../ceph";
import type { JournalEntry } from "../journal";
import { isBackupKind, isRestoreKind, validateHeader } from "../protocol";
import { discardHeld, isHeldInto } from "./abandon";
import {
  baseOf,
  Checkpointer,
  type CheckpointRecord,
  checkpointRecord,
  DEFAULT_CHECKPOINT_BYTES,
  DEFAULT_CHECKPOINT_MS,
  mismatch,
  parseCheckpoint,
  RESUME_KEY,
} from "./checkpoint";
import type { Footprint } from "./footprint";
import { baseInUse, INCOMPLETE_KEY, otherWriters } from "./image-ops";
import type { SinkCluster, SinkDeps, SinkImage, SinkIoCtx } from "./ports";
import { prepare, refuseInUse } from "./prepare";
import { EARLIER_TRANSFER_WAIT_MS, keyOfEntry, keyOfHeader, released, sweptFirst } from "./running";
import type { StreamChecks } from "./stream-checks";
import type { WriteWindow } from "./write-window";

type Deps = SinkDeps<SinkCluster>;

// ---- the held checkpoint of an image ----------------------------------------------------------------

export type Held = { entry: JournalEntry; record: CheckpointRecord } | { reason: string };

/** The checkpoint a retry of `h` may resume from, or why there is none. */
export async function findHeld(deps: Deps, io: SinkIoCtx, h: TransferHeader): Promise<Held> {
  const key = keyOfHeader(h);
  const where = key.replace("//", "/");
  const entry = (await deps.journal.list()).find((e) => e.heldUntil && keyOfEntry(e) === key);
  if (!entry) return { reason: `no checkpoint of an earlier attempt is kept for ${where}` };
  // An expired hold is the sweep's (abandon.ts) to undo, perhaps right now: never taken over.
  if (Date.parse(entry.heldUntil as string) <= Date.now())
    return { reason: `the checkpoint kept for ${where} expired (transfer.resumeTtlSeconds)` };
  let img: Awaited<ReturnType<SinkIoCtx["imageOpen"]>>;
  try {
    img = await io.imageOpen(h.destination?.image as string);
  } catch (e) {
    if (isCephError(e, "ENOENT")) return { reason: `${where} no longer exists` };
    throw e;
  }
  try {
    const record = parseCheckpoint(await img.metaGet(RESUME_KEY));
    if (!record || record.transferId !== entry.transferId)
      return { reason: `${where} carries no checkpoint of the transfer kept for it` };
    const why = mismatch(h, record);
    if (why) return { reason: why };
    // Every attempt sized the image to the header's size before it wrote (prepare.ts): another size now
    // is a change made while it was held (an operator's resize, a volume extended) — the transfer starts
    // over rather than leave the size, or what lies in the prefix, as someone else left it.
    const size = (await img.stat()).size;
    if (size !== h.imageSize)
      return { reason: `${where} changed since the checkpoint (its size is ${size}, the transfer's ${h.imageSize})` };
    if (entry.createdImage && (await img.metaGet(INCOMPLETE_KEY)) !== entry.transferId) {
      return { reason: `${where} changed since the checkpoint (its incomplete marker is not the transfer's)` };
    }
    if (isBackupKind(h.kind)) {
      const names = new Set((await img.snapList()).map((s) => s.name));
      if (names.has(h.toSnapshot)) return { reason: `${where} already holds ${h.toSnapshot}: that backup committed` };
      if (h.kind === TransferKind.BACKUP_INCREMENTAL && !names.has(h.fromSnapshot))
        return { reason: `${where} changed since the checkpoint (its snapshots differ)` };
    }
    return { entry, record };
  } finally {
    await img.close();
  }
}

/** TransferService.ResumePoint (the caller's capability was checked against `h` already). */
export async function resumePoint(
  deps: Deps,
  header: TransferHeader | undefined,
  signal?: AbortSignal,
): Promise<ResumePointResponse> {
  const h = validateHeader(header);
  const none = (reason: string): ResumePointResponse => ({
    offset: 0,
    prefixDigest: new Uint8Array(0),
    dataChunks: 0,
    dataBytes: 0,
    zeroRanges: 0,
    zeroBytes: 0,
    reason,
  });
  if (h.expectedFsid && h.expectedFsid !== deps.fsid)
    throw failedPrecondition(
      `this agent serves cluster ${deps.clusterName} (fsid ${deps.fsid}), not ${h.expectedFsid}`,
    );
  if (h.kind === TransferKind.FAILBACK) return none("a failback does not resume");
  // A retry can come while the attempt it replaces still winds down here (its source gave up on it
  // first): that transfer keeps its image for the retry, or removes it, before it lets the image go.
  if (!(await released(keyOfHeader(h), EARLIER_TRANSFER_WAIT_MS, signal)))
    return none("an earlier transfer into the image is still running here");
  const dest = h.destination as NonNullable<TransferHeader["destination"]>;
  if (!(await deps.cluster.poolExists(dest.pool))) return none(`pool ${dest.pool} not found`);
  const io = await deps.cluster.openIoCtx(dest.pool, { namespace: dest.namespace });
  try {
    const held = await findHeld(deps, io, h);
    if ("reason" in held) return none(held.reason);
    const c = held.record.counts;
    return {
      offset: held.record.offset,
      prefixDigest: Buffer.from(held.record.prefixDigest, "hex"),
      dataChunks: c.dataChunks,
      dataBytes: c.dataBytes,
      zeroRanges: c.zeroRanges,
      zeroBytes: c.zeroBytes,
      reason: "",
    };
  } finally {
    await io.close();
  }
}

// ---- a retry with resume_offset: taking the held transfer over --------------------------------------

/**
 * Continues the held transfer of `fp`'s image: FAILED_PRECONDITION (nothing changed) unless the
 * header's offset and prefix digest are its checkpoint's. Returns the checkpoint, re-labelled with
 * this transfer's id (the caller's checkpointer writes it first).
 */
export async function takeOver(
  deps: Deps,
  fp: Footprint,
  checks: StreamChecks,
  log: Logger,
): Promise<CheckpointRecord> {
  const h = fp.h;
  const io = fp.io as SinkIoCtx;
  const held = await findHeld(deps, io, h);
  if ("reason" in held) throw failedPrecondition(`cannot resume at offset ${h.resumeOffset}: ${held.reason}`);
  const r = held.record;
  if (r.offset !== h.resumeOffset || r.prefixDigest !== Buffer.from(h.resumePrefixDigest).toString("hex")) {
    throw failedPrecondition(
      `cannot resume at offset ${h.resumeOffset}: the checkpoint is at ${r.offset} with another prefix digest`,
    );
  }
  // A volume restored into (over the original, or a new one under the caller's name) may have been
  // opened by a VM since the attempt was cut short: refused before this transfer takes anything over, so
  // its cleanup never counts the volume as its own to remove.
  if (isRestoreKind(h.kind)) await refuseInUseNow(deps, fp);
  else await refuseOtherWritersNow(deps, fp);
  const { heldUntil: _held, ...rest } = held.entry;
  const entry: JournalEntry = {
    ...rest,
    transferId: h.transferId,
    clientAddr: deps.clientAddr,
    startedAt: new Date().toISOString(),
    resumable: h.resumable,
  };
  await deps.journal.write(entry);
  fp.journal = entry;
  // From here what the held transfer made is this one's to undo on failure — before the marker is
  // re-labelled: a relabel that fails after it went through (an op timeout) would leave an image whose
  // marker names neither entry, which no recovery removes.
  fp.createdImage = entry.createdImage;
  fp.metaCreated = entry.metaCreated === true;
  fp.image = await io.imageOpen(h.destination?.image as string);
  if (entry.createdImage) await fp.image.metaSet(INCOMPLETE_KEY, h.transferId);
  await deps.journal.remove(held.entry.transferId);
  // Everything ever written into the image is the source snapshot's content, so a created image is
  // still "fresh": what the earlier attempts never wrote reads as the zeros it is.
  fp.fresh = entry.createdImage;
  fp.wrote = true;
  checks.resumeFrom(baseOf(r));
  log.info("resuming a transfer cut short", { image: fp.where, offset: r.offset, from: held.entry.transferId });
  return checkpointRecord(h, h.transferId, baseOf(r));
}

/** Whether a transfer into `h`'s image is held for a resume here (discardHeld would undo it). */
async function holdsFor(deps: Deps, h: TransferHeader): Promise<boolean> {
  const d = h.destination as NonNullable<TransferHeader["destination"]>;
  return (await deps.journal.list()).some((e) => isHeldInto(e, d));
}

/** refuseInUse on the existing image (RESTORE_ORIGINAL), opened for the check alone; a missing one is prepare()'s to report. */
async function refuseInUseNow(deps: Deps, fp: Footprint): Promise<void> {
  let image: SinkImage;
  try {
    image = await (fp.io as SinkIoCtx).imageOpen(fp.h.destination?.image as string);
  } catch (e) {
    if (isCephError(e, "ENOENT")) return;
    throw e;
  }
  try {
    await refuseInUse(deps, fp, image);
  } finally {
    await image.close();
  }
}

/** A backup's base image held for this resume, opened by another client meanwhile: ABORTED, nothing taken over. */
async function refuseOtherWritersNow(deps: Deps, fp: Footprint): Promise<void> {
  const image = await (fp.io as SinkIoCtx).imageOpen(fp.h.destination?.image as string);
  let who: string;
  try {
    who = await otherWriters(image, deps);
  } finally {
    await image.close();
  }
  if (who) throw baseInUse(fp.where, who, "the transfer held for this resume was not taken over");
}

/** A resumable transfer without resume_offset: its journal entry says so (recovery keeps it only then). */
export async function markResumable(deps: Deps, fp: Footprint): Promise<void> {
  const h = fp.h;
  if (!h.resumable || fp.journal?.resumable) return; // prepare.ts journalled it so already
  const d = h.destination as NonNullable<TransferHeader["destination"]>;
  // RESTORE_ORIGINAL journals nothing (nothing to undo); a resumable one needs an entry to be held.
  fp.journal ??= {
    transferId: h.transferId,
    kind: h.kind,
    pool: d.pool,
    namespace: d.namespace,
    image: d.image,
    createdImage: false,
    clientAddr: deps.clientAddr,
    startedAt: new Date().toISOString(),
    ...(h.backupId ? { backupId: h.backupId } : {}),
  };
  fp.journal = { ...fp.journal, resumable: true };
  await deps.journal.write(fp.journal);
}

/** The checkpointer of a resumable transfer (null: not resumable). */
export function checkpointer(
  deps: Deps,
  fp: Footprint,
  checks: StreamChecks,
  window: WriteWindow,
  log: Logger,
  resumedFrom: CheckpointRecord | null,
): Checkpointer | null {
  if (!fp.h.resumable || !fp.image || fp.h.kind === TransferKind.FAILBACK) return null;
  return new Checkpointer(
    fp.h,
    fp.image,
    () => window.barrier(),
    checks,
    {
      everyBytes: deps.resume?.checkpointBytes ?? DEFAULT_CHECKPOINT_BYTES,
      everyMs: deps.resume?.checkpointMs ?? DEFAULT_CHECKPOINT_MS,
    },
    log,
    resumedFrom,
  );
}

// ---- the end of a resumable transfer ---------------------------------------------------------------

/**
 * After the commit, or before a cleanup that keeps the image: the checkpoint goes from `image` (a warning
 * into `warnings` if it cannot).
 */
export async function dropCheckpoint(
  image: SinkImage | undefined,
  cp: Checkpointer | null,
  warnings: string[],
  log: Logger,
): Promise<void> {
  if (!cp?.written || !image) return;
  await image.metaRemove(RESUME_KEY).catch((e: Error) => {
    warnings.push(`could not remove the ${RESUME_KEY} checkpoint: ${e.message}`);
    log.warn("checkpoint removal failed", { err: e });
  });
}

/**
 * Gets the image ready: a retry with resume_offset takes the held transfer over (returns its
 * checkpoint); otherwise a checkpoint kept for the image is discarded first and the image prepared
 * as usual (prepare.ts), journalled as resumable when the header says so.
 */
export async function prepareTarget(
  deps: Deps,
  fp: Footprint,
  checks: StreamChecks,
  log: Logger,
): Promise<CheckpointRecord | null> {
  await sweptFirst(keyOfHeader(fp.h));
  if (fp.h.resumeOffset > 0) return takeOver(deps, fp, checks, log);
  // A volume in use is refused before a kept checkpoint is dropped (a new volume's held image would be
  // removed under its user): the retry, once it is free, resumes. (Nothing held: prepare's own check, on
  // the handle it opens anyway, is enough.)
  if (isRestoreKind(fp.h.kind) && (await holdsFor(deps, fp.h))) await refuseInUseNow(deps, fp);
  await discardHeld(deps, fp.io as SinkIoCtx, fp.h, log);
  await prepare(deps, fp, log);
  await markResumable(deps, fp);
  return null;
}
