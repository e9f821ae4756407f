/**
 * QuietRelease (agents/transfer/quiet-release.ts): when the data plane has been quiet, the pools drop
 * their idle buffers and the C libraries give their free memory back — once per quiet spell.
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

function rig(quietMs = 1000) {
  const pool = new TestPool(8);
  let clock = 0;
  let nativeCalls = 0;
  const q = new QuietRelease({
    pools: [pool],
    quietMs,
    now: () => clock,
    releaseNative: async () => {
      nativeCalls++;
      return true;
    },
  });
  return {
    pool,
    q,
    at: (t: number) => {
      clock = t;
    },
    native: () => nativeCalls,
  };
}

test("idle buffers are dropped and malloc_trim runs once the pools have been quiet for quietMs, once per quiet spell", async () => {
  const r = rig();
  const a = r.pool.get(4096);
  const b = r.pool.get(4096);
  r.pool.put(a);
  r.pool.put(b);
  const used = r.pool.lastUsed;
  assert.equal(r.pool.idle, 2);
  r.at(used + 999); // still busy
  assert.equal(await r.q.check(), false);
  assert.equal(r.pool.idle, 2);
  assert.equal(r.native(), 0);
  r.at(used + 1000);
  assert.equal(await r.q.check(), true);
  assert.equal(r.pool.idle, 0);
  assert.equal(r.native(), 1);
  r.at(used + 50_000); // nothing happened since: nothing to do
  assert.equal(await r.q.check(), false);
  assert.equal(r.native(), 1);
  // Used again: the next quiet spell releases again, and the pool allocates afresh.
  const allocated = r.pool.allocated;
  r.pool.put(r.pool.get(4096));
  assert.equal(r.pool.allocated, allocated + 1);
  r.at(r.pool.lastUsed + 1000);
  assert.equal(await r.q.check(), true);
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
    now: () => 1_000_000,
    releaseNative: () => Promise.reject(new Error("no addon")),
    log: { debug: (m) => logged.push(m) },
  });
  assert.equal(await q.check(), true);
  assert.deepEqual(logged, ["data plane quiet: malloc_trim failed"]);
});
