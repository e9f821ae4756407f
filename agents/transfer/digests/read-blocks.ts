/**
 * Reading chosen blocks of an image with a few reads in flight: runs of consecutive blocks are read
 * together (up to `maxReadBytes`, 4 MiB by default — an RBD object), each run into its own buffer, and
 * every block handed to `each` as a view of it (valid during the call only). Used by the sink's
 * read-back and by verification (FULL reads every block).
 */
import type { ReadAt } from "./builder";
import { blockLength } from "./format";

export interface ReadBlocksOptions {
  /** Reads in flight (default 8). */
  inFlight?: number;
  maxReadBytes?: number;
  signal?: AbortSignal;
}

/** One read: blocks [first, first+n). */
interface Run {
  first: number;
  n: number;
}

function* runs(indices: Iterable<number>, perRun: number): Generator<Run> {
  let cur: Run | null = null;
  for (const i of indices) {
    if (cur && i === cur.first + cur.n && cur.n < perRun) {
      cur.n++;
      continue;
    }
    if (cur) yield cur;
    cur = { first: i, n: 1 };
  }
  if (cur) yield cur;
}

/** Reads the blocks `indices` (ascending) and calls `each(i, bytes)` for each, in no particular order. */
export async function readBlocks(
  blockSize: number,
  imageSize: number,
  indices: Iterable<number>,
  read: ReadAt,
  opts: ReadBlocksOptions,
  each: (i: number, block: Uint8Array) => void,
): Promise<void> {
  const perRun = Math.max(1, Math.floor((opts.maxReadBytes ?? 4 * 1024 * 1024) / blockSize));
  const it = runs(indices, perRun);
  let stop = false;
  const worker = async () => {
    for (;;) {
      if (stop) return;
      opts.signal?.throwIfAborted();
      const next = it.next();
      if (next.done) return;
      const { first, n } = next.value;
      const start = first * blockSize;
      const end = Math.min(imageSize, (first + n) * blockSize);
      const buf = Buffer.allocUnsafe(end - start);
      let got: number;
      try {
        got = await read(buf, start);
      } catch (e) {
        stop = true;
        throw e;
      }
      if (got !== buf.length) {
        stop = true;
        throw new Error(`short read at ${start}: ${got} of ${buf.length} bytes`);
      }
      for (let k = 0; k < n; k++) {
        const i = first + k;
        const off = k * blockSize;
        each(i, buf.subarray(off, off + blockLength(blockSize, imageSize, i)));
      }
    }
  };
  const workers = Array.from({ length: Math.max(1, opts.inFlight ?? 8) }, worker);
  // Every worker settles before this does (no read still writing into a buffer once it fails).
  const results = await Promise.allSettled(workers);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
}
