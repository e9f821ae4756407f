/**
 * protocol.ts checksumPieces: a chunk's CRC-32C computed once with the CRC-32C of each digest-map block
 * it meets, the chunk's combined from the pieces' (crc32cShiftOp / crc32cCombine, zlib's combine with
 * the Castagnoli polynomial). Checked against the plain CRC over random layouts (the oracle): any
 * offset, length and block size, partial first and last blocks, a single short piece.
 */
import assert from "node:assert/strict";
import { randomBytes, randomInt } from "node:crypto";
import { describe, it } from "node:test";
import { checksumPieces, crc32cCombine, crc32cShiftOp } from "../../../agents/transfer/protocol";
import { crc32c } from "./fakes/crc32c";

/** The pieces as the builder cuts them: at absolute multiples of the block size. */
function oraclePieces(data: Buffer, offset: number, blockSize: number): number[] {
  const out: number[] = [];
  let pos = 0;
  while (pos < data.length) {
    const abs = offset + pos;
    const n = Math.min(data.length - pos, blockSize - (abs % blockSize));
    out.push(crc32c(data.subarray(pos, pos + n)));
    pos += n;
  }
  return out;
}

describe("checksumPieces", () => {
  it("combine: CRC(A‖B) from CRC(A), CRC(B) and |B| at every split of a buffer", () => {
    const d = randomBytes(300);
    const whole = crc32c(d);
    for (let k = 0; k <= d.length; k++) {
      const b = d.subarray(k);
      assert.equal(crc32cCombine(crc32c(d.subarray(0, k)), crc32c(b), crc32cShiftOp(b.length)), whole, `split ${k}`);
    }
  });

  it("equals the plain CRC of the chunk and of each block piece, over random layouts", () => {
    for (let round = 0; round < 300; round++) {
      const blockSize = [16, 64, 100, 4096, 65536][randomInt(5)] as number;
      const len = 1 + randomInt(round % 3 === 0 ? blockSize : 5 * blockSize + 7);
      const offset = randomInt(8 * blockSize);
      const aligned = round % 4 === 0 ? offset - (offset % blockSize) : offset;
      const data = round % 10 === 0 ? Buffer.alloc(len) : randomBytes(len);
      const want = oraclePieces(data, aligned, blockSize);
      const out = new Uint32Array(Math.ceil(len / blockSize) + 1);
      const got = checksumPieces(data, aligned, blockSize, out, crc32c);
      const where = `block ${blockSize}, chunk ${aligned}+${len}`;
      assert.equal(got, crc32c(data), `chunk CRC, ${where}`);
      assert.deepEqual([...out.subarray(0, want.length)], want, `piece CRCs, ${where}`);
    }
  });

  it("a corrupted byte anywhere changes the combined CRC", () => {
    const data = randomBytes(5 * 4096 + 123);
    const out = new Uint32Array(8);
    const good = checksumPieces(data, 1000, 4096, out, crc32c);
    for (const at of [0, 3095, 3096, 4096 * 3, data.length - 1]) {
      const bad = Buffer.from(data);
      bad[at] = (bad[at] as number) ^ 0x20;
      assert.notEqual(checksumPieces(bad, 1000, 4096, out, crc32c), good, `byte ${at}`);
    }
  });
});
