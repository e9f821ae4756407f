/**
 * Whether a read can hold a zero segment at all, decided from a few blocks instead of every one.
 *
 * protocol.ts `segments` looks at each ZERO_BLOCK of a buffer (a native compare per block: 512 calls for
 * a 2 MiB read of data; 0.02–0.04 CPU-s per GiB alone, ~6 % of the source agent's JS-thread samples in
 * a full backup of written data, where the buffers are no longer in cache). A zero
 * segment is a run of at least MIN_ZERO_RUN bytes of whole zero blocks aligned to the buffer's start, so
 * it holds a whole block starting at a multiple of STRIDE (any STRIDE / ZERO_BLOCK consecutive block
 * numbers include a multiple of it). When each of those blocks holds data, the buffer is one data
 * segment: neither all zeros nor holding a zero run.
 */
import { isAllZero, MIN_ZERO_RUN, ZERO_BLOCK } from "./protocol";

const STRIDE = Math.max(1, Math.floor(MIN_ZERO_RUN / ZERO_BLOCK)) * ZERO_BLOCK;

/** True only when `segments(buf, o)` is certainly the whole buffer as data; false: ask `segments`. */
export function provablyData(buf: Buffer): boolean {
  if (buf.length < ZERO_BLOCK) return false; // a short buffer of zeros is a zero segment
  for (let at = 0; at + ZERO_BLOCK <= buf.length; at += STRIDE) {
    // Three bytes first (no call into the runtime); a block they do not decide is compared whole.
    if (buf[at] !== 0 || buf[at + ZERO_BLOCK - 1] !== 0 || buf[at + ZERO_BLOCK / 2] !== 0) continue;
    if (isAllZero(buf.subarray(at, at + ZERO_BLOCK))) return false;
  }
  return true;
}
