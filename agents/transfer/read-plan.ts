/**
 * Which reads the source issues for a diff's data extents, and how many may fly at once.
 *
 * A diff of a volume written in small random I/O is thousands of small extents (4 KiB each under
 * `rbd bench --io-size 4K`): one OSD read each, on an OSD the writer keeps busy, is where an incremental
 * of a live volume spent its seconds. Extents close to each other in the same chunk-aligned window (an
 * RBD object with the default chunk size) are read with one read covering them; only the extents' own
 * bytes are sent (`parts`), never the gaps. Reading a gap of up to MAX_GAP costs the OSD less than
 * another operation does.
 *
 * The read window is bounded by buffer bytes (`readsInFlight` chunks' worth) and by count
 * (`readsInFlight` × SMALL_READS_PER_SLOT): small reads take buffers sized to them, so an incremental's
 * 64 KiB extents are not 8 OSD round trips at a time, nor a queue so deep it slows an idle OSD.
 */

export interface Piece {
  offset: number;
  length: number;
}

/** One read: [offset, offset+length); `parts` (ascending, inside it) are what to send — null: all of it. */
export interface ReadPlan {
  offset: number;
  length: number;
  parts: Piece[] | null;
}

/** Largest gap between two extents read together, bytes. */
export const MAX_GAP = 128 * 1024;
/**
 * Small reads per read-window slot (a slot is one chunk's worth of buffer). Measured on the lab
 * (test/bench/source-reads.ts): 16 small reads in flight read an idle volume's 64 KiB extents as fast
 * as 8 and 2× faster than 64; under a writer 64 were 2× faster than 8 — 16 is the compromise.
 */
export const SMALL_READS_PER_SLOT = 2;
/** Buffers of reads this small are sized to the read (a power of two), not to the chunk size. */
const SMALL_READ = 256 * 1024;

/** The buffer capacity a read of `length` takes from the frame pool. */
export function capacityFor(length: number, chunkSize: number): number {
  if (length > SMALL_READ || length >= chunkSize) return chunkSize;
  let c = 4096;
  while (c < length) c *= 2;
  return c;
}

/** Whether a window holding `count` reads and `held` buffer bytes must wait before a read of `capacity` more. */
export function windowFull(
  count: number,
  held: number,
  capacity: number,
  o: { readsInFlight: number; chunkSize: number },
): boolean {
  if (count === 0) return false;
  if (count >= o.readsInFlight * SMALL_READS_PER_SLOT) return true;
  return held + capacity > o.readsInFlight * o.chunkSize;
}

/** Pieces of [offset, offset+length) cut at multiples of `chunk`, so reads line up with RBD objects. */
export function* split(offset: number, length: number, chunk: number): Generator<Piece> {
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const next = Math.min(end, (Math.floor(pos / chunk) + 1) * chunk);
    yield { offset: pos, length: next - pos };
    pos = next;
  }
}

/** Turns ascending, non-overlapping data extents into reads (see the module comment). */
export class ReadPlanner {
  #span: { start: number; end: number; parts: Piece[] } | null = null;

  constructor(
    readonly chunkSize: number,
    readonly maxGap = MAX_GAP,
  ) {}

  /** A data extent; returns the reads now complete, in order. */
  add(offset: number, length: number): ReadPlan[] {
    const c = this.chunkSize;
    const window = Math.floor(offset / c);
    const s = this.#span;
    if (Math.floor((offset + length - 1) / c) !== window) {
      // Crosses a chunk boundary: read in chunk-aligned pieces, each on its own.
      const out = this.flush();
      for (const p of split(offset, length, c)) out.push({ ...p, parts: null });
      return out;
    }
    if (s && Math.floor(s.start / c) === window && offset - s.end <= this.maxGap) {
      s.parts.push({ offset, length });
      s.end = offset + length;
      return [];
    }
    const out = this.flush();
    this.#span = { start: offset, end: offset + length, parts: [{ offset, length }] };
    return out;
  }

  /** The read still being gathered, if any. */
  flush(): ReadPlan[] {
    const s = this.#span;
    if (!s) return [];
    this.#span = null;
    return [{ offset: s.start, length: s.end - s.start, parts: s.parts.length > 1 ? s.parts : null }];
  }
}
