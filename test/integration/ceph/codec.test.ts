/**
 * The addon's zstd and lz4 codecs (agents/ceph/codec.ts): round trips at several sizes and levels,
 * incompressible data refused below its size (null), and every kind of bad input rejected with EBADMSG
 * without writing beyond the output buffer. An integration test because it runs native code (it needs
 * the built addon, not a cluster).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import {
  type CodecAlgorithm,
  codecVersions,
  compress,
  compressBound,
  decompress,
  isCorruptData,
  nativeCodec,
} from "../../../agents/ceph";

const ALGORITHMS: CodecAlgorithm[] = ["zstd", "lz4"];

function compressible(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i += 4096) b.write(`block ${i} of a volume with text-like content `, i);
  return b;
}

async function corrupt(p: Promise<unknown>, what: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => isCorruptData(e) && what.test((e as Error).message));
}

describe("codec (addon)", () => {
  it("reports Debian's library versions", () => {
    const v = codecVersions();
    assert.match(v.zstd, /^1\.\d+\.\d+$/);
    assert.match(v.lz4, /^1\.\d+\.\d+$/);
    assert.ok(v.zstdMaxLevel >= 19);
  });

  for (const a of ALGORITHMS) {
    it(`${a}: round trips at 1 B..4 MiB, levels 1, 3, 19`, async () => {
      for (const n of [1, 100, 4096, 65537, 1 << 20, 4 << 20]) {
        for (const level of a === "zstd" ? [1, 3, 19] : [1]) {
          if (level === 19 && n > 1 << 20) continue; // slow, and nothing new
          for (const src of [compressible(n), randomBytes(n)]) {
            const c = await compress(a, level, src);
            assert.ok(c && c.length <= compressBound(a, n), `${a} ${n}: within the bound`);
            const back = await decompress(a, c, n);
            assert.ok(back.equals(src), `${a} level ${level}, ${n} bytes`);
          }
        }
      }
      const c = await compress(a, 1, compressible(1 << 20));
      assert.ok(c && c.length < (1 << 20) / 20, `compressible data shrinks (${c?.length})`);
    });

    it(`${a}: incompressible data does not fit below its size (null); decompress into a given buffer`, async () => {
      const src = randomBytes(1 << 20);
      assert.equal(await nativeCodec.compress(a, 1, src, src.length - 1), null);
      assert.equal(await compress(a, 1, src, 0), null);
      const c = (await compress(a, 1, compressible(65536), 65535)) as Buffer;
      const into = Buffer.alloc(65536, 0xee);
      assert.equal(await decompress(a, c, 65536, into), into);
      assert.ok(into.equals(compressible(65536)));
      // Compress into a given buffer: the result is its first bytes, nothing written past maxLength.
      const dst = Buffer.alloc(65536 + 64, 0xaa);
      const inPlace = (await compress(a, 1, compressible(65536), 65535, dst)) as Buffer;
      assert.equal(inPlace.buffer, dst.buffer);
      assert.equal(inPlace.byteOffset, dst.byteOffset);
      assert.ok(inPlace.equals(c), "the same bytes as into a buffer of its own");
      assert.ok(
        dst.subarray(65535).every((x) => x === 0xaa),
        "nothing written past maxLength",
      );
      assert.equal(await compress(a, 1, src, src.length - 1, Buffer.alloc(src.length)), null);
    });

    it(`${a}: garbage, truncated, too short or too long for rawLength: EBADMSG, nothing past the buffer`, async () => {
      const raw = compressible(1 << 20);
      const c = (await compress(a, 1, raw)) as Buffer;
      await corrupt(decompress(a, randomBytes(1000), 1 << 20), /decompress/);
      await corrupt(decompress(a, c.subarray(0, c.length - 5), 1 << 20), /decompress/);
      await corrupt(decompress(a, c, (1 << 20) + 1), /decompress/);
      // An output buffer of rawLength inside a larger allocation: the bytes after it stay untouched.
      const big = Buffer.alloc((1 << 20) + 64, 0xaa);
      await corrupt(decompress(a, c, (1 << 20) - 1, big.subarray(0, (1 << 20) - 1)), /decompress/);
      assert.ok(
        big.subarray((1 << 20) - 1).every((x) => x === 0xaa),
        "nothing written past rawLength",
      );
      // The other algorithm's data.
      const other = (await compress(a === "zstd" ? "lz4" : "zstd", 1, raw)) as Buffer;
      await corrupt(decompress(a, other, 1 << 20), /decompress/);
    });
  }

  it("argument checks before any native code", async () => {
    await assert.rejects(compress("gzip" as CodecAlgorithm, 1, Buffer.alloc(1)), RangeError);
    await assert.rejects(compress("zstd", 0, Buffer.alloc(1)), RangeError);
    await assert.rejects(compress("zstd", 23, Buffer.alloc(1)), RangeError);
    await assert.rejects(compress("zstd", 1, "x" as unknown as Buffer), TypeError);
    await assert.rejects(compress("zstd", 1, Buffer.alloc(100), 50, Buffer.alloc(49)), RangeError);
    await assert.rejects(decompress("lz4", Buffer.alloc(1), 0), RangeError);
    await assert.rejects(decompress("lz4", Buffer.alloc(1), 10, Buffer.alloc(9)), RangeError);
  });

  it("runs off the JS thread: the event loop keeps turning while 32 MiB compress", async () => {
    let turns = 0;
    const timer = setInterval(() => turns++, 1);
    try {
      const work = Array.from({ length: 8 }, () => compress("zstd", 3, randomBytes(4 << 20)));
      await Promise.all(work);
    } finally {
      clearInterval(timer);
    }
    assert.ok(turns > 0, "timers ran while compressing");
  });
});
