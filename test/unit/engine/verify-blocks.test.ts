/**
 * Block comparison for VERIFY (agents/engine/verify-blocks.ts) on in-memory images: a clean image
 * passes, a changed byte is named by its block (the lowest when several), data where the map has zeros
 * is caught, SAMPLE picks the asked share of the map's blocks. JS CRC-32C, no addon.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { allBlocks, blockRange, checkBlocks, sampleBlocks } from "../../../agents/engine/verify-blocks";
import type { DigestMap } from "../../../agents/transfer/digests";
import { crc32c } from "../transfer/fakes/crc32c";

const B = 64 * 1024;

function mapOf(image: Buffer, blockSize = B): DigestMap {
  const idx: number[] = [];
  const crcs: number[] = [];
  for (let i = 0; i * blockSize < image.length; i++) {
    const b = image.subarray(i * blockSize, Math.min(image.length, (i + 1) * blockSize));
    if (b.some((x) => x !== 0)) {
      idx.push(i);
      crcs.push(crc32c(b));
    }
  }
  return { blockSize, imageSize: image.length, indices: Uint32Array.from(idx), crcs: Uint32Array.from(crcs) };
}

function image(): Buffer {
  const img = Buffer.alloc(20 * B + 1000);
  for (let i = 0; i < img.length; i += 7) img[i] = (i % 251) + 1;
  img.fill(0, 3 * B, 6 * B); // zero blocks 3..5
  return img;
}

const reader = (img: Buffer) => async (buf: Buffer, off: number) => img.copy(buf, 0, off, off + buf.length);
const opts = { crc32c, what: "the snapshot", inFlight: 3 };

describe("verify: block checks", () => {
  it("a clean image passes, reading every byte once", async () => {
    const img = image();
    const r = await checkBlocks(mapOf(img), allBlocks(mapOf(img)), reader(img), opts);
    assert.deepEqual(r, { blocksChecked: 21, bytesRead: img.length, badBlocks: 0, firstBad: -1, firstBadReason: "" });
  });

  it("changed bytes: every bad block counted, the lowest named with both CRCs", async () => {
    const img = image();
    const map = mapOf(img);
    const flip = (at: number) => {
      img[at] = (img[at] as number) ^ 1;
    };
    flip(12 * B + 5);
    flip(8 * B);
    flip(20 * B + 999); // the short last block
    const r = await checkBlocks(map, allBlocks(map), reader(img), opts);
    assert.equal(r.badBlocks, 3);
    assert.equal(r.firstBad, 8);
    assert.match(r.firstBadReason, /^CRC-32C 0x[0-9a-f]{8} read from the snapshot, 0x[0-9a-f]{8} in the digest map$/);
    assert.deepEqual(blockRange(map, 20), { offset: 20 * B, length: 1000 });
  });

  it("data where the map has zeros is bad", async () => {
    const img = image();
    const map = mapOf(img);
    img[4 * B + 100] = 9;
    const r = await checkBlocks(map, allBlocks(map), reader(img), opts);
    assert.equal(r.firstBad, 4);
    assert.match(r.firstBadReason, /has data where the digest map has zeros/);
  });

  it("blocks larger than a read (a big image's 8–64 MiB blocks): read in 4 MiB pieces, checked whole", async () => {
    const big = 8 * 1024 * 1024;
    const img = Buffer.alloc(2 * big + big / 2 + 4096);
    for (let i = 0; i < img.length; i += 4099) img[i] = (i % 13) + 1;
    img.fill(0, big, 2 * big); // block 1 all zeros
    const map = mapOf(img, big);
    assert.deepEqual(Array.from(map.indices), [0, 2]);
    let largest = 0;
    const read = async (buf: Buffer, off: number) => {
      largest = Math.max(largest, buf.length);
      return img.copy(buf, 0, off, off + buf.length);
    };
    const clean = await checkBlocks(map, allBlocks(map), read, opts);
    assert.deepEqual([clean.blocksChecked, clean.bytesRead, clean.badBlocks], [3, img.length, 0]);
    assert.equal(largest, 4 * 1024 * 1024, "no read over 4 MiB, whatever the block size");
    // A byte changed in the second piece of block 0, and data in the zero block 1.
    img[5 * 1024 * 1024] = (img[5 * 1024 * 1024] as number) ^ 0xff;
    img[big + 6 * 1024 * 1024] = 1;
    const r = await checkBlocks(map, allBlocks(map), read, opts);
    assert.deepEqual([r.badBlocks, r.firstBad], [2, 0]);
    assert.match(r.firstBadReason, /in the digest map/);
  });

  it("SAMPLE: the asked share of the map's blocks, ascending, at least one; 100 % is all of them", () => {
    const map = mapOf(image());
    assert.deepEqual(sampleBlocks(map, 100), Array.from(map.indices));
    const s = sampleBlocks(map, 25);
    assert.equal(s.length, Math.ceil(map.indices.length / 4));
    assert.deepEqual(
      s,
      [...s].sort((a, b) => a - b),
    );
    assert.ok(s.every((i) => map.indices.includes(i)));
    assert.equal(new Set(s).size, s.length);
    assert.equal(sampleBlocks(map, 1).length, 1);
  });
});
