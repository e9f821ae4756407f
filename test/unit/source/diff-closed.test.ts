/**
 * rbdMessages closes the image's diff however the transfer ends (a fake Image, no Ceph): a consumer that
 * stops early (cancel, refusal, lost peer) or a read that fails must not leave the native diff iterator
 * open — it holds the image handle and sits inside rbd_diff_iterate2 while the caller removes the
 * snapshot or starts another diff on the same handle.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Image } from "../../../agents/ceph";
import { newStats, rbdMessages } from "../../../agents/transfer/source";
import { FRAME, FramePool, type MaybeFramed } from "../../../agents/transfer/wire";
import type { TransferHeader, TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { statWithoutObjectMap } from "../../helpers/fake-image-stat";
import { crc32c } from "../transfer/fakes/crc32c";

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

/** A fully written image whose diff comes in one batch per 4 MiB object; `failReadAt`: that read fails. */
function image(o: { failReadAt?: number; shortReadAt?: number } = {}) {
  const state = { closed: false, batches: 0 };
  const img = {
    label: "fake/diff",
    stat: statWithoutObjectMap(SIZE),
    async *diff() {
      try {
        for (let off = 0; off < SIZE; off += 4 * MiB) {
          state.batches++;
          yield [{ offset: off, length: 4 * MiB, exists: true }];
        }
      } finally {
        state.closed = true;
      }
    },
    async read(buf: Buffer, offset: number) {
      if (o.failReadAt !== undefined && offset === o.failReadAt) throw new Error("EIO: the read failed");
      buf.fill(1 + ((offset / MiB) % 200));
      return offset === o.shortReadAt ? buf.length - 4096 : buf.length;
    },
  };
  return { img: img as unknown as Image, state };
}

function messages(img: Image, frames: FramePool): AsyncGenerator<TransferMessage> {
  const opts = { chunkSize: 2 * MiB, readsInFlight: 2, frames, checksum: crc32c };
  return rbdMessages(img, { imageSize: SIZE } as TransferHeader, { fullCopy: false }, opts, newStats());
}

const release = (frames: FramePool, m: TransferMessage) => {
  const f = (m as MaybeFramed)[FRAME];
  if (f) frames.release(f);
};

describe("rbdMessages closes the diff", () => {
  it("when the consumer stops after the first chunks (return)", async () => {
    const { img, state } = image();
    const frames = new FramePool(8);
    const it = messages(img, frames);
    let chunks = 0;
    for (let r = await it.next(); !r.done; r = await it.next()) {
      release(frames, r.value);
      if (r.value.body?.$case === "chunk" && ++chunks === 3) break;
    }
    assert.equal(state.closed, false, "still open mid-stream");
    await it.return(undefined);
    assert.equal(state.closed, true, "the diff was closed");
    assert.ok(state.batches < SIZE / (4 * MiB), "the diff did not run to its end");
  });

  it("when a read fails", async () => {
    const { img, state } = image({ failReadAt: 6 * MiB });
    const frames = new FramePool(8);
    await assert.rejects(async () => {
      for await (const m of messages(img, frames)) release(frames, m);
    }, /EIO: the read failed/);
    assert.equal(state.closed, true, "the diff was closed");
  });

  it("when a read comes back short (librbd clips past the image's end): refused, never sent as whole", async () => {
    const { img, state } = image({ shortReadAt: 10 * MiB });
    const frames = new FramePool(8);
    const sent: number[] = [];
    await assert.rejects(
      async () => {
        for await (const m of messages(img, frames)) {
          if (m.body?.$case === "chunk") sent.push(m.body.value.offset);
          release(frames, m);
        }
      },
      (e: Error) => e.name === "SourceReadError" && /got 2093056 of 2097152 bytes \(a short read/.test(e.message),
    );
    assert.ok(!sent.includes(10 * MiB), "the short chunk was not sent");
    assert.equal(state.closed, true, "the diff was closed");
  });

  it("when it runs to its end", async () => {
    const { img, state } = image();
    const frames = new FramePool(8);
    let last: TransferMessage | undefined;
    for await (const m of messages(img, frames)) {
      release(frames, m);
      last = m;
    }
    assert.equal(last?.body?.$case, "trailer");
    assert.equal(state.closed, true);
  });
});
