/**
 * Which destination images a transfer of this process is writing now: one transfer per image at a time
 * (claimImageAlone: a second waits for the first to let go, or is refused); ResumePoint does not offer a
 * checkpoint of an image still being written (it waits a while for that transfer to wind down first),
 * and an expired hold is not undone under a transfer — nor does a transfer prepare an image whose
 * expired hold the sweep is undoing (it waits for the sweep).
 */
import { parseBaseImage } from "../../../src/common/ids";
import type { TransferHeader } from "../../../src/gen/rbdbackup/v1/transfer";
import type { JournalEntry } from "../journal";

/**
 * How long a transfer (and ResumePoint) waits for an earlier transfer into the image to wind down (its
 * writes in flight, then keeping or removing the image): inside the caller's 30 s deadline (peers.ts
 * UNARY_DEADLINE_MS) and the source's idle bound (transfer.bulkIdleTimeoutMs, 30 s by default).
 */
export const EARLIER_TRANSFER_WAIT_MS = 20_000;

const running = new Map<string, number>();
/** Key → who waits for its last claim to go (`released`). */
const waiting = new Map<string, Set<() => void>>();
const keyOf = (pool: string, namespace: string, image: string) => `${pool}/${namespace}/${image}`;
export const keyOfHeader = (h: TransferHeader) =>
  keyOf(h.destination?.pool ?? "", h.destination?.namespace ?? "", h.destination?.image ?? "");
export const keyOfEntry = (e: JournalEntry) => keyOf(e.pool, e.namespace, e.image);

/**
 * Claims the header's image for this transfer alone: a transfer of this process still writing it (an
 * earlier attempt winding down: its source gave up first, its idle bound or drain still running) is
 * waited for, up to `ms`; null when it did not let go in time, or `signal` aborted. Two transfers in one
 * image would undo each other: the earlier attempt's cleanup (a rollback to the from-snapshot) landing
 * under the retry's writes, which would then commit a backup missing data.
 */
export async function claimImageAlone(
  h: TransferHeader,
  ms: number,
  signal?: AbortSignal,
): Promise<(() => void) | null> {
  const k = keyOfHeader(h);
  const deadline = Date.now() + ms;
  // Another waiter woken by the same release may claim first: look again after every wake-up.
  while (running.has(k)) {
    const left = deadline - Date.now();
    if (left <= 0 || !(await released(k, left, signal))) return null;
  }
  return claimImage(h);
}

/** Marks the header's image as being written by a transfer of this process; returns the release. */
export function claimImage(h: TransferHeader): () => void {
  const k = keyOfHeader(h);
  running.set(k, (running.get(k) ?? 0) + 1);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const n = (running.get(k) ?? 1) - 1;
    if (n > 0) return void running.set(k, n);
    running.delete(k);
    for (const wake of waiting.get(k) ?? []) wake();
    waiting.delete(k);
  };
}

/**
 * Resolves true once no transfer of this process writes the image (at once when none does), false
 * after `ms` or when `signal` aborts. A transfer cut short keeps its image for a retry (or removes it)
 * before it lets the image go, so a retry that waits here finds the hold instead of the image in its way.
 */
export function released(key: string, ms: number, signal?: AbortSignal): Promise<boolean> {
  if (!running.has(key)) return Promise.resolve(true);
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const set = waiting.get(key) ?? new Set<() => void>();
    waiting.set(key, set);
    const done = (v: boolean) => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      set.delete(wake);
      if (set.size === 0 && waiting.get(key) === set) waiting.delete(key);
      resolve(v);
    };
    const wake = () => done(true);
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(false), ms);
    set.add(wake);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export const isRunning = (key: string): boolean => running.has(key);

/**
 * Resolves once no transfer of this process writes a base image of `volumeImage` in `pool`/`namespace`
 * (`<volume>.backup.<id>`), or after `ms`, or when `signal` aborts: a listing of the volume's chains then
 * shows a commit or a cleanup that was under way (a source stopped mid-wait asks whether it committed).
 */
export async function chainsSettled(
  pool: string,
  namespace: string,
  volumeImage: string,
  ms: number,
  signal?: AbortSignal,
): Promise<void> {
  const at = keyOf(pool, namespace, "");
  // This volume's base images only (`<volume>.backup.<uuid>`): not `<volume>.backup.x.backup.<uuid>`, another's.
  const ours = (k: string) => k.startsWith(at) && parseBaseImage(k.slice(at.length), volumeImage) !== null;
  const deadline = Date.now() + ms;
  for (;;) {
    const k = [...running.keys()].find(ours);
    const left = deadline - Date.now();
    if (!k || left <= 0 || !(await released(k, left, signal))) return;
  }
}

/** How many wait for `key`'s last claim to go (tests wait on it instead of a timer). */
export const waitersOf = (key: string): number => waiting.get(key)?.size ?? 0;

/** Images whose expired hold the sweep (abandon.ts) is undoing now, and when it is done. */
const sweeps = new Map<string, Promise<void>>();

/** Marks `key` as being swept; returns the end of it. The caller checked isRunning and isSwept first. */
export function beginSweep(key: string): () => void {
  let end = () => {};
  sweeps.set(
    key,
    new Promise<void>((r) => {
      end = r;
    }),
  );
  return () => {
    sweeps.delete(key);
    end();
  };
}

export const isSwept = (key: string): boolean => sweeps.has(key);

/**
 * Resolves once no sweep undoes the image's expired hold (at once when none does): a transfer into the
 * image prepares only then, so a rollback or removal of the old attempt never lands under its writes.
 * Bounded by the sweep's own Ceph operations (each under the cluster's op timeout).
 */
export const sweptFirst = (key: string): Promise<void> => sweeps.get(key) ?? Promise.resolve();

/** How long a discard_held is remembered for transfers still winding down when it came. */
export const DISCARD_MEMORY_MS = 10 * 60_000;
const discarded: Array<{ match: (e: JournalEntry) => boolean; until: number }> = [];

/**
 * A cancelled job's discard_held asked to undo the held transfers `match` picks: one still winding down
 * (not held yet: its source gave up first, its destination has not noticed) is not held when it ends,
 * but cleaned up (keep.ts holdForResume asks `discardAsked`). Remembered for DISCARD_MEMORY_MS.
 */
export function rememberDiscard(match: (e: JournalEntry) => boolean, now = Date.now()): void {
  forgetOldDiscards(now);
  discarded.push({ match, until: now + DISCARD_MEMORY_MS });
}

/** Whether a discard_held of late asked for the transfer of journal entry `e` to be undone. */
export function discardAsked(e: JournalEntry, now = Date.now()): boolean {
  forgetOldDiscards(now);
  return discarded.some((d) => d.match(e));
}

function forgetOldDiscards(now: number): void {
  for (let i = discarded.length - 1; i >= 0; i--) if ((discarded[i]?.until ?? 0) <= now) discarded.splice(i, 1);
}
