/**
 * The digest map (agents/transfer/digests): the exact object layout, the block size rule, decoding's
 * checks, and the builder against a reference map computed from the whole image — for full backups
 * (no read-back ever), incrementals over a parent's map (read-back only for blocks written in part
 * over data, or resized), and a resumed prefix. Seeded random records; the JS CRC-32C (no addon).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import {
  blockSizeFor,
  type DigestMap,
  DigestMapBuilder,
  DigestMapError,
  decodeDigestMap,
  digestsObjectName,
  encodeDigestMap,
  mapDigest,
} from "../../../agents/transfer/digests";
import { zeroCrc32c } from "../../../agents/transfer/digests/crc-combine";
import { checksumPieces } from "../../../agents/transfer/protocol";
import { crc32c } from "./fakes/crc32c";

const KiB = 1024;
const MiB = 1024 * KiB;
const B = 64 * KiB;

/** Park–Miller, seeded: the same records every run. */
function rng(seed: number) {
  let s = seed;
  return (n: number) => {
    s = (s * 48271) % 2147483647;
    return s % n;
  };
}

/** The map computed from the whole image, block by block (what every builder must equal). */
function reference(image: Buffer, blockSize: number): DigestMap {
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

type Rec = { offset: number; data: Buffer } | { offset: number; zero: number };

/**
 * Ascending, disjoint records over `image` (as a source sends them): 4 KiB-aligned pieces of random
 * lengths, some data, some zero ranges, some gaps left out; applies them to `image`.
 */
function records(image: Buffer, r: (n: number) => number, { gaps = true } = {}): Rec[] {
  const out: Rec[] = [];
  let off = 0;
  while (off < image.length) {
    const len = Math.min(image.length - off, (1 + r(48)) * 4 * KiB + (r(5) === 0 ? 512 : 0));
    const kind = r(gaps ? 4 : 3);
    if (kind === 0 || kind === 1) {
      const data = Buffer.alloc(len);
      for (let i = 0; i < len; i += 512) data[i] = 1 + r(255);
      data.copy(image, off);
      out.push({ offset: off, data });
    } else if (kind === 2) {
      image.fill(0, off, off + len);
      out.push({ offset: off, zero: len });
    }
    off += len;
  }
  return out;
}

function feed(b: DigestMapBuilder, recs: Rec[]): void {
  for (const rec of recs) {
    if ("data" in rec) {
      b.data(rec.offset, rec.data);
      rec.data.fill(0xee); // the caller reuses its buffer: the builder must have copied what it keeps
    } else b.zero(rec.offset, rec.zero);
  }
}

const readerOf = (image: Buffer) => async (buf: Buffer, offset: number) =>
  image.copy(buf, 0, offset, offset + buf.length);

describe("digest map format", () => {
  it("block size: 64 KiB up to 16 GiB, then the smallest power of two ≥ size / 2^18", () => {
    assert.equal(blockSizeFor(0), 64 * KiB);
    assert.equal(blockSizeFor(1024 * MiB), 64 * KiB);
    assert.equal(blockSizeFor(16 * 1024 * MiB), 64 * KiB);
    assert.equal(blockSizeFor(16 * 1024 * MiB + 1), 128 * KiB);
    assert.equal(blockSizeFor(2 * 1024 * 1024 * MiB), 8 * MiB);
    assert.equal(digestsObjectName("abc"), "backup.abc.digests");
  });

  it("encodes the exact layout, decodes it back, and its digest is the SHA-256 hex of the object", () => {
    const m: DigestMap = {
      blockSize: B,
      imageSize: 5 * B + 100,
      indices: Uint32Array.from([0, 3, 5]),
      crcs: Uint32Array.from([0xdeadbeef, 1, 0xffffffff]),
    };
    const enc = encodeDigestMap(m);
    const want = Buffer.alloc(32 + 24);
    want.write("RBDDMAP1", 0, "latin1");
    want.writeUInt32LE(B, 8);
    want.writeBigUInt64LE(BigInt(5 * B + 100), 16);
    want.writeBigUInt64LE(3n, 24);
    [
      [0, 0xdeadbeef],
      [3, 1],
      [5, 0xffffffff],
    ].forEach(([i, c], k) => {
      want.writeUInt32LE(i as number, 32 + 8 * k);
      want.writeUInt32LE(c as number, 36 + 8 * k);
    });
    assert.deepEqual(enc, want);
    assert.deepEqual(decodeDigestMap(enc), m);
    assert.equal(mapDigest(enc), createHash("sha256").update(want).digest("hex"));
    assert.match(mapDigest(enc), /^[0-9a-f]{64}$/);
  });

  it("refuses malformed objects, naming what is wrong", () => {
    const good = encodeDigestMap({
      blockSize: B,
      imageSize: 4 * B,
      indices: Uint32Array.from([1, 2]),
      crcs: Uint32Array.from([7, 8]),
    });
    const bad = (f: (b: Buffer) => Buffer | undefined, re: RegExp) => {
      const b = Buffer.from(good);
      const changed = f(b) ?? b;
      assert.throws(
        () => decodeDigestMap(changed),
        (e) => e instanceof DigestMapError && re.test(e.message),
      );
    };
    bad((b) => b.subarray(0, 20), /shorter than its header/);
    bad((b) => {
      b.write("X", 0);
      return b;
    }, /magic/);
    bad((b) => {
      b.writeUInt32LE(1000, 8);
      return b;
    }, /block size/);
    bad((b) => {
      b.writeUInt32LE(1, 12);
      return b;
    }, /reserved/);
    bad((b) => b.subarray(0, b.length - 1), /entries/);
    bad((b) => {
      b.writeUInt32LE(1, 40);
      return b;
    }, /out of order/);
    bad((b) => {
      b.writeUInt32LE(4, 40);
      return b;
    }, /names block 4 of 4/);
  });
});

describe("DigestMapBuilder", () => {
  it("a full backup: equals the reference map, with no read-back, whatever the record boundaries", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const r = rng(seed);
      const size = 2 * MiB + r(4) * 4 * KiB + (seed % 3 === 0 ? 777 : 0);
      const image = Buffer.alloc(size);
      const recs = records(image, r);
      const b = DigestMapBuilder.fresh(B, size, crc32c);
      feed(b, recs);
      assert.deepEqual(b.readBackList(), [], `seed ${seed}`);
      assert.deepEqual(b.finish(), reference(image, B), `seed ${seed}`);
    }
  });

  it("large blocks (images over 1 TiB) built from records, with or without the chunk check's piece CRCs", () => {
    const big = 512 * KiB;
    for (let seed = 1; seed <= 10; seed++) {
      const r = rng(seed + 50);
      const size = 3 * big + r(8) * 4 * KiB + 300;
      const image = Buffer.alloc(size);
      const recs = records(image, r);
      for (const withPieces of [false, true]) {
        const b = DigestMapBuilder.fresh(big, size, crc32c);
        for (const rec of recs) {
          if (!("data" in rec)) {
            b.zero(rec.offset, rec.zero);
            continue;
          }
          const pieces = new Uint32Array(Math.ceil(rec.data.length / big) + 1);
          checksumPieces(rec.data, rec.offset, big, pieces, crc32c);
          b.data(rec.offset, Buffer.from(rec.data), withPieces ? pieces : undefined);
        }
        assert.deepEqual(b.readBackList(), [], `seed ${seed}`);
        assert.deepEqual(b.finish(), reference(image, big), `seed ${seed} pieces ${withPieces}`);
      }
    }
  });

  it("zeroCrc32c: the CRC-32C of n zero bytes, by arithmetic", () => {
    for (const n of [0, 1, 2, 3, 7, 4096, 65_535, 65_536, 1_000_003, 4 * MiB, 9 * MiB + 5]) {
      assert.equal(zeroCrc32c(n), crc32c(Buffer.alloc(n)) >>> 0, `${n} bytes`);
    }
  });

  it("zeroCrc32c: answers kept by length stay right, past the memo's bound and asked again", () => {
    const lengths = Array.from({ length: 150 }, (_, i) => 1 + ((i * 7919) % 70_000));
    for (let round = 0; round < 2; round++)
      for (const n of lengths) assert.equal(zeroCrc32c(n), crc32c(Buffer.alloc(n)) >>> 0, `${n} bytes, round ${round}`);
  });

  /**
   * A parent image of `parentSize`, and the image an incremental makes of it: the same size, grown by
   * `grow` or shrunk by `shrink` (by the seed), the head starting as the parent's data at that size, then
   * changed in a few places with gaps between them (`recs`, applied to `image`).
   */
  function incremental(seed: number, r: (n: number) => number, parentSize: number, grow: number, shrink: number) {
    const parent = Buffer.alloc(parentSize);
    records(parent, r);
    const size = [parentSize, parentSize + grow, parentSize - shrink][seed % 3] as number;
    const image = Buffer.alloc(size);
    parent.copy(image, 0, 0, Math.min(size, parentSize));
    const recs = records(Buffer.from(image), r).filter(() => r(3) === 0);
    for (const x of recs) {
      if ("data" in x) x.data.copy(image, x.offset);
      else image.fill(0, x.offset, x.offset + x.zero);
    }
    return { parent, size, image, recs };
  }

  it("an incremental: the parent's map overlaid; reads back only blocks written in part over data", async () => {
    for (let seed = 1; seed <= 20; seed++) {
      const r = rng(seed + 100);
      const parentSize = 2 * MiB + r(8) * 4 * KiB;
      const { parent, size, image, recs } = incremental(seed, r, parentSize, 3 * B + 4 * KiB, B + 8 * KiB);
      const parentMap = reference(parent, B);
      const b = DigestMapBuilder.overlay(parentMap, size, crc32c);
      feed(b, recs);
      const n = await b.readBack(readerOf(image), { inFlight: 3 });
      assert.deepEqual(b.finish(), reference(image, B), `seed ${seed}`);
      assert.ok(n < b.count, `seed ${seed}: read back ${n} of ${b.count}`);
    }
  });

  it("an incremental over a parent's map coarsened to larger blocks (a grown image) equals the reference at that size", async () => {
    for (let seed = 1; seed <= 12; seed++) {
      const r = rng(seed * 7919);
      const { parent, size, image, recs } = incremental(seed, r, 40 * B + 12 * KiB, 9 * B + 4 * KiB, 5 * B + 8 * KiB);
      const coarse = [2, 4, 8][seed % 3] as number;
      const b = DigestMapBuilder.overlay(reference(parent, B), size, crc32c, coarse * B);
      feed(b, recs);
      await b.readBack(readerOf(image), { inFlight: 3 });
      assert.deepEqual(b.finish(), reference(image, coarse * B), `seed ${seed}`);
    }
  });

  it("a header's image size far past its parent's (2^48 bytes over 64 KiB blocks): the map keeps at most 2^18 blocks", () => {
    const parent: DigestMap = {
      blockSize: B,
      imageSize: 16 * 1024 * MiB,
      indices: Uint32Array.from([0, 1, 5, 2 ** 18 - 1]),
      crcs: Uint32Array.from([1, 2, 3, 4]),
    };
    const b = DigestMapBuilder.overlay(parent, 2 ** 48, crc32c);
    assert.equal(b.blockSize, blockSizeFor(2 ** 48));
    assert.ok(b.count <= 2 ** 18, `${b.count} blocks`);
    b.zero(0, 2 ** 48); // one record over it all: a block per step, 2^18 at most
    assert.deepEqual(b.finish().indices, new Uint32Array(0));
    assert.throws(() => DigestMapBuilder.overlay(parent, 2 ** 20, crc32c, 3 * B), /power-of-two multiple/);
  });

  it("an incremental whose records cover whole blocks reads nothing back", async () => {
    const parent = Buffer.alloc(16 * B, 3);
    const image = Buffer.from(parent);
    const b = DigestMapBuilder.overlay(reference(parent, B), image.length, crc32c);
    const data = Buffer.alloc(2 * B, 9);
    data.copy(image, 4 * B);
    image.fill(0, 10 * B, 13 * B);
    b.data(4 * B, data);
    b.zero(10 * B, 3 * B);
    assert.deepEqual(b.readBackList(), []);
    assert.deepEqual(b.finish(), reference(image, B));
  });

  it("a block written in part over a zero block needs no read-back; over data it does", async () => {
    const parent = Buffer.alloc(4 * B);
    parent.fill(5, 2 * B, 3 * B);
    const image = Buffer.from(parent);
    const b = DigestMapBuilder.overlay(reference(parent, B), image.length, crc32c);
    const piece = Buffer.alloc(4 * KiB, 1);
    piece.copy(image, 0);
    piece.copy(image, 2 * B + 8 * KiB);
    b.data(0, piece);
    b.data(2 * B + 8 * KiB, piece);
    assert.deepEqual(b.readBackList(), [2]);
    await b.readBack(readerOf(image));
    assert.deepEqual(b.finish(), reference(image, B));
  });

  it("a block touched again after it closed (records out of order) is read back, and the result is right", async () => {
    const image = Buffer.alloc(4 * B);
    const b = DigestMapBuilder.fresh(B, image.length, crc32c);
    const one = Buffer.alloc(4 * KiB, 1);
    const two = Buffer.alloc(4 * KiB, 2);
    one.copy(image, 0);
    b.data(0, one);
    two.copy(image, B);
    b.data(B, two); // closes block 0
    one.copy(image, 8 * KiB);
    b.data(8 * KiB, one); // block 0 again
    assert.deepEqual(b.readBackList(), [0]);
    assert.throws(() => b.finish(), /still to read back/);
    await b.readBack(readerOf(image));
    assert.deepEqual(b.finish(), reference(image, B));
  });

  it("readBackRange (a resumed prefix): those blocks come from the image, the rest from the records", async () => {
    const r = rng(7);
    const size = 3 * MiB + 5000;
    const image = Buffer.alloc(size);
    const recs = records(image, r);
    const resumeAt = 1 * MiB + 12 * KiB;
    const b = DigestMapBuilder.fresh(B, size, crc32c);
    b.readBackRange(0, resumeAt);
    feed(
      b,
      recs.filter((x) => x.offset >= resumeAt),
    );
    const n = await b.readBack(readerOf(image), { inFlight: 2, maxReadBytes: 256 * KiB });
    assert.equal(n, Math.ceil(resumeAt / B));
    assert.deepEqual(b.finish(), reference(image, B));
  });

  it("blocks larger than a read (images over 1 TiB): read back in pieces, the same map, no read over maxReadBytes", async () => {
    const big = 1 * MiB;
    const size = 3 * big + 5000;
    const image = Buffer.alloc(size);
    for (let i = 0; i < size; i += 997) image[i] = (i % 7) + 1;
    image.fill(0, big, 2 * big); // block 1 reads as zeros
    const b = DigestMapBuilder.fresh(big, size, crc32c);
    b.readBackRange(0, size);
    let largest = 0;
    const n = await b.readBack(
      async (buf, off) => {
        largest = Math.max(largest, buf.length);
        return image.copy(buf, 0, off, off + buf.length);
      },
      { inFlight: 2, maxReadBytes: 256 * KiB },
    );
    assert.equal(n, 4);
    assert.equal(largest, 256 * KiB);
    assert.deepEqual(b.finish(), reference(image, big));
  });

  it("a failed read-back rejects once every read settled", async () => {
    const b = DigestMapBuilder.fresh(B, 8 * B, crc32c);
    b.readBackRange(0, 8 * B);
    let inFlight = 0;
    await assert.rejects(
      b.readBack(
        async (buf, off) => {
          inFlight++;
          await new Promise((res) => setImmediate(res));
          inFlight--;
          if (off === 0) throw new Error("EIO");
          return buf.length;
        },
        { inFlight: 4, maxReadBytes: B },
      ),
      /EIO/,
    );
    assert.equal(inFlight, 0);
  });
});
