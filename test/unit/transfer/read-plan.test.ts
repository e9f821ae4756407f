/**
 * The source's read plan (agents/transfer/read-plan.ts): small extents near each other are read with one
 * read (their parts named); the read window lets many small reads fly within the byte budget of
 * `readsInFlight` chunks. (rbdMessages with the plan: test/integration/engine/source-reads.test.ts,
 * which needs the addon's CRC-32C.)
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { capacityFor, MAX_GAP, ReadPlanner, windowFull } from "../../../agents/transfer/read-plan";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("read plan", () => {
  it("reads close extents of one chunk window together and sends only their parts", () => {
    const p = new ReadPlanner(4 * MiB);
    assert.deepEqual(p.add(0, 4 * KiB), []);
    assert.deepEqual(p.add(8 * KiB, 4 * KiB), []);
    // A gap over MAX_GAP starts a new read.
    const far = 12 * KiB + MAX_GAP + 1;
    assert.deepEqual(p.add(far, 4 * KiB), [
      {
        offset: 0,
        length: 12 * KiB,
        parts: [
          { offset: 0, length: 4 * KiB },
          { offset: 8 * KiB, length: 4 * KiB },
        ],
      },
    ]);
    // The next chunk window starts a new read too; a lone extent is sent whole (parts null).
    assert.deepEqual(p.add(4 * MiB + 4 * KiB, 4 * KiB), [{ offset: far, length: 4 * KiB, parts: null }]);
    // An extent across a chunk boundary: the gathered read, then its chunk-aligned pieces.
    assert.deepEqual(p.add(8 * MiB - 4 * KiB, 8 * KiB), [
      { offset: 4 * MiB + 4 * KiB, length: 4 * KiB, parts: null },
      { offset: 8 * MiB - 4 * KiB, length: 4 * KiB, parts: null },
      { offset: 8 * MiB, length: 4 * KiB, parts: null },
    ]);
    assert.deepEqual(p.flush(), []);
  });

  it("with no gap allowed, only touching extents share a read", () => {
    const p = new ReadPlanner(4 * MiB, 0);
    assert.deepEqual(p.add(0, 4 * KiB), []);
    assert.deepEqual(p.add(4 * KiB, 4 * KiB), []);
    assert.deepEqual(p.add(12 * KiB, 4 * KiB), [
      {
        offset: 0,
        length: 8 * KiB,
        parts: [
          { offset: 0, length: 4 * KiB },
          { offset: 4 * KiB, length: 4 * KiB },
        ],
      },
    ]);
  });

  it("small reads take small buffers, and many fit the byte budget of the window", () => {
    const o = { readsInFlight: 8, chunkSize: 4 * MiB };
    assert.equal(capacityFor(64 * KiB, o.chunkSize), 64 * KiB);
    assert.equal(capacityFor(5000, o.chunkSize), 8 * KiB);
    assert.equal(capacityFor(1 * MiB, o.chunkSize), 4 * MiB);
    assert.equal(windowFull(0, 0, 4 * MiB, o), false);
    assert.equal(windowFull(15, 15 * 64 * KiB, 64 * KiB, o), false);
    assert.equal(windowFull(16, 16 * 64 * KiB, 64 * KiB, o), true, "count bound: SMALL_READS_PER_SLOT (2) per slot");
    assert.equal(windowFull(8, 8 * 4 * MiB, 4 * MiB, o), true, "byte bound: readsInFlight chunks");
    assert.equal(windowFull(7, 7 * 4 * MiB, 4 * MiB, o), false);
  });
});
