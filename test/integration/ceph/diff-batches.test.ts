/**
 * How the diff iterator hands extents over: a waiting consumer gets the first extent librbd finds instead
 * of waiting for a full batch (on a large thin image, the walk over the whole image), and the batches
 * together are still exactly the diff, in order, with batches never larger than batchSize.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Cluster, Extent, Image, IoCtx } from "../../../agents/ceph";
import { connectLab, rbdJson, uniqueName } from "../../helpers/lab";

const MiB = 1 << 20;

describe("diff iterator batches", () => {
  let cluster: Cluster;
  let io: IoCtx;
  let image: Image;
  let expected: Extent[];
  const name = uniqueName("diffbatch");

  before(async () => {
    cluster = await connectLab("site-a");
    io = await cluster.openIoCtx("rbd");
    await io.imageCreate(name, 256 * MiB);
    image = await io.imageOpen(name);
    // One extent in each of 12 objects spread over the image (4 MiB objects).
    for (let i = 0; i < 12; i++) await image.write(Buffer.alloc(64 * 1024, i + 1), i * 20 * MiB + 4096);
    await image.flush();
    const cli = await rbdJson<Array<{ offset: number; length: number; exists: string }>>("site-a", [
      "diff",
      `rbd/${name}`,
    ]);
    expected = cli.map((e) => ({ offset: e.offset, length: e.length, exists: e.exists === "true" }));
    assert.equal(expected.length, 12, "one extent per written object");
  });

  after(async () => {
    await image?.close();
    await io?.imageRemove(name).catch(() => {});
    await io?.close();
    await cluster?.close();
  });

  it("gives a waiting consumer the first extent at once, then the rest, all of it in order", async () => {
    const batches: Extent[][] = [];
    for await (const b of image.diff({ batchSize: 1024 })) batches.push(b);
    // The first next() waits before librbd has found anything: the first extent comes alone.
    assert.equal(batches[0]?.length, 1, `first batch: ${batches[0]?.length} extents`);
    assert.deepEqual(batches.flat(), expected);
  });

  it("never hands over more than batchSize extents at once", async () => {
    const sizes: number[] = [];
    const all: Extent[] = [];
    for await (const b of image.diff({ batchSize: 5 })) {
      sizes.push(b.length);
      all.push(...b);
      await new Promise((res) => setImmediate(res)); // a busy consumer: the producer gathers meanwhile
    }
    assert.ok(
      sizes.every((n) => n >= 1 && n <= 5),
      `batch sizes ${sizes.join(",")}`,
    );
    assert.deepEqual(all, expected);
  });
});
