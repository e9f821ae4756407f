/**
 * Crash recovery: at start, the journal entries left by a previous run are transfers that died
 * mid-way. For each: an image the transfer created is removed unless a snapshot shows the backup
 * committed — by this attempt or by a later one of the same backup — (and only while it still carries
 * that transfer's incomplete marker and no snapshot at all); a base image's head is rolled back to its
 * parent snapshot; an uncommitted backup's metadata object and digest map are removed, also when its
 * image is already gone. First the dead run's Ceph client is blocklisted, so the watches and locks it held go now.
 * A resumable transfer that left a checkpoint is kept instead, for a retry to resume (sink/resume.ts).
 * Safe to run twice; an entry whose recovery fails stays for the next start.
 */
import { metaObjectName, parseBackupSnap } from "../../../src/common/ids";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { isCephError } from "../../ceph";
import { digestsObjectName } from "../digests";
import type { JournalEntry } from "../journal";
import { isBackupKind } from "../protocol";
import { RESUME_KEY } from "./checkpoint";
import { imageWhere } from "./footprint";
import { headDiffers, holdsData, INCOMPLETE_KEY, type OwnClient, otherWriters, removeImageRetrying } from "./image-ops";
import { holdAtStart } from "./keep";
import type { SinkCluster, SinkDeps, SinkImage, SinkIoCtx } from "./ports";
import { keyOfEntry } from "./running";

type Deps = SinkDeps<SinkCluster>;

/** Undoes what interrupted transfers left behind; returns what it did, for the log. */
export async function recoverInterrupted(deps: Deps): Promise<string[]> {
  const done: string[] = [];
  const entries = await deps.journal.list();
  await fenceDeadClients(deps, entries, done);
  for (const e of entries) {
    if (await holdAtStart(deps, e, done)) continue; // cut short with a checkpoint: kept for a retry
    const where = imageWhere(e);
    try {
      if (superseded(e, entries)) {
        // An entry kept because another client had the image open, and a later transfer into it since.
        await deps.journal.remove(e.transferId);
        done.push(
          `dropped the entry of transfer ${e.transferId} into ${where}: a later transfer into the image superseded it`,
        );
        continue;
      }
      let undone = true;
      if (await deps.cluster.poolExists(e.pool)) {
        const io = await deps.cluster.openIoCtx(e.pool, { namespace: e.namespace, poolFullTry: true });
        try {
          undone = await recoverOne(io, e, where, done, deps);
        } finally {
          await io.close();
        }
      }
      if (undone) await deps.journal.remove(e.transferId);
    } catch (err) {
      deps.log.error("recovery of an interrupted transfer failed; will retry at next start", {
        transfer: e.transferId,
        image: where,
        err,
      });
    }
  }
  for (const d of done) deps.log.info(d);
  return done;
}

/**
 * The process that wrote these entries died holding watches and exclusive locks on the images; its
 * Ceph client would keep them until its watch times out. Blocklist it so they go now.
 */
async function fenceDeadClients(deps: Deps, entries: JournalEntry[], done: string[]): Promise<void> {
  const dead = new Set(entries.map((e) => e.clientAddr).filter((a): a is string => !!a && a !== deps.clientAddr));
  for (const addr of dead) {
    try {
      await deps.cluster.blocklistAdd(addr, 3600);
      done.push(`blocklisted ${addr}, the Ceph client of a previous run that died mid-transfer`);
    } catch (err) {
      deps.log.warn("could not blocklist a dead predecessor; recovery may wait for its watches to time out", {
        addr,
        err,
      });
    }
  }
}

/**
 * A full backup's base image left between its creation and its incomplete marker (a kill there, or a
 * create that timed out yet went through): named for the backup (only this product makes
 * vol.backup.<id>), no snapshot, and never written — writes come after the marker — so it is removed
 * (else every retry of that backup met "already exists"). A restore's new volume bears the caller's
 * name: without this transfer's marker recovery never touches it (the transfer's own failed create
 * removes what it provably made: prepare.ts removeLostCreate).
 */
async function unmarkedBase(img: SinkImage, e: JournalEntry): Promise<boolean> {
  return e.kind === TransferKind.BACKUP_FULL && !(await holdsData(img));
}

/**
 * Whether a later transfer into the same image has an entry too: `e` (a leftover kept because another
 * client had the image open) is then moot — that transfer's prepare dealt with the image (rolled its head
 * back, took over or discarded what was held) — and undoing it now would undo the later one's work.
 */
export function superseded(e: JournalEntry, all: JournalEntry[]): boolean {
  const at = Date.parse(e.startedAt);
  const key = keyOfEntry(e);
  return all.some((o) => o.transferId !== e.transferId && keyOfEntry(o) === key && Date.parse(o.startedAt) > at);
}

const leftTo = (where: string, who: string, e: JournalEntry) =>
  `left ${where} to the client that has it open (${who}); interrupted transfer ${e.transferId} not undone yet`;

/** Whether another client has `e`'s image open (said in `done`); false when it is free or gone. */
async function leftToOthers(io: SinkIoCtx, e: JournalEntry, where: string, done: string[], own: OwnClient) {
  let ro: SinkImage;
  try {
    ro = await io.imageOpen(e.image, { readOnly: true });
  } catch (err) {
    if (isCephError(err, "ENOENT")) return false;
    throw err;
  }
  try {
    const who = await otherWriters(ro, own);
    if (who) done.push(leftTo(where, who, e));
    return !!who;
  } finally {
    await ro.close();
  }
}

/**
 * Undoes one entry. Returns false when the image is left to another client that has it open: the entry
 * then stays, for a later sweep (sweepLeftovers) or start — that client may be a dead predecessor whose
 * watch outlived a failed blocklisting, and the undo is owed once its watch has timed out.
 */
export async function recoverOne(
  io: SinkIoCtx,
  e: JournalEntry,
  where: string,
  done: string[],
  own: OwnClient,
): Promise<boolean> {
  // A first look through a read-only handle, which holds no watch: a sweep that finds the image in use
  // leaves it without having been a watcher itself (another agent's prepare or commit would refuse then).
  const left = await leftToOthers(io, e, where, done, own);
  if (left) return false;
  let img: SinkImage;
  try {
    img = await io.imageOpen(e.image);
  } catch (err) {
    if (!isCephError(err, "ENOENT")) throw err;
    // The image is gone (removed by the transfer's own cleanup, whose later steps failed): the backup
    // was not committed there, and what it wrote beside the image goes too — else its metadata object
    // makes every retry of the backup fail ALREADY_EXISTS.
    await removeUncommitted(io, e);
    return true;
  }
  let committed = false;
  let removable = false;
  try {
    // Another client has it open (this backup's retry on another agent of the cluster, which rolled the
    // head back itself before writing; image-ops.ts otherWriters): nothing of it is undone under that
    // client — not the head, not the checkpoint, not the backup's objects, which may be that retry's.
    const who = await otherWriters(img, own);
    if (who) {
      done.push(leftTo(where, who, e));
      return false;
    }
    const snaps = await img.snapList();
    // Committed by this attempt (its snapshot) — or by a later attempt of the same backup (a retry that
    // made its own snapshot of it while this entry stayed, its cleanup having failed): its metadata
    // object and digest map are that backup's now, and stay.
    const ofThisBackup = (name: string) =>
      name === e.toSnapshot || (!!e.backupId && parseBackupSnap(name)?.backupId === e.backupId);
    committed = e.toSnapshot ? snaps.some((s) => ofThisBackup(s.name)) : false;
    if (committed) {
      if (e.createdImage) await img.metaRemove(INCOMPLETE_KEY).catch(() => {});
    } else if (e.createdImage && snaps.length === 0) {
      const marker = await img.metaGet(INCOMPLETE_KEY);
      removable = marker === e.transferId || (marker === null && (await unmarkedBase(img, e)));
    } else if (e.rollbackTo && (await headDiffers(img, e.rollbackTo))) {
      await img.snapRollback(e.rollbackTo);
      done.push(`rolled ${where} back to ${e.rollbackTo} after interrupted transfer ${e.transferId}`);
    }
    if (!removable && e.resumable) await img.metaRemove(RESUME_KEY).catch(() => {});
  } finally {
    await img.close();
  }
  if (removable) {
    await removeImageRetrying(io, e.image);
    done.push(`removed ${where}, left half-written by interrupted transfer ${e.transferId}`);
  }
  if (!committed) await removeUncommitted(io, e);
  return true;
}

/**
 * An uncommitted backup's metadata object and digest map, when this transfer may have made them: both
 * are created at commit, after the entry says `metaCreated` (commit.ts), and the flag is taken back when
 * the backup id turned out to be another's. A transfer that never reached its commit made neither, and
 * must not remove those of a backup that reused its id.
 */
async function removeUncommitted(io: SinkIoCtx, e: JournalEntry): Promise<void> {
  if (!e.metaCreated || !e.backupId) return;
  await io.objRemove(metaObjectName(e.backupId)).catch(() => {});
  if (isBackupKind(e.kind)) await io.objRemove(digestsObjectName(e.backupId)).catch(() => {});
}
