/**
 * Keeping a resumable transfer cut short (resume.ts has the whole story): on the spot when the call
 * was cut (`holdForResume`), or at the next start when the agent died (`holdAtStart`, from recovery).
 * A held journal entry carries `heldUntil` (now + transfer.resumeTtlSeconds); abandon.ts undoes it
 * once that passed.
 */
import type { Logger } from "../../../src/common/log";
import type { JournalEntry } from "../journal";
import { type Checkpointer, parseCheckpoint, RESUME_KEY } from "./checkpoint";
import type { Footprint } from "./footprint";
import type { SinkCluster, SinkDeps } from "./ports";
import { discardAsked } from "./running";

type Deps = SinkDeps<SinkCluster>;

export const DEFAULT_RESUME_TTL_SECONDS = 3600;

const ttlMs = (deps: Deps) => (deps.resume?.ttlSeconds ?? DEFAULT_RESUME_TTL_SECONDS) * 1000;

/**
 * A transfer cut short with a checkpoint on disk: closes the image and holds the journal entry for
 * a retry (true); false when there is nothing to hold (the caller cleans up as usual).
 */
export async function holdForResume(deps: Deps, fp: Footprint, cp: Checkpointer | null, log: Logger): Promise<boolean> {
  if (!cp?.written || !fp.journal) return false;
  if (discardAsked(fp.journal)) {
    log.info("transfer cut short, but its job ended (discard_held): cleaning up, not kept", {
      image: fp.where,
    });
    return false;
  }
  try {
    await fp.image?.close();
    fp.image = undefined;
    fp.journal = { ...fp.journal, heldUntil: new Date(Date.now() + ttlMs(deps)).toISOString() };
    await deps.journal.write(fp.journal);
  } catch (e) {
    log.warn("could not keep a transfer cut short for a retry; cleaning up", { err: e });
    return false;
  }
  log.warn("transfer cut short: its image and checkpoint are kept for a retry", {
    image: fp.where,
    offset: cp.written.offset,
    until: fp.journal.heldUntil,
  });
  return true;
}

/**
 * At start (recovery), an entry of a transfer that died mid-way: held (true) while it is a resumable
 * transfer whose image carries its checkpoint, has not committed (a backup's snapshot is not there) and
 * the hold has not expired.
 */
export async function holdAtStart(deps: Deps, e: JournalEntry, done: string[]): Promise<boolean> {
  if (e.heldUntil) return Date.parse(e.heldUntil) > Date.now();
  if (!e.resumable) return false;
  try {
    if (!(await deps.cluster.poolExists(e.pool))) return false;
    const io = await deps.cluster.openIoCtx(e.pool, { namespace: e.namespace, poolFullTry: true });
    try {
      const img = await io.imageOpen(e.image);
      try {
        const rec = parseCheckpoint(await img.metaGet(RESUME_KEY));
        if (rec?.transferId !== e.transferId) return false;
        // Killed after its snapshot was made: committed, not a transfer to resume (recovery completes it).
        if (e.toSnapshot && (await img.snapList()).some((s) => s.name === e.toSnapshot)) return false;
        await deps.journal.write({ ...e, heldUntil: new Date(Date.now() + ttlMs(deps)).toISOString() });
        done.push(
          `kept ${e.pool}/${e.image} of interrupted transfer ${e.transferId} for a retry (checkpoint at ${rec.offset})`,
        );
        return true;
      } finally {
        await img.close();
      }
    } finally {
      await io.close();
    }
  } catch {
    return false; // not held: recovery undoes it
  }
}
