/**
 * Transfers held for a resume (resume.ts) that will not be resumed: undone like any interrupted
 * transfer (recovery.ts recoverOne: the image it created removed, a base image's head rolled back,
 * the checkpoint removed) — when the hold expires (`sweepHeld`, run periodically by the agent), when a
 * retry starts over into the same image (`discardHeld`, before it prepares the image), or when the job
 * was cancelled (`discardHeldInto`, the coordinator's discard_held call).
 */
import type { Logger } from "../../../src/common/log";
import type { TransferHeader } from "../../../src/gen/rbdbackup/v1/transfer";
import type { JournalEntry } from "../journal";
import { isBackupKind } from "../protocol";
import { imageWhere } from "./footprint";
import type { SinkCluster, SinkDeps, SinkIoCtx } from "./ports";
import { recoverOne, superseded } from "./recovery";
import { beginSweep, isRunning, isSwept, keyOfEntry, rememberDiscard } from "./running";

type Deps = SinkDeps<SinkCluster>;

/** Undoes `e`; false when it was left to another client that has the image open (the entry stays, no longer held). */
async function undo(deps: Deps, io: SinkIoCtx, e: JournalEntry, done: string[]): Promise<boolean> {
  if (await recoverOne(io, { ...e, heldUntil: undefined }, imageWhere(e), done, deps)) {
    await deps.journal.remove(e.transferId);
    return true;
  }
  if (e.heldUntil) {
    const { heldUntil: _held, ...rest } = e;
    await deps.journal.write(rest);
  }
  return false;
}

type Where = { pool: string; namespace: string; image: string };

/** Whether journal entry `e` is a transfer into the image `d` names (image "": any backup's of its pool). */
const isInto = (e: JournalEntry, d: Where): boolean =>
  e.pool === d.pool && e.namespace === d.namespace && (d.image === "" ? isBackupKind(e.kind) : e.image === d.image);

/** Whether journal entry `e` is a transfer held for a resume into the image `d` names. */
export const isHeldInto = (e: JournalEntry, d: Where): boolean => !!e.heldUntil && isInto(e, d);

/** A retry starting over (no resume_offset) into `h`'s image: the checkpoint kept for it goes first. */
export async function discardHeld(deps: Deps, io: SinkIoCtx, h: TransferHeader, log: Logger): Promise<void> {
  const d = h.destination as NonNullable<TransferHeader["destination"]>;
  for (const e of await deps.journal.list()) {
    if (!isHeldInto(e, d)) continue;
    const done: string[] = [];
    await undo(deps, io, e, done);
    log.info("a retry starts over: discarded the transfer kept for a resume", { image: imageWhere(e), done });
  }
}

/** Undoes held transfers whose hold expired; returns what it did. Failures stay for the next sweep. */
export function sweepHeld(deps: Deps, now = Date.now()): Promise<string[]> {
  return undoHeld(deps, (e) => Date.parse(e.heldUntil as string) <= now, "expired");
}

/** How long after its start a journal entry that is neither held nor running counts as a leftover. */
export const LEFTOVER_GRACE_MS = 10 * 60_000;

/**
 * Undoes the entries of transfers that ended but whose cleanup failed (an image busy for the cleanup's
 * ~40 s of retries, a pool unreachable) or whose settling after the commit did — neither held nor
 * running, started more than `graceMs` ago: as the next start's recovery would (recoverOne: a committed
 * backup keeps everything and loses its marker), so that a retry of that backup need not wait for a
 * restart. Failures stay for the next sweep. Returns what it did.
 */
export function sweepLeftovers(deps: Deps, now = Date.now(), graceMs = LEFTOVER_GRACE_MS): Promise<string[]> {
  return undoEntries(
    deps,
    (e) => !e.heldUntil && Date.parse(e.startedAt) <= now - graceMs,
    (e) => `the transfer into ${imageWhere(e)} left behind by a failed cleanup was undone`,
  );
}

/**
 * Undoes the transfers held into `where` (pool, namespace, image) for `backupId`, whatever their hold:
 * the job they were kept for ended, cancelled or failed (session call discard_held). `where.image` "":
 * any backup's image of that pool and namespace (a backup, whose image its source agent chose). One
 * still winding down is not held when it ends (rememberDiscard) — only one started before this call: a
 * new job's transfer into the same image for the same backup (the operator's next restore) may be held.
 * Returns what it did.
 */
export function discardHeldInto(deps: Deps, where: Where, backupId: string, now = Date.now()): Promise<string[]> {
  const match = (e: JournalEntry) => isInto(e, where) && e.backupId === backupId;
  // A transfer still winding down (not held yet) is cleaned up instead of held when it ends.
  rememberDiscard((e) => match(e) && Date.parse(e.startedAt) <= now);
  return undoHeld(deps, match, "discarded: its job ended");
}

/** Undoes the held transfers `match` picks (none running or being swept); failures stay for the next sweep. */
function undoHeld(deps: Deps, match: (e: JournalEntry) => boolean, why: string): Promise<string[]> {
  return undoEntries(
    deps,
    (e) => !!e.heldUntil && match(e),
    (e) => `the transfer into ${imageWhere(e)} kept for a resume was undone (${why})`,
  );
}

/** Undoes the journal entries `pick` picks (none running or being swept); failures stay for the next sweep. */
async function undoEntries(
  deps: Deps,
  pick: (e: JournalEntry) => boolean,
  said: (e: JournalEntry) => string,
): Promise<string[]> {
  const done: string[] = [];
  const all = await deps.journal.list();
  for (const e of all) {
    const key = keyOfEntry(e);
    if (!pick(e) || isRunning(key) || isSwept(key)) continue;
    // Claimed before the first await: a transfer into this image starting meanwhile waits (prepareTarget).
    const swept = beginSweep(key);
    try {
      if (superseded(e, all)) {
        await deps.journal.remove(e.transferId);
        done.push(
          `the entry of transfer ${e.transferId} into ${imageWhere(e)} was dropped: a later transfer into the image superseded it`,
        );
        continue;
      }
      let undone = true;
      if (await deps.cluster.poolExists(e.pool)) {
        const io = await deps.cluster.openIoCtx(e.pool, { namespace: e.namespace, poolFullTry: true });
        try {
          undone = await undo(deps, io, e, done);
        } finally {
          await io.close();
        }
      } else {
        await deps.journal.remove(e.transferId);
      }
      if (undone) done.push(said(e));
    } catch (err) {
      deps.log.warn("undoing a transfer (held, or left by a failed cleanup) failed; the sweep retries", {
        image: imageWhere(e),
        err,
      });
    } finally {
      swept();
    }
  }
  for (const d of done) deps.log.info(d);
  return done;
}
