/**
 * The source's read window (agents/transfer/source.ts) grows while reads are slow: a fake image whose
 * reads the test completes one at a time on its own clock, no Ceph, no timers. Slow reads (60 ms each on
 * that clock) widen it by half its start up to maxReadsInFlight; reads that keep up (10 ms), or no
 * maximum, leave it where it started. The data sent stays the image's either way.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Image } from "../../../agents/ceph";
import { newStats, rbdMessages } from "../../../agents/transfer/source";
import { FRAME, FramePool, type MaybeFramed } from "../../../agents/transfer/wire";
import type { TransferHeader } from "../../../src/gen/rbdbackup/v1/transfer";
import { crc32c } from "../transfer/fakes/crc32c";

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const turn = () => new Promise<void>((r) => setImmediate(r));

async function run(opMs: number, maxReadsInFlight: number | undefined) {
  let clock = 0;
  const bytes = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 4096) bytes.writeUInt32LE(i, i);
  const pending: Array<() => void> = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const image = {
    label: "fake/slow",
    async *diff() {
      yield [{ offset: 0, length: SIZE, exists: true }];
    },
    read(buf: Buffer, offset: number) {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      return new Promise<number>((resolve) =>
        pending.push(() => {
          inFlight--;
          bytes.copy(buf, 0, offset, offset + buf.length);
          resolve(buf.length);
        }),
      );
    },
  } as unknown as Image;
  const frames = new FramePool(40);
  const stats = newStats();
  let done = false;
  // Completes the oldest read each turn, every read in flight having taken opMs more.
  const completer = (async () => {
    while (!done) {
      await turn();
      clock += opMs;
      pending.shift()?.();
    }
  })();
  const got = Buffer.alloc(SIZE);
  for await (const m of rbdMessages(
    image,
    { imageSize: SIZE } as TransferHeader,
    { fullCopy: false },
    {
      chunkSize: 2 * MiB,
      readsInFlight: 4,
      ...(maxReadsInFlight !== undefined ? { maxReadsInFlight } : {}),
      frames,
      checksum: crc32c,
      now: () => clock,
    },
    stats,
  )) {
    if (m.body?.$case === "chunk") Buffer.from(m.body.value.data).copy(got, m.body.value.offset);
    const f = (m as MaybeFramed)[FRAME];
    if (f) frames.release(f);
  }
  done = true;
  await completer;
  assert.ok(got.equals(bytes), "the messages carry the image");
  return { maxInFlight, peak: stats.readWindowPeak };
}

describe("source read window", () => {
  it("slow reads widen it by half its start, up to maxReadsInFlight", async () => {
    const r = await run(60, 8);
    assert.equal(r.maxInFlight, 8);
    assert.equal(r.peak, 8);
  });

  it("reads that keep up (under 50 ms on average) leave it at readsInFlight", async () => {
    const r = await run(10, 8);
    assert.equal(r.maxInFlight, 4);
    assert.equal(r.peak, 4);
  });

  it("without maxReadsInFlight (or with it at readsInFlight) it never grows", async () => {
    for (const max of [undefined, 4]) {
      const r = await run(200, max);
      assert.equal(r.maxInFlight, 4, `max ${max}`);
      assert.equal(r.peak, 4);
    }
  });
});
