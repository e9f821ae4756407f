/** The JS thread stays free while librbd works: a timer keeps firing during a long diff and a large I/O. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Cluster, Image, IoCtx } from "../../../agents/ceph";
import { connectLab, uniqueName } from "../../helpers/lab";

const MiB = 1 << 20;

/**
 * Runs `work` while a 1 ms interval counts the ticks that fire before its promise settles. A call that
 * held the JS thread for its whole length would let at most one tick through (the timers phase between
 * its return and its completion's callback): several mean the thread ran while librbd worked.
 */
async function ticksDuring(work: () => Promise<unknown>): Promise<number> {
  let ticks = 0;
  let pending = true;
  const timer = setInterval(() => {
    if (pending) ticks++;
  }, 1);
  try {
    await work().finally(() => {
      pending = false;
    });
    return ticks;
  } finally {
    clearInterval(timer);
  }
}

describe("event loop keeps running", () => {
  let cluster: Cluster;
  let io: IoCtx;
  let image: Image;
  const name = uniqueName("loop");

  before(async () => {
    cluster = await connectLab("site-a");
    io = await cluster.openIoCtx("rbd");
    await io.imageCreate(name, 48 * MiB);
    image = await io.imageOpen(name);
    await image.write(Buffer.alloc(16 * MiB, 9), 0);
    await image.snapCreate("base");
    // Then many small separate changes, so the diff from "base" has thousands of extents.
    const writes: Promise<number>[] = [];
    for (let off = 0; off < 16 * MiB; off += 8192) writes.push(image.write(Buffer.alloc(512, 1), off));
    await Promise.all(writes);
    await image.flush();
  });

  // Also after a before() that failed half-way: remove whatever exists of the image.
  after(async () => {
    if (image) {
      if ((await image.snapList()).some((s) => s.name === "base")) await image.snapRemove("base");
      await image.close();
    }
    if (io) {
      if ((await io.imageList()).includes(name)) await io.imageRemove(name);
      await io.close();
    }
    await cluster?.close();
  });

  it("during a long diff iteration (one extent per batch)", async () => {
    let extents = 0;
    const ticks = await ticksDuring(async () => {
      for await (const batch of image.diff({ fromSnapshot: "base", batchSize: 1 })) extents += batch.length;
    });
    assert.ok(extents >= 1000, `diff saw ${extents} extents`);
    assert.ok(ticks > 0, "the timer never fired during the diff");
  });

  it("during one large write, and during one large read (48 MiB each)", async () => {
    const buf = Buffer.alloc(48 * MiB, 7);
    const writing = await ticksDuring(() => image.write(buf, 0));
    assert.ok(writing >= 5, `${writing} ticks while the write was pending: the JS thread was held`);
    const reading = await ticksDuring(() => image.read(buf, 0));
    assert.ok(reading >= 5, `${reading} ticks while the read was pending: the JS thread was held`);
  });
});
