/**
 * The source's read window (agents/transfer/source.ts, widening.ts) grows while reads are slow and it
 * pays: a fake image whose reads finish on the test's clock, no Ceph, no timers. Reads slow by round
 * trips (each takes 60 ms whatever else is in flight) widen it by half its start up to maxReadsInFlight;
 * reads slow because the cluster is at its throughput (one finishes every 20 ms) get one step on trial,
 * then it goes back; reads that keep up, or no maximum, leave it where it started. The data sent stays
 * the image's either way.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Image } from "../../../agents/ceph";
import { newStats, rbdMessages } from "../../../agents/transfer/source";
import { FRAME, FramePool, type MaybeFramed } from "../../../agents/transfer/wire";
import type { TransferHeader } from "../../../src/gen/rbdbackup/v1/transfer";
import { statWithoutObjectMap } from "../../helpers/fake-image-stat";
import { crc32c } from "../transfer/fakes/crc32c";
import { SlowCluster } from "../transfer/fakes/slow-cluster";

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

async function run(kind: "latency" | "throughput", opMs: number, maxReadsInFlight: number | undefined) {
  const cluster = new SlowCluster(kind, opMs);
  const bytes = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 4096) bytes.writeUInt32LE(i, i);
  let inFlight = 0;
  let maxInFlight = 0;
  let lastInFlight = 0;
  const image = {
    label: "fake/slow",
    stat: statWithoutObjectMap(SIZE),
    async *diff() {
      yield [{ offset: 0, length: SIZE, exists: true }];
    },
    read(buf: Buffer, offset: number) {
      inFlight++;
      lastInFlight = inFlight;
      maxInFlight = Math.max(maxInFlight, inFlight);
      return new Promise<number>((resolve) =>
        cluster.start(() => {
          inFlight--;
          bytes.copy(buf, 0, offset, offset + buf.length);
          resolve(buf.length);
        }),
      );
    },
  } as unknown as Image;
  const frames = new FramePool(40);
  const stats = newStats();
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
      now: cluster.now,
    },
    stats,
  )) {
    if (m.body?.$case === "chunk") Buffer.from(m.body.value.data).copy(got, m.body.value.offset);
    const f = (m as MaybeFramed)[FRAME];
    if (f) frames.release(f);
  }
  await cluster.stop();
  assert.ok(got.equals(bytes), "the messages carry the image");
  return { maxInFlight, peak: stats.readWindowPeak, last: lastInFlight };
}

describe("source read window", () => {
  it("round-trip-bound reads widen it by half its start while it pays, up to maxReadsInFlight", async () => {
    const r = await run("latency", 60, 8);
    assert.equal(r.maxInFlight, 8);
    assert.equal(r.peak, 8);
  });

  it("a cluster at its throughput: one step on trial, then back to readsInFlight", async () => {
    const r = await run("throughput", 20, 8);
    assert.equal(r.peak, 6);
    assert.equal(r.maxInFlight, 6);
    assert.equal(r.last, 4);
  });

  it("reads that keep up (under 50 ms on average) leave it at readsInFlight", async () => {
    const r = await run("latency", 30, 8);
    assert.equal(r.maxInFlight, 4);
    assert.equal(r.peak, 4);
  });

  it("without maxReadsInFlight (or with it at readsInFlight) it never grows", async () => {
    for (const max of [undefined, 4]) {
      const r = await run("latency", 200, max);
      assert.equal(r.maxInFlight, 4, `max ${max}`);
      assert.equal(r.peak, 4);
    }
  });
});
