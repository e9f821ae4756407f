/**
 * Which destination images a transfer of this process is writing now: ResumePoint does not offer a
 * checkpoint of an image still being written, and an expired hold is not undone under a transfer.
 */
import type { TransferHeader } from "../../../src/gen/rbdbackup/v1/transfer";
import type { JournalEntry } from "../journal";

const running = new Map<string, number>();
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
    if (n > 0) running.set(k, n);
    else running.delete(k);
  };
}

export const isRunning = (key: string): boolean => running.has(key);
