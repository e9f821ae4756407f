/**
 * diffToTransfer (agents/transfer/rbd-diff/to-transfer.ts): a data piece that is a small view of a large
 * received message is copied, so a chunk waiting in the sink's write window (which counts only the
 * chunk's bytes) does not keep the whole message alive; a piece that is most of its buffer stays a view.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { newStats } from "../../../../agents/transfer/emitter";
import type { DiffRecord } from "../../../../agents/transfer/rbd-diff/parser";
import { diffToTransfer } from "../../../../agents/transfer/rbd-diff/to-transfer";
import type { TransferHeader, TransferMessage } from "../../../../src/gen/rbdbackup/v1/transfer";

const MiB = 1 << 20;

async function chunksOf(records: DiffRecord[]): Promise<Buffer[]> {
  async function* src() {
    yield* records;
  }
  const out: Buffer[] = [];
  const msgs = diffToTransfer(
    src(),
    () => ({}) as TransferHeader,
    () => 0,
    newStats(),
  );
  for await (const m of msgs as AsyncIterable<TransferMessage>) {
    if (m.body?.$case === "chunk") out.push(m.body.value.data as Buffer);
  }
  return out;
}

describe("diffToTransfer: chunk buffers", () => {
  it("a 4 KiB piece of a 16 MiB message is a copy of its own; a piece that is most of its message stays a view", async () => {
    const big = Buffer.alloc(16 * MiB, 1); // the received message
    const small = big.subarray(5 * MiB, 5 * MiB + 4096);
    const most = Buffer.alloc(2 * MiB, 2).subarray(0, 2 * MiB - 100);
    const [a, b] = await chunksOf([
      { type: "banner", version: 1, at: 0 },
      { type: "size", size: 64 * MiB, at: 12 },
      { type: "data", offset: 0, data: small, at: 21 },
      { type: "data", offset: 8 * MiB, data: most, at: 5000 },
      { type: "end", at: 6000 },
    ]);
    assert.ok(a && b);
    assert.equal(a.length, 4096);
    assert.equal(a.buffer.byteLength < MiB, true, `the small piece holds ${a.buffer.byteLength} bytes alive`);
    assert.ok(a.equals(small), "the same bytes");
    assert.equal(b.buffer, most.buffer, "most of its buffer: a view, not copied");
  });
});
