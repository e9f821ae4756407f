/**
 * garbageCollector (agents/agent/gc.ts): a full collection on demand, without a node flag — a Buffer
 * nothing references any more gives its memory back when it runs (what the quiet release relies on).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { garbageCollector } from "../../../agents/agent/gc";

test("a dropped Buffer in the old generation is collected, its memory freed", async () => {
  const gc = garbageCollector();
  assert.equal(garbageCollector(), gc, "one collector for the process");
  const SIZE = 4 << 20; // well under the external memory at which V8 collects by itself (~64 MiB)
  let held: Buffer | null = Buffer.allocUnsafeSlow(SIZE).fill(1);
  gc();
  gc(); // survived two collections: old generation, which only a full collection frees
  const before = process.memoryUsage().arrayBuffers;
  let collected = false;
  const registry = new FinalizationRegistry(() => {
    collected = true;
  });
  registry.register(held, "chunk");
  held = null;
  gc();
  // V8 reports a collected object (and frees dead ArrayBuffers' memory) after the collection, on a task
  // of its own: wait for it, bounded, without allocating enough to make V8 collect by itself.
  for (let i = 0; i < 200 && !(collected && process.memoryUsage().arrayBuffers <= before - SIZE); i++) await sleep(10);
  assert.ok(collected, "the dropped buffer was collected");
  assert.ok(
    process.memoryUsage().arrayBuffers <= before - SIZE,
    `its 4 MiB still counted: ${before - process.memoryUsage().arrayBuffers} bytes freed`,
  );
});
