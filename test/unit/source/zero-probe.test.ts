/** protocol.ts provablyData: a read it calls all data is one data segment by the block-by-block definition, and it never hides a zero run. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MIN_ZERO_RUN, provablyData, segments, ZERO_BLOCK } from "../../../agents/transfer/protocol";
import { byBlocks, rng } from "../../helpers/zero-oracle";

const KiB = 1024;

/** Data everywhere (non-zero bytes), with `holes` zero runs of random block-aligned or odd place and size. */
function holed(seed: number, len: number, holes: number): Buffer {
  const r = rng(seed);
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = 1 + Math.floor(r() * 255);
  for (let h = 0; h < holes; h++) {
    const at = r() < 0.7 ? Math.floor((r() * len) / ZERO_BLOCK) * ZERO_BLOCK : Math.floor(r() * len);
    const n = Math.floor(r() * 2 * MIN_ZERO_RUN) + 1;
    b.fill(0, at, Math.min(len, at + n));
  }
  return b;
}

const whole = (b: Buffer) => [{ offset: 0, length: b.length, zero: false }];

describe("provablyData", () => {
  it("agrees with the definition wherever it answers, on random layouts and sizes", () => {
    const sizes = [4 * KiB, 60 * KiB, 64 * KiB, 68 * KiB + 5, 256 * KiB, 1024 * KiB + 100, 2048 * KiB];
    let proven = 0;
    for (let seed = 1; seed <= 300; seed++) {
      const len = sizes[seed % sizes.length] as number;
      const b = holed(seed, len, seed % 4);
      if (!provablyData(b)) continue;
      proven++;
      assert.deepEqual(byBlocks(b, 0), whole(b), `seed ${seed}, ${len} bytes`);
      assert.deepEqual(segments(b, 0), whole(b), `seed ${seed}, ${len} bytes`);
    }
    assert.ok(proven > 100, `only ${proven} buffers proven data`);
  });

  it("answers yes for a read of data with short zero runs", () => {
    const b = holed(7, 2048 * KiB, 0);
    b.fill(0, ZERO_BLOCK, ZERO_BLOCK + MIN_ZERO_RUN - 1); // one byte short of a zero run, over a probed block
    assert.equal(provablyData(b), true);
    assert.deepEqual(byBlocks(b, 0), whole(b));
  });

  it("never hides a zero run, wherever it starts", () => {
    for (let at = 0; at + MIN_ZERO_RUN <= 512 * KiB; at += ZERO_BLOCK) {
      const b = holed(11, 512 * KiB, 0);
      b.fill(0, at, at + MIN_ZERO_RUN);
      assert.equal(provablyData(b), false, `a zero run at ${at}`);
      assert.ok(
        segments(b, 0).some((s) => s.zero) && byBlocks(b, 0).some((s) => s.zero),
        `segments and the definition find the run at ${at}`,
      );
    }
  });

  it("leaves zeros and short buffers to segments", () => {
    assert.equal(provablyData(Buffer.alloc(2048 * KiB)), false);
    assert.equal(provablyData(Buffer.alloc(100, 1)), false);
  });
});
