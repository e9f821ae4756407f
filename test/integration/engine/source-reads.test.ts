/**
 * The source's message stream with its read plan (agents/transfer/read-plan.ts), over a scripted image
 * (the addon computes the chunks' CRC-32C, hence an integration test; no cluster is touched): small
 * extents near each other are read with one read, yet exactly each extent's bytes are sent, in order;
 * many small reads fly at once within the window's byte budget.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Image } from "../../../agents/ceph";
import { newStats, rbdMessages } from "../../../agents/transfer/source";
import { FramePool } from "../../../agents/transfer/wire";
import type { TransferHeader, TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { statWithoutObjectMap } from "../../helpers/fake-image-stat";

const KiB = 1024;
const MiB = 1024 * KiB;

/** An image of `size` bytes whose byte at i is (i * 7 + 1) & 255 where written; counts its reads. */
function fakeImage(extents: Array<{ offset: number; length: number; exists: boolean }>) {
  const reads: Array<{ offset: number; length: number }> = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const image = {
    label: "rbd/fake@s",
    stat: statWithoutObjectMap(16 * MiB),
    async *diff() {
      yield extents;
    },
    async read(buf: Buffer, offset: number) {
      reads.push({ offset, length: buf.length });
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((r) => setImmediate(r));
      for (let i = 0; i < buf.length; i++) buf[i] = ((offset + i) * 7 + 1) & 255;
      inFlight--;
      return buf.length;
    },
  };
  return { image: image as unknown as Image, reads, max: () => maxInFlight };
}

describe("rbdMessages with the read plan", () => {
  it("sends exactly each extent's bytes, in order, with fewer reads than extents", async () => {
    const extents = [
      { offset: 0, length: 4 * KiB, exists: true },
      { offset: 20 * KiB, length: 4 * KiB, exists: true },
      { offset: 40 * KiB, length: 8 * KiB, exists: false },
      { offset: 64 * KiB, length: 4 * KiB, exists: true },
      { offset: 100 * KiB, length: 4 * KiB, exists: true },
      { offset: 8 * MiB, length: 64 * KiB, exists: true },
    ];
    const f = fakeImage(extents);
    const header = { imageSize: 16 * MiB } as TransferHeader;
    const opts = { chunkSize: 4 * MiB, readsInFlight: 2, frames: new FramePool() };
    const out: TransferMessage[] = [];
    for await (const m of rbdMessages(f.image, header, { fullCopy: false }, opts, newStats())) out.push(m);
    type Sent = { kind: "chunk" | "zero"; offset: number; length: number; data?: Buffer };
    const sent: Sent[] = [];
    for (const m of out) {
      if (m.body?.$case === "chunk") {
        const c = m.body.value;
        sent.push({ kind: "chunk", offset: c.offset, length: c.data.length, data: Buffer.from(c.data) });
      } else if (m.body?.$case === "zero")
        sent.push({ kind: "zero", offset: m.body.value.offset, length: m.body.value.length });
    }
    assert.deepEqual(
      sent.map((s) => [s.kind, s.offset, s.length]),
      [
        ["chunk", 0, 4 * KiB],
        ["chunk", 20 * KiB, 4 * KiB],
        ["zero", 40 * KiB, 8 * KiB],
        ["chunk", 64 * KiB, 4 * KiB],
        ["chunk", 100 * KiB, 4 * KiB],
        ["chunk", 8 * MiB, 64 * KiB],
      ],
    );
    for (const s of sent) {
      if (!s.data) continue;
      for (let i = 0; i < s.length; i += 997) assert.equal(s.data[i], ((s.offset + i) * 7 + 1) & 255);
    }
    assert.deepEqual(
      f.reads.map((r) => [r.offset, r.length]),
      [
        [0, 24 * KiB],
        [64 * KiB, 40 * KiB],
        [8 * MiB, 64 * KiB],
      ],
    );
    assert.equal(out.at(-1)?.body?.$case, "trailer");
  });

  it("keeps up to 2 × readsInFlight small reads in flight", async () => {
    const extents = Array.from({ length: 100 }, (_, i) => ({ offset: i * 4 * MiB, length: 64 * KiB, exists: true }));
    const f = fakeImage(extents);
    const header = { imageSize: 400 * MiB } as TransferHeader;
    const opts = { chunkSize: 4 * MiB, readsInFlight: 2, frames: new FramePool() };
    let chunks = 0;
    for await (const m of rbdMessages(f.image, header, { fullCopy: false }, opts, newStats()))
      if (m.body?.$case === "chunk") chunks++;
    assert.equal(chunks, 100);
    assert.equal(f.max(), 4);
  });
});
