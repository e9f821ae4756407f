/**
 * The addon's CRC-32C: known answers, and equal to a plain bitwise implementation at any length and alignment.
 * An integration test because it runs native code (it needs the built addon, not a cluster).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { crc32c, crc32cHardware } from "../../../agents/ceph";

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

  it("a bad argument is a TypeError, not a crash", () => {
    assert.throws(() => crc32c("abc" as unknown as Uint8Array), TypeError);
  });
});
