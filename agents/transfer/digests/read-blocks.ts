/**
 * Reading chosen blocks of an image with a few reads in flight, for their CRC-32C: used by the sink's
 * read-back and by verification (FULL reads every block). Runs of consecutive blocks are read together
 * (up to `maxReadBytes`, 4 MiB by default — an RBD object), each run into its own buffer. A block larger
 * than that (images over 1 TiB have blocks of 8–64 MiB: at most 2^18 blocks per map) is read in pieces
 * of `maxReadBytes` into one buffer its worker reuses, its CRC combined from the pieces' — so memory is
 * `inFlight` × `maxReadBytes` whatever the image size (whole 64 MiB blocks, 8 in flight, held 512 MiB).
 * `each` gets each block's CRC, whether it is all zeros, and its length, in no particular order.
 */
import type { Crc32c, ReadAt } from "./builder";
import { isZeroData } from "./builder";
import { crc32cCombine, crc32cShiftOp } from "./crc-combine";
import { blockLength } from "./format";

export interface ReadBlocksOptions {
  /** Reads in flight (default 8). */
  inFlight?: number;
  /** The largest read, bytes (default 4 MiB). */
  maxReadBytes?: number;
  signal?: AbortSignal;
}

/** What one block of the image holds. */
export interface BlockRead {
  /** CRC-32C of its bytes. */
  crc: number;
  /** Every byte is zero. */
  zero: boolean;
  length: number;
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

/** Reads the blocks `indices` (ascending) and calls `each(i, block)` for each, in no particular order. */
export async function readBlocks(
  blockSize: number,
  imageSize: number,
  indices: Iterable<number>,
  read: ReadAt,
  crc32c: Crc32c,
  opts: ReadBlocksOptions,
  each: (i: number, block: BlockRead) => void,
): Promise<void> {
  const maxRead = Math.max(1, opts.maxReadBytes ?? 4 * 1024 * 1024);
  const digest = (b: Uint8Array): BlockRead => {
    const crc = crc32c(b) >>> 0;
    return { crc, zero: isZeroData(b, crc), length: b.length };
  };
  const readFully = async (buf: Buffer, at: number) => {
    const got = await read(buf, at);
    if (got !== buf.length) throw new Error(`short read at ${at}: ${got} of ${buf.length} bytes`);
  };
  const pieced = blockSize > maxRead;
  const it = runs(indices, pieced ? 1 : Math.max(1, Math.floor(maxRead / blockSize)));
  let stop = false;
  const worker = async () => {
    // A large block's pieces go through one buffer per worker.
    const piece = pieced ? Buffer.allocUnsafe(maxRead) : null;
    for (;;) {
      if (stop) return;
      opts.signal?.throwIfAborted();
      const next = it.next();
      if (next.done) return;
      const { first, n } = next.value;
      try {
        if (piece) {
          const start = first * blockSize;
          const len = blockLength(blockSize, imageSize, first);
          const sum: BlockRead = { crc: 0, zero: true, length: len };
          for (let off = 0; off < len; off += maxRead) {
            if (off > 0) opts.signal?.throwIfAborted();
            const view = piece.subarray(0, Math.min(maxRead, len - off));
            await readFully(view, start + off);
            const d = digest(view);
            sum.crc = off === 0 ? d.crc : crc32cCombine(sum.crc, d.crc, crc32cShiftOp(view.length));
            sum.zero &&= d.zero;
          }
          each(first, sum);
          continue;
        }
        const start = first * blockSize;
        const buf = Buffer.allocUnsafe(Math.min(imageSize, (first + n) * blockSize) - start);
        await readFully(buf, start);
        for (let k = 0; k < n; k++) {
          const off = k * blockSize;
          each(first + k, digest(buf.subarray(off, off + blockLength(blockSize, imageSize, first + k))));
        }
      } catch (e) {
        stop = true;
        throw e;
      }
    }
  };
  const workers = Array.from({ length: Math.max(1, opts.inFlight ?? 8) }, worker);
  // Every worker settles before this does (no read still writing into a buffer once it fails).
  const results = await Promise.allSettled(workers);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
}
