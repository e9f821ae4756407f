/**
 * The sink's aio write window (agents/transfer/sink/write-window.ts) against ops the test completes
 * itself: bounds on writes and bytes in flight, buffers released exactly once and only after their
 * write, the first failure stopping the window, abort, and settle. No Ceph, no timers.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { noMeter } from "../../../agents/transfer/meter";
import { WriteWindow } from "../../../agents/transfer/sink/write-window";
import { cancelled, Status } from "../../../src/common/errors";
import { cephError } from "./fakes/fake-ceph";
import { SlowCluster } from "./fakes/slow-cluster";

const turn = () => new Promise<void>((r) => setImmediate(r));

/** Ops that stay pending until the test settles them; tracks what is in flight. */
class Ops {
  pending: Array<{ id: number; bytes: number; resolve: () => void; reject: (e: unknown) => void }> = [];
  inFlight = 0;
  bytes = 0;
  maxInFlight = 0;
  maxBytes = 0;
  done = new Set<number>();

  op(id: number, bytes: number) {
    return () =>
      new Promise<void>((resolve, reject) => {
        this.inFlight++;
        this.bytes += bytes;
        this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
        this.maxBytes = Math.max(this.maxBytes, this.bytes);
        const end = () => {
          this.inFlight--;
          this.bytes -= bytes;
        };
        this.pending.push({
          id,
          bytes,
          resolve: () => {
            end();
            this.done.add(id);
            resolve();
          },
          reject: (e) => {
            end();
            reject(e);
          },
        });
      });
  }

  /** Fails the pending op at `index`. */
  fail(index: number, e: unknown): void {
    const [p] = this.pending.splice(index, 1);
    p?.reject(e);
  }

  /** Completes the pending op at `index` (wrapping), as librbd completes them: in any order. */
  complete(index: number): boolean {
    if (this.pending.length === 0) return false;
    const [p] = this.pending.splice(index % this.pending.length, 1);
    p?.resolve();
    return true;
  }
}

function window(writesInFlight: number, windowBytes: number, signal = new AbortController().signal) {
  return new WriteWindow({ writesInFlight, windowBytes, meter: noMeter, pool: "backups" }, signal);
}

describe("sink write window", () => {
  it("never more than writesInFlight writes or windowBytes bytes in flight; each buffer released once, after its write", async () => {
    const ops = new Ops();
    const w = window(4, 10_000);
    const released = new Map<number, number>();
    const early: number[] = [];
    const sizes = Array.from({ length: 60 }, (_, i) => 1000 + ((i * 7919) % 4000));
    let submitting = true;
    // Completes ops in a scrambled order while the producer submits, checking the bounds each turn.
    const completer = (async () => {
      let k = 0;
      while (submitting || ops.pending.length > 0) {
        await turn();
        assert.ok(w.inFlight <= 4, `in flight ${w.inFlight}`);
        assert.ok(w.bytesHeld <= 10_000, `bytes held ${w.bytesHeld}`);
        ops.complete(k++ * 3);
      }
    })();
    for (const [i, bytes] of sizes.entries()) {
      await w.submit(bytes, "write", ops.op(i, bytes), () => {
        if (!ops.done.has(i)) early.push(i);
        released.set(i, (released.get(i) ?? 0) + 1);
      });
    }
    await w.drain();
    submitting = false;
    await completer;
    assert.equal(ops.maxInFlight, 4, "the window was used to its limit");
    assert.ok(ops.maxBytes <= 10_000, `bytes in flight peaked at ${ops.maxBytes}`);
    assert.deepEqual(early, [], "buffers released before their write completed");
    assert.equal(released.size, sizes.length);
    assert.ok(
      [...released.values()].every((n) => n === 1),
      "every buffer released exactly once",
    );
    assert.equal(w.inFlight, 0);
    assert.equal(w.bytesHeld, 0);
    assert.equal(w.submitted, sizes.length);
  });

  it("a write larger than the byte window still goes, alone", async () => {
    const ops = new Ops();
    const w = window(8, 1000);
    await w.submit(500, "write", ops.op(0, 500));
    const big = w.submit(5000, "write", ops.op(1, 5000));
    await turn();
    assert.equal(ops.inFlight, 1, "the big write waits for the window to empty");
    ops.complete(0);
    await big;
    assert.equal(ops.inFlight, 1);
    ops.complete(0);
    await w.drain();
  });

  it("the first failed write stops the window: later submits and drain throw it; buffers still released once", async () => {
    const ops = new Ops();
    const w = window(2, 1 << 20);
    const released: number[] = [];
    await w.submit(10, "write", ops.op(0, 10), () => released.push(0));
    await w.submit(10, "write", ops.op(1, 10), () => released.push(1));
    const nospc = cephError("ENOSPC", "rbd_aio_write");
    ops.fail(0, nospc);
    // The window is full (one left in flight) only until the failed one is out; then submit throws.
    const third = w.submit(10, "write", ops.op(2, 10), () => released.push(2));
    await assert.rejects(third, nospc);
    assert.equal(ops.pending.length, 1, "the write after the failure never started");
    ops.complete(0);
    await assert.rejects(w.drain(), nospc);
    assert.deepEqual(
      released.sort((a, b) => a - b),
      [0, 1, 2],
      "the failed write's, the finished write's and the never-started write's buffers",
    );
  });

  it("an abort ends a wait for room with the abort's reason; the waiting buffer is released", async () => {
    const ops = new Ops();
    const ac = new AbortController();
    const w = window(1, 1 << 20, ac.signal);
    await w.submit(10, "write", ops.op(0, 10));
    let releasedWaiting = 0;
    const waiting = w.submit(10, "write", ops.op(1, 10), () => releasedWaiting++);
    const reason = cancelled("the source cancelled the transfer");
    ac.abort(reason);
    await assert.rejects(
      waiting,
      (e: unknown) => e === reason && (e as { status?: number }).status === Status.CANCELLED,
    );
    assert.equal(releasedWaiting, 1);
    assert.equal(ops.pending.length, 1, "the second write never started");
    ops.complete(0);
    await w.settle();
  });

  it("settle: delayed writes that have not started never start; it waits for those in flight", async () => {
    const w = new WriteWindow(
      { writesInFlight: 4, windowBytes: 1 << 20, meter: noMeter, pool: "backups", writeDelayMs: 3_600_000 },
      new AbortController().signal,
    );
    let started = 0;
    let released = 0;
    for (let i = 0; i < 3; i++) {
      await w.submit(
        10,
        "write",
        async () => {
          started++;
        },
        () => released++,
      );
    }
    await w.settle(); // would take an hour if the delays were not cut short
    assert.equal(started, 0);
    assert.equal(released, 3);
    assert.equal(w.inFlight, 0);
  });
});

describe("sink write window: widening while writes are slow", () => {
  const MiB = 1 << 20;
  /**
   * 60 writes of 1 MiB (and a zero-fill every 10th) through a window of 4 writes / 4 MiB (max `max`) on
   * the test's clock. `cluster`: "latency" — each write takes `opMs` whatever else is in flight (round
   * trips); "throughput" — one write finishes every `opMs` (a cluster at its limit: latency grows with
   * what is in flight). The window's size after every submit, and the most bytes ever in flight.
   */
  async function run(kind: "latency" | "throughput", opMs: number, max: number | undefined) {
    const cluster = new SlowCluster(kind, opMs);
    let bytesInFlight = 0;
    let maxBytes = 0;
    const w = new WriteWindow(
      {
        writesInFlight: 4,
        windowBytes: 4 * MiB,
        ...(max !== undefined ? { maxWindowBytes: max } : {}),
        meter: noMeter,
        pool: "backups",
        now: cluster.now,
      },
      new AbortController().signal,
    );
    const op = (bytes: number) => () =>
      new Promise<void>((resolve) => {
        bytesInFlight += bytes;
        maxBytes = Math.max(maxBytes, bytesInFlight);
        cluster.start(() => {
          bytesInFlight -= bytes;
          resolve();
        });
      });
    const sizes: number[] = [];
    for (let i = 0; i < 60; i++) {
      await w.submit(MiB, i % 10 === 9 ? "zeroes" : "write", op(MiB));
      sizes.push(w.size.bytes / MiB);
      assert.ok(w.inFlight <= w.size.writes, `${w.inFlight} writes in a window of ${w.size.writes}`);
    }
    await w.drain();
    await cluster.stop();
    return { sizes, maxBytes: maxBytes / MiB, latency: w.latency };
  }

  it("round-trip-bound writes: widened by half its start at a time while it pays, writes in proportion, up to the maximum", async () => {
    const r = await run("latency", 60, 8 * MiB);
    assert.deepEqual([...new Set(r.sizes)], [4, 6, 8], `window sizes ${r.sizes}`);
    // The first step waits for a window's worth of finished writes at the starting size.
    assert.ok(r.sizes.indexOf(6) >= 4, `grew after ${r.sizes.indexOf(6)} submits`);
    assert.equal(r.maxBytes, 8);
    assert.equal(r.latency.windowPeakMiB, 8);
  });

  it("a cluster at its throughput (slow because of what is in flight): one step on trial, then back for good", async () => {
    const r = await run("throughput", 20, 8 * MiB);
    const steps = r.sizes.filter((x, i) => i === 0 || x !== r.sizes[i - 1]);
    assert.deepEqual(steps, [4, 6, 4], `window sizes ${r.sizes}`);
    assert.equal(r.sizes.at(-1), 4);
    assert.equal(r.latency.windowPeakMiB, 6);
  });

  it("writes that keep up (under 50 ms on average) leave it at its start", async () => {
    const r = await run("latency", 30, 8 * MiB);
    assert.deepEqual([...new Set(r.sizes)], [4]);
    assert.equal(r.maxBytes, 4);
    assert.equal(r.latency.windowPeakMiB, 4);
  });

  it("without maxWindowBytes (or with it at windowBytes) it never grows", async () => {
    for (const max of [undefined, 4 * MiB]) {
      const r = await run("latency", 200, max);
      assert.deepEqual([...new Set(r.sizes)], [4], `max ${max}`);
      assert.equal(r.maxBytes, 4);
    }
  });
});
