/**
 * Which destination images a transfer of this process is writing now: ResumePoint does not offer a
 * checkpoint of an image still being written (it waits a while for that transfer to wind down first),
 * and an expired hold is not undone under a transfer — nor does a transfer prepare an image whose
 * expired hold the sweep is undoing (it waits for the sweep).
 */
import type { TransferHeader } from "../../../src/gen/rbdbackup/v1/transfer";
import type { JournalEntry } from "../journal";

const running = new Map<string, number>();
/** Key → who waits for its last claim to go (`released`). */
const waiting = new Map<string, Set<() => void>>();
const keyOf = (pool: string, namespace: string, image: string) => `${pool}/${namespace}/${image}`;
export const keyOfHeader = (h: TransferHeader) =>
  keyOf(h.destination?.pool ?? "", h.destination?.namespace ?? "", h.destination?.image ?? "");
export const keyOfEntry = (e: JournalEntry) => keyOf(e.pool, e.namespace, e.image);

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
