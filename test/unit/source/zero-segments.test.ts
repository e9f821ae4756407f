/** The zero detection (protocol.ts `segments`, doubling spans) cuts exactly where the block-by-block definition does. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MIN_ZERO_RUN, segments, ZERO_BLOCK } from "../../../agents/transfer/protocol";
import { byBlocks, rng } from "../../helpers/zero-oracle";

const KiB = 1024;

/** A buffer of `len` bytes: zeros with data runs (some a single byte) placed at random, block-aligned or not. */
function patterned(seed: number, len: number): Buffer {
  const r = rng(seed);
  const b = Buffer.alloc(len);
  const runs = Math.floor(r() * 12);
  for (let i = 0; i < runs; i++) {
    const at = r() < 0.5 ? Math.floor((r() * len) / ZERO_BLOCK) * ZERO_BLOCK : Math.floor(r() * len);
    const n = r() < 0.3 ? 1 : Math.floor(r() * 300 * KiB) + 1;
    for (let j = at; j < Math.min(len, at + n); j++) b[j] = 1 + Math.floor(r() * 255);
  }
  return b;
}

describe("segments (zero detection)", () => {
  it("agrees with segments on random layouts, sizes and offsets", () => {
    const sizes = [4 * KiB, 60 * KiB, 64 * KiB, 68 * KiB + 5, 256 * KiB, 1024 * KiB + 100, 2048 * KiB, 4096 * KiB];
    for (let seed = 1; seed <= 400; seed++) {
      const len = sizes[seed % sizes.length] as number;
      const buf = patterned(seed, len);
      const offset = seed * 7 * ZERO_BLOCK;
      assert.deepEqual(segments(buf, offset), byBlocks(buf, offset), `seed ${seed}, ${len} bytes`);
    }
  });

  it("keeps short zero runs inside data and cuts long ones out", () => {
    const b = Buffer.alloc(MIN_ZERO_RUN * 4);
    b[0] = 1; // data, then a zero run one block short of MIN_ZERO_RUN
    b[MIN_ZERO_RUN] = 1; // data again, then zeros to the end (3 runs' worth minus a block)
    assert.deepEqual(segments(b, 0), [
      { offset: 0, length: MIN_ZERO_RUN + ZERO_BLOCK, zero: false },
      { offset: MIN_ZERO_RUN + ZERO_BLOCK, length: 3 * MIN_ZERO_RUN - ZERO_BLOCK, zero: true },
    ]);
    assert.deepEqual(segments(Buffer.alloc(100), 8), [{ offset: 8, length: 100, zero: true }]);
    const tail = Buffer.alloc(MIN_ZERO_RUN + 100);
    tail[MIN_ZERO_RUN + 99] = 1; // the partial last block is data, never a zero run
    assert.deepEqual(segments(tail, 0), [
      { offset: 0, length: MIN_ZERO_RUN, zero: true },
      { offset: MIN_ZERO_RUN, length: 100, zero: false },
    ]);
  });
});
