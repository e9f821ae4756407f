/**
 * The addon's CRC-32C: known answers, and equal to a plain bitwise implementation at any length and alignment.
 * An integration test because it runs native code (it needs the built addon, not a cluster).
 */
import assert from "node:assert/strict";
import { randomBytes, randomInt } from "node:crypto";
import { describe, it } from "node:test";
import { crc32c, crc32cHardware, crc32cPieces } from "../../../agents/ceph";

function reference(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of data) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

describe("crc32c", () => {
  it("known answers (RFC 3720 / iSCSI)", () => {
    assert.equal(crc32c(Buffer.from("123456789")), 0xe3069283);
    assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
    assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
    assert.equal(crc32c(Buffer.alloc(0)), 0);
  });

  it("matches the bitwise definition at every length 0..100 and odd offsets", () => {
    const big = randomBytes(4096);
    for (let len = 0; len <= 100; len++) {
      for (const off of [0, 1, 3, 7]) {
        const v = big.subarray(off, off + len);
        assert.equal(crc32c(v) >>> 0, reference(v), `length ${len} at offset ${off}`);
      }
    }
    const chunk = randomBytes(1 << 20).subarray(5);
    assert.equal(crc32c(chunk) >>> 0, reference(chunk));
    // Around the interleaved blocks' edges (3 × 256 and 3 × 8192 bytes), at every alignment.
    const src = randomBytes(3 * 3 * 8192 + 64);
    for (const len of [767, 768, 769, 3 * 256 * 2 + 5, 24575, 24576, 24577, 2 * 24576 + 768 + 9, 3 * 24576]) {
      for (let off = 0; off < 8; off++) {
        const v = src.subarray(off, off + len);
        assert.equal(crc32c(v) >>> 0, reference(v), `length ${len} at offset ${off}`);
      }
    }
    console.log(`# crc32c uses ${crc32cHardware() ? "the SSE4.2 instruction" : "the table"}`);
  });

  it("crc32cPieces: each piece's CRC and the whole's, combined, equal the plain CRC over random layouts", () => {
    for (let round = 0; round < 200; round++) {
      const blockSize = [1, 7, 256, 4096, 65536][randomInt(5)] as number;
      const len = round % 7 === 0 ? 0 : 1 + randomInt(4 * blockSize + 300);
      const first = 1 + randomInt(blockSize);
      const data = round % 9 === 0 ? Buffer.alloc(len) : randomBytes(len + 3).subarray(3);
      const want: number[] = [];
      for (let pos = 0, n = first; pos < len; pos += n, n = blockSize)
        want.push(crc32c(data.subarray(pos, Math.min(len, pos + n))) >>> 0);
      const out = new Uint32Array(want.length + 1).fill(0xdeadbeef);
      const where = `length ${len}, first ${first}, block ${blockSize}`;
      assert.equal(crc32cPieces(data, first, blockSize, out) >>> 0, crc32c(data) >>> 0, where);
      assert.deepEqual([...out.subarray(0, want.length)], want, where);
      assert.equal(out[want.length], 0xdeadbeef, `nothing written past the pieces, ${where}`);
    }
  });

  it("a bad argument is a TypeError or RangeError, not a crash", () => {
    assert.throws(() => crc32c("abc" as unknown as Uint8Array), TypeError);
    const d = Buffer.alloc(100);
    assert.throws(() => crc32cPieces(d, 10, 10, new Int32Array(20) as unknown as Uint32Array), TypeError);
    assert.throws(() => crc32cPieces(d, 10, 10, new Uint32Array(9)), RangeError);
    assert.throws(() => crc32cPieces(d, 11, 10, new Uint32Array(20)), RangeError);
    assert.throws(() => crc32cPieces(d, 0, 10, new Uint32Array(20)), RangeError);
    assert.throws(() => crc32cPieces(d, 1.5, 10, new Uint32Array(20)), RangeError);
  });
});
