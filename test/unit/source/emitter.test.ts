/**
 * The source's emitter (no Ceph, no reads): what it sends for bytes read — a read of data only as its own
 * frame, zeros cut out and merged with adjacent zero ranges, the digest and the trailer's totals.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Emitter, newStats, type SourceResume } from "../../../agents/transfer/emitter";
import { TransferDigest } from "../../../agents/transfer/protocol";
import { FRAME, FramePool, type MaybeFramed } from "../../../agents/transfer/wire";
import type { TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { crc32c } from "../transfer/fakes/crc32c";

const KiB = 1024;
const MiB = 1024 * KiB;

function filled(len: number, byte: number): Buffer {
  return Buffer.alloc(len, byte);
}

/** Each message as [kind, offset, length]. */
function shape(out: TransferMessage[]): Array<[string, number, number]> {
  return out.map((m): [string, number, number] => {
    const b = m.body;
    if (b?.$case === "chunk") return ["chunk", b.value.offset, b.value.data.length];
    if (b?.$case === "zero") return ["zero", b.value.offset, b.value.length];
    return [b?.$case ?? "none", 0, 0];
  });
}

function emitter(frames: FramePool, extra: { corruptChunk?: number } = {}, resume?: SourceResume) {
  const stats = newStats();
  const em = new Emitter(stats, { chunkSize: 2 * MiB, frames, checksum: crc32c, ...extra }, resume);
  return { em, stats };
}

describe("Emitter", () => {
  it("sends a read of data only as the read's own frame, with the data's CRC-32C", () => {
    const frames = new FramePool(4);
    const { em, stats } = emitter(frames);
    const frame = frames.acquire(1 * MiB, 2 * MiB);
    frame.data.fill(0x5a);
    const out: TransferMessage[] = [];
    em.data(frame.data, 4 * MiB, out, frame);
    assert.deepEqual(shape(out), [["chunk", 4 * MiB, 1 * MiB]]);
    const m = out[0] as MaybeFramed;
    assert.equal(m[FRAME], frame, "the read buffer is the message: no copy");
    assert.equal(m.body?.$case === "chunk" && m.body.value.crc32, crc32c(filled(1 * MiB, 0x5a)));
    assert.equal(frames.idle, 0, "the frame is the transport's until it is written");
    assert.deepEqual([stats.dataChunks, stats.dataBytes, stats.position], [1, 1 * MiB, 5 * MiB]);
  });

  it("cuts zeros out of a read, copies the data out and gives the read's frame back", () => {
    const frames = new FramePool(4);
    const { em, stats } = emitter(frames);
    const frame = frames.acquire(1 * MiB, 2 * MiB);
    frame.data.fill(0);
    frame.data.fill(7, 0, 100 * KiB);
    frame.data.fill(9, 900 * KiB);
    const out: TransferMessage[] = [];
    em.data(frame.data, 0, out, frame);
    em.flushZero(out);
    assert.deepEqual(shape(out), [
      ["chunk", 0, 100 * KiB],
      ["zero", 100 * KiB, 800 * KiB],
      ["chunk", 900 * KiB, 124 * KiB],
    ]);
    for (const m of out) assert.notEqual((m as MaybeFramed)[FRAME], frame);
    assert.equal(frames.idle, 1, "the read's frame went back to the pool");
    const last = out[2]?.body;
    assert.ok(last?.$case === "chunk" && Buffer.from(last.value.data).equals(filled(124 * KiB, 9)));
    assert.deepEqual([stats.dataBytes, stats.zeroRanges, stats.zeroBytes], [224 * KiB, 1, 800 * KiB]);
  });

  it("merges a zero range with the zeros of the read after it, and sends it before the next data", () => {
    const frames = new FramePool(4);
    const { em, stats } = emitter(frames);
    const out: TransferMessage[] = [];
    em.zero(0, 1 * MiB, out);
    em.data(Buffer.alloc(1 * MiB), 1 * MiB, out); // all zeros: extends the pending range
    assert.deepEqual(shape(out), [], "a zero range waits for what follows it");
    em.data(filled(64 * KiB, 1), 2 * MiB, out);
    em.trailer(out);
    assert.deepEqual(shape(out), [
      ["zero", 0, 2 * MiB],
      ["chunk", 2 * MiB, 64 * KiB],
      ["trailer", 0, 0],
    ]);
    const want = new TransferDigest();
    want.zero(0, 2 * MiB);
    want.chunk(2 * MiB, 64 * KiB, crc32c(filled(64 * KiB, 1)));
    const t = out[2]?.body;
    assert.ok(t?.$case === "trailer");
    assert.ok(Buffer.from(t.value.digest).equals(want.digest()), "the trailer's digest is of the records sent");
    assert.deepEqual([t.value.zeroRanges, t.value.zeroBytes, t.value.dataChunks], [1, 2 * MiB, 1]);
    assert.equal(stats.position, 2 * MiB + 64 * KiB);
  });

  it("continues a resumed transfer: the digest from the prefix, the trailer's totals with the earlier counts", () => {
    const prefix = Buffer.alloc(32, 3);
    const resume = {
      offset: 8 * MiB,
      prefixDigest: prefix,
      dataChunks: 5,
      dataBytes: 5 * MiB,
      zeroRanges: 2,
      zeroBytes: 3 * MiB,
    };
    const { em, stats } = emitter(new FramePool(4), {}, resume);
    assert.equal(stats.position, 8 * MiB);
    const out: TransferMessage[] = [];
    em.data(filled(4 * KiB, 2), 8 * MiB, out);
    em.trailer(out);
    const want = new TransferDigest(prefix);
    want.chunk(8 * MiB, 4 * KiB, crc32c(filled(4 * KiB, 2)));
    const t = out.at(-1)?.body;
    assert.ok(t?.$case === "trailer");
    assert.deepEqual(
      [t.value.dataChunks, t.value.dataBytes, t.value.zeroRanges, t.value.zeroBytes],
      [6, 5 * MiB + 4 * KiB, 2, 3 * MiB],
    );
    assert.ok(Buffer.from(t.value.digest).equals(want.digest()));
  });

  it("corrupts the chosen chunk after its checksum was taken (the test fault)", () => {
    const { em } = emitter(new FramePool(4), { corruptChunk: 2 });
    const out: TransferMessage[] = [];
    for (let i = 0; i < 3; i++) em.data(filled(4 * KiB, 1), i * 4 * KiB, out);
    const bad = out.map((m) => m.body?.$case === "chunk" && crc32c(m.body.value.data) !== m.body.value.crc32);
    assert.deepEqual(bad, [false, true, false]);
  });
});
