/** The zero detection's definition (and a seeded generator), for tests of protocol.ts `segments` and `provablyData`. */
import { isAllZero, MIN_ZERO_RUN, type Segment, ZERO_BLOCK } from "../../agents/transfer/protocol";

/** The definition, block by block: runs of whole zero blocks of at least MIN_ZERO_RUN are zero segments. */
export function byBlocks(buf: Buffer, offset: number): Segment[] {
  if (isAllZero(buf)) return [{ offset, length: buf.length, zero: true }];
  const out: Segment[] = [];
  let dataStart = 0;
  let pos = 0;
  while (pos < buf.length) {
    if (pos % ZERO_BLOCK === 0 && pos + ZERO_BLOCK <= buf.length && isAllZero(buf.subarray(pos, pos + ZERO_BLOCK))) {
      let end = pos + ZERO_BLOCK;
      while (end + ZERO_BLOCK <= buf.length && isAllZero(buf.subarray(end, end + ZERO_BLOCK))) end += ZERO_BLOCK;
      if (end - pos >= MIN_ZERO_RUN) {
        if (pos > dataStart) out.push({ offset: offset + dataStart, length: pos - dataStart, zero: false });
        out.push({ offset: offset + pos, length: end - pos, zero: true });
        dataStart = end;
      }
      pos = end;
    } else {
      pos = (Math.floor(pos / ZERO_BLOCK) + 1) * ZERO_BLOCK;
    }
  }
  if (dataStart < buf.length) out.push({ offset: offset + dataStart, length: buf.length - dataStart, zero: false });
  return out;
}

/** A small deterministic generator (xorshift32), so a failure names its seed. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}
