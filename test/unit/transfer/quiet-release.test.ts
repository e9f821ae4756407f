/**
 * QuietRelease (agents/transfer/quiet-release.ts): when the data plane has been quiet, the pools drop
 * their idle buffers and the C libraries give their free memory back — once per quiet spell. The
 * timer's checks are called directly: quiet means no take or give between two checks.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { BufferPool } from "../../../agents/transfer/buffer-pool";
import { QuietRelease } from "../../../agents/transfer/quiet-release";

class TestPool extends BufferPool {
  get(n: number): Buffer {
    return this.take(n);
  }
  put(b: Buffer): void {
    this.give(b);
  }
}

function rig() {
  const pools = [new TestPool(8), new TestPool(8)];
  let nativeCalls = 0;
  const q = new QuietRelease({
    pools,
    releaseNative: async () => {
      nativeCalls++;
      return true;
    },
  });
  return { pool: pools[0] as TestPool, other: pools[1] as TestPool, q, native: () => nativeCalls };
}

test("idle buffers are dropped and malloc_trim runs once no pool was used for a whole check period, once per quiet spell", async () => {
  const r = rig();
  const a = r.pool.get(4096);
  const b = r.pool.get(4096);
  r.pool.put(a);
  assert.equal(await r.q.check(), false, "used since the previous check");
  r.pool.put(b); // a use in the next period: still busy
  assert.equal(await r.q.check(), false);
  assert.equal(r.pool.idle, 2);
  assert.equal(r.native(), 0);
  assert.equal(await r.q.check(), true, "a whole period without a take or give");
  assert.equal(r.pool.idle, 0);
  assert.equal(r.native(), 1);
  assert.equal(await r.q.check(), false, "nothing happened since the release: nothing to do");
  assert.equal(await r.q.check(), false);
  assert.equal(r.native(), 1);
  // Used again (another pool this time): the next quiet spell releases again, and the pool allocates afresh.
  const allocated = r.pool.allocated;
  r.pool.put(r.pool.get(4096));
  assert.equal(r.pool.allocated, allocated + 1);
  r.other.put(r.other.get(1024));
  assert.equal(await r.q.check(), false);
  r.other.put(r.other.get(1024));
  assert.equal(await r.q.check(), false, "the other pool was used in this period");
  assert.equal(r.other.idle, 1);
  assert.equal(await r.q.check(), true);
  assert.equal(r.other.idle, 0);
  assert.equal(r.native(), 2);
});

test("trim() reports the bytes the idle buffers held", () => {
  const pool = new TestPool(8);
  const bufs = [pool.get(1024), pool.get(1024), pool.get(2048)];
  for (const b of bufs) pool.put(b);
  assert.equal(pool.trim(), 4096);
  assert.equal(pool.idle, 0);
  assert.equal(pool.trim(), 0);
});

test("a failing malloc_trim is logged, never thrown", async () => {
  const pool = new TestPool(8);
  const logged: string[] = [];
  const q = new QuietRelease({
    pools: [pool],
    quietMs: 10,
    releaseNative: () => Promise.reject(new Error("no addon")),
    log: { debug: (m) => logged.push(m) },
  });
  assert.equal(await q.check(), false, "the first check only sees the pools' use count");
  assert.equal(await q.check(), true);
  assert.deepEqual(logged, ["data plane quiet: memory release failed"]);
});

test("the dropped buffers are collected before malloc_trim runs, after the settle wait", async () => {
  const pool = new TestPool(8);
  const order: string[] = [];
  const q = new QuietRelease({
    pools: [pool],
    settleMs: 20,
    collectFromBytes: 4096,
    collectGarbage: () => order.push(`collect (idle ${pool.idle})`),
    releaseNative: async () => {
      order.push("malloc_trim");
      return true;
    },
  });
  pool.put(pool.get(4096));
  assert.equal(await q.check(), false);
  const started = performance.now();
  assert.equal(await q.check(), true);
  assert.deepEqual(order, ["collect (idle 0)", "malloc_trim"], "pools trimmed, then collected, then malloc_trim");
  assert.ok(performance.now() - started >= 15, "malloc_trim waited for the settle period");
});

test("a failing collection is logged, never thrown, and malloc_trim still runs", async () => {
  const pool = new TestPool(8);
  const logged: string[] = [];
  let trimmed = 0;
  const q = new QuietRelease({
    pools: [pool],
    settleMs: 0,
    collectFromBytes: 0,
    collectGarbage: () => {
      throw new Error("no gc");
    },
    releaseNative: async () => ++trimmed,
    log: { debug: (m) => logged.push(m) },
  });
  pool.put(pool.get(4096));
  await q.check();
  assert.equal(await q.check(), true);
  assert.deepEqual(logged, ["data plane quiet: garbage collection failed", "data plane quiet: memory released"]);
  assert.equal(trimmed, 1);
});

test("no collection when the pools dropped less than collectFromBytes; malloc_trim still runs", async () => {
  const pool = new TestPool(8);
  let collections = 0;
  let trims = 0;
  const q = new QuietRelease({
    pools: [pool],
    settleMs: 0,
    collectFromBytes: 8192,
    collectGarbage: () => collections++,
    releaseNative: async () => ++trims,
  });
  pool.put(pool.get(4096)); // 4 KiB idle: under the bound
  await q.check();
  assert.equal(await q.check(), true);
  assert.deepEqual([collections, trims], [0, 1]);
  const bufs = [pool.get(4096), pool.get(4096)]; // 8 KiB idle: at the bound
  for (const b of bufs) pool.put(b);
  await q.check();
  assert.equal(await q.check(), true);
  assert.deepEqual([collections, trims], [1, 2]);
});

test("another role starting (a pool allocates) releases the other pools' idle buffers at once, not its own", async () => {
  const source = new TestPool(8);
  const destination = new TestPool(8);
  const events: string[] = [];
  let done: () => void = () => {};
  const trimmed = new Promise<void>((resolve) => {
    done = resolve;
  });
  new QuietRelease({
    pools: [source, destination],
    settleMs: 0,
    collectFromBytes: 8192,
    collectGarbage: () => events.push(`collect (destination idle ${destination.idleBytes})`),
    releaseNative: async () => {
      events.push("malloc_trim");
      done();
      return true;
    },
  });
  // The destination's role ends with 4 KiB idle: under the bound, a new source allocation releases nothing.
  destination.put(destination.get(4096));
  source.put(source.get(4096));
  assert.deepEqual(events, []);
  // With 12 KiB idle there, the source's next allocation releases the destination's pool; its own stays.
  const bufs = [destination.get(4096), destination.get(4096), destination.get(4096)];
  for (const b of bufs) destination.put(b);
  assert.equal(destination.idleBytes, 12288);
  source.put(source.get(4096)); // served from the source's idle buffer: no allocation, nothing happens
  assert.deepEqual(events, []);
  const fresh = source.get(65536); // allocates
  const bound = setTimeout(done, 5000); // never wait forever: the assertions below tell
  await trimmed;
  clearTimeout(bound);
  assert.deepEqual(events, ["collect (destination idle 0)", "malloc_trim"]);
  assert.equal(destination.idle, 0);
  assert.equal(source.idle, 1, "the starting role's own idle buffer is kept");
  source.put(fresh);
});

test("a role still using its pool (buffers out) is not released when another allocates; one unmoved for a whole period is", async () => {
  const source = new TestPool(8);
  const destination = new TestPool(8);
  let trims = 0;
  let done = () => {};
  const q = new QuietRelease({
    pools: [source, destination],
    settleMs: 0,
    collectFromBytes: 8192,
    releaseNative: async () => {
      trims++;
      done();
      return true;
    },
  });
  // The source is mid-transfer: 12 KiB idle in its pool, one frame still out.
  const frames = [source.get(4096), source.get(4096), source.get(4096), source.get(4096)];
  for (const f of frames.slice(1)) source.put(f);
  assert.equal(source.out, 1);
  assert.equal(source.idleBytes, 12288);
  // The same agent receives: its receive pool allocates. The busy source's buffers stay.
  const received = destination.get(65536);
  await q.check(); // a check runs between: a release started here would show below
  assert.equal(trims, 0, "nothing released while the source uses its pool");
  assert.equal(source.idleBytes, 12288);
  // The frame out was lost (a failed transfer dropped it) and the source has not moved since: after a
  // whole check period without a take or give, the next allocation releases its idle buffers.
  destination.put(received);
  await q.check(); // period 1: the destination moved, so the timer does not release
  await q.check(); // period 2 begins: neither moved in period 1 — the timer itself releases everything
  assert.equal(trims, 1, "the timer's release when every pool was quiet");
  assert.equal(source.idleBytes, 0);
  // Again, only the source still: it holds 12 KiB idle with one frame out, the destination keeps moving.
  for (const f of [source.get(4096), source.get(4096), source.get(4096)]) source.put(f);
  const released = new Promise<void>((resolve) => {
    done = resolve;
  });
  destination.put(destination.get(65536));
  await q.check();
  destination.put(destination.get(65536));
  await q.check(); // the source did not move for this whole period
  assert.equal(trims, 1, "the destination moved: no timer release");
  const bound = setTimeout(done, 5000); // never wait forever: the assertions below tell
  const more = destination.get(131072); // allocates
  await released;
  clearTimeout(bound);
  assert.equal(trims, 2, "the still source was released when the destination allocated");
  assert.equal(source.idleBytes, 0);
  destination.put(more);
});
