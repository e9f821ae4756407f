/**
 * rbdMessages over a sparse image (a fake Image, no Ceph): reads that are mostly zeros give zero ranges
 * and copied data chunks in frames of their own, every read buffer goes back to the pool, and no message
 * refers to a buffer the pool hands out again.
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Image } from "../../../agents/ceph";
import { newStats, rbdMessages } from "../../../agents/transfer/source";
import { FRAME, FramePool, type MaybeFramed } from "../../../agents/transfer/wire";
import type { TransferHeader, TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { statWithoutObjectMap } from "../../helpers/fake-image-stat";
import { crc32c } from "../transfer/fakes/crc32c";

const KiB = 1024;
const MiB = 1024 * KiB;

/** An image of `size` bytes holding `extents` of data; its diff reports each written object's [start, last write's end). */
function sparseImage(size: number, objectSize: number, writes: Array<[number, number]>) {
  const bytes = Buffer.alloc(size);
  let seed = 7;
  for (const [off, len] of writes)
    for (let i = off; i < off + len; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      bytes[i] = 1 + (seed % 255);
    }
  const objects = new Map<number, number>();
  for (const [off, len] of writes) {
    const o = Math.floor(off / objectSize);
    objects.set(o, Math.max(objects.get(o) ?? 0, off + len - o * objectSize));
  }
  const extents = [...objects.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([o, end]) => ({ offset: o * objectSize, length: end, exists: true }));
  const image = {
    label: "fake/sparse",
    stat: statWithoutObjectMap(bytes.length),
    async *diff() {
      yield extents;
    },
    async read(buf: Buffer, offset: number) {
      bytes.copy(buf, 0, offset, offset + buf.length);
      return buf.length;
    },
  };
  return { image: image as unknown as Image, bytes };
}

const header = (size: number) => ({ imageSize: size }) as TransferHeader;

async function collect(it: AsyncIterable<TransferMessage>, frames: FramePool): Promise<TransferMessage[]> {
  const out: TransferMessage[] = [];
  for await (const m of it) {
    out.push(m);
    // As a transport does once a framed message is written: the frame goes back to the pool.
    const f = (m as MaybeFramed)[FRAME];
    if (f) {
      if (m.body?.$case === "chunk") out[out.length - 1] = copyOf(m); // keep what was sent, then release
      frames.release(f);
    }
  }
  return out;
}

function copyOf(m: TransferMessage): TransferMessage {
  if (m.body?.$case !== "chunk") return m;
  return { body: { $case: "chunk", value: { ...m.body.value, data: Buffer.from(m.body.value.data) } } };
}

/** The image the messages describe (zero ranges as zeros). */
function replay(msgs: TransferMessage[], size: number): Buffer {
  const img = Buffer.alloc(size, 0xee);
  for (const m of msgs) {
    if (m.body?.$case === "chunk") Buffer.from(m.body.value.data).copy(img, m.body.value.offset);
    else if (m.body?.$case === "zero") img.fill(0, m.body.value.offset, m.body.value.offset + m.body.value.length);
  }
  return img;
}

describe("rbdMessages on a sparse image", () => {
  it("sends the written bytes as data and the rest as zero ranges, reusing its read buffers", async () => {
    const size = 64 * MiB;
    const writes: Array<[number, number]> = [];
    for (let i = 0; i < 16; i++) writes.push([i * 4 * MiB + ((i * 3) % 12) * 256 * KiB, 256 * KiB]);
    const { image, bytes } = sparseImage(size, 4 * MiB, writes);
    const frames = new FramePool(10);
    const stats = newStats();
    const msgs = await collect(
      rbdMessages(
        image,
        header(size),
        { fullCopy: true },
        { chunkSize: 2 * MiB, readsInFlight: 4, frames, checksum: crc32c },
        stats,
      ),
      frames,
    );
    assert.ok(replay(msgs, size).equals(bytes), "the messages rebuild the image");
    assert.equal(stats.dataBytes, 16 * 256 * KiB, "only the written bytes are data");
    const chunks = msgs.filter((m) => m.body?.$case === "chunk");
    assert.equal(chunks.length, 16);
    assert.equal(msgs.at(-1)?.body?.$case, "trailer");
    // Every read buffer and every chunk's frame went back: a few buffers served the whole image.
    assert.ok(frames.reused > 0, "read buffers were reused");
    assert.ok(frames.allocated <= 14, `allocated ${frames.allocated} buffers`);
  });

  it("never sends from a buffer it gave back: chunks stay intact when the pool's buffers are overwritten", async () => {
    const size = 16 * MiB;
    const { image, bytes } = sparseImage(size, 4 * MiB, [
      [100 * KiB, 40 * KiB],
      [1 * MiB, 300 * KiB],
      [4 * MiB + 3 * MiB, 1 * MiB],
      [9 * MiB, 4 * KiB],
    ]);
    const frames = new FramePool(10);
    const held: TransferMessage[] = [];
    const it = rbdMessages(
      image,
      header(size),
      { fullCopy: true },
      { chunkSize: 2 * MiB, readsInFlight: 2, frames, checksum: crc32c },
      newStats(),
    );
    for await (const m of it) {
      held.push(m); // kept as it is (not copied), its frame not given back
      // Whatever the pool holds now is free for anyone: scribble over it.
      for (let i = 0; i < 4; i++) {
        const f = frames.acquire(2 * MiB, 2 * MiB);
        f.buffer.fill(0xab);
        frames.release(f);
      }
    }
    assert.ok(replay(held, size).equals(bytes), "a chunk's data was overwritten through the pool");
  });

  it("keeps the diff's order: data read together, a discarded extent between, a resume clipping the first", async () => {
    // One chunk-aligned window: data, a discarded extent (exists: false), data, a gap, data. The first and
    // third are close enough to be read together were it not for the discard between them.
    const extents = [
      { offset: 0, length: 64 * KiB, exists: true },
      { offset: 64 * KiB, length: 64 * KiB, exists: false },
      { offset: 128 * KiB, length: 64 * KiB, exists: true },
      { offset: 320 * KiB, length: 64 * KiB, exists: true },
    ];
    const bytes = Buffer.alloc(1 * MiB, 0x11);
    const image = {
      label: "fake/order",
      stat: statWithoutObjectMap(bytes.length),
      async *diff() {
        yield extents.slice(0, 2);
        yield extents.slice(2);
      },
      async read(buf: Buffer, offset: number) {
        bytes.copy(buf, 0, offset, offset + buf.length);
        return buf.length;
      },
    } as unknown as Image;
    const sent = async (resume?: number) => {
      const frames = new FramePool(10);
      const msgs = await collect(
        rbdMessages(
          image,
          header(1 * MiB),
          {
            fullCopy: false,
            ...(resume === undefined
              ? {}
              : {
                  resume: {
                    offset: resume,
                    prefixDigest: new Uint8Array(0),
                    dataChunks: 0,
                    dataBytes: 0,
                    zeroRanges: 0,
                    zeroBytes: 0,
                  },
                }),
          },
          { chunkSize: 4 * MiB, readsInFlight: 4, frames, checksum: crc32c },
          newStats(),
        ),
        frames,
      );
      return msgs.map((m) => {
        const b = m.body;
        if (b?.$case === "chunk") return `data ${b.value.offset / KiB}+${b.value.data.length / KiB}`;
        if (b?.$case === "zero") return `zero ${b.value.offset / KiB}+${b.value.length / KiB}`;
        return b?.$case;
      });
    };
    assert.deepEqual(await sent(), ["header", "data 0+64", "zero 64+64", "data 128+64", "data 320+64", "trailer"]);
    assert.deepEqual(await sent(32 * KiB), [
      "header",
      "data 32+32",
      "zero 64+64",
      "data 128+64",
      "data 320+64",
      "trailer",
    ]);
  });
});
