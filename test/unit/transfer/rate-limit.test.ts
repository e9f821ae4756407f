/**
 * Token buckets (agents/transfer/shaping/rate-limit.ts) on a simulated clock: the long-run rate holds
 * within 1 % over a simulated minute for several rates and chunk sizes (a chunk larger than the burst
 * included), streams sharing the agent's bucket split it (a job's own cap on top), an aborted take
 * rejects at once and pays nothing, and the wait time reaches the metrics hook.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  CHUNK_OVERHEAD_BYTES,
  type Clock,
  defaultBurst,
  limitStream,
  type RateLimiter,
  TokenBucket,
  wireBytes,
} from "../../../agents/transfer/shaping/rate-limit";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import type { TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";

const MiB = 1024 * 1024;

/** A clock that moves only when `run` says: timers fire in time order once everything else has settled. */
interface Timer {
  at: number;
  seq: number;
  resolve(): void;
}

class SimClock implements Clock {
  #now = 0;
  #timers: Timer[] = [];
  #seq = 0;
  now(): number {
    return this.#now;
  }
  sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = { at: this.#now + ms, seq: this.#seq++, resolve };
      this.#timers.push(t);
      signal.addEventListener(
        "abort",
        () => {
          this.#timers = this.#timers.filter((x) => x !== t);
          reject(new Error("aborted"));
        },
        { once: true },
      );
    });
  }
  get pending(): number {
    return this.#timers.length;
  }
  /** Lets every promise settle, then fires the next timer; until `done()` or no timer is left. */
  async run(done: () => boolean, maxSteps = 10_000_000): Promise<void> {
    for (let i = 0; i < maxSteps; i++) {
      await new Promise((r) => setImmediate(r));
      if (done() || this.#timers.length === 0) return;
      this.#timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const t = this.#timers.shift() as Timer;
      this.#now = Math.max(this.#now, t.at);
      t.resolve();
    }
    throw new Error("simulation did not finish");
  }
}

const chunk = (size: number): TransferMessage => ({
  body: {
    $case: "chunk",
    value: { offset: 0, data: new Uint8Array(size), crc32: 0, compression: Compression.COMPRESSION_NONE, rawLength: 0 },
  },
});

async function* endless(size: number): AsyncGenerator<TransferMessage> {
  for (;;) yield chunk(size);
}

/** Consumes `messages`, recording the simulated time each one came out, until `stop` says so. */
function drain(clock: SimClock, messages: AsyncIterable<TransferMessage>, stop: () => boolean): { times: number[] } {
  const out = { times: [] as number[] };
  void (async () => {
    for await (const _ of messages) {
      out.times.push(clock.now());
      if (stop()) return;
    }
  })().catch(() => {}); // an aborted stream: the test looks at `times`
  return out;
}

/** Bytes per second between the first message released after t=0 and the last within `windowMs` of it. */
function steadyRate(times: number[], bytesEach: number, windowMs: number): { rate: number; n: number } {
  const i0 = times.findIndex((t) => t > 0);
  assert.ok(i0 >= 0, "nothing was ever held back");
  let i1 = i0;
  while (i1 + 1 < times.length && (times[i1 + 1] as number) - (times[i0] as number) <= windowMs) i1++;
  const n = i1 - i0;
  return { rate: (n * bytesEach * 1000) / ((times[i1] as number) - (times[i0] as number)), n };
}

describe("TokenBucket", () => {
  const cases: [number, number][] = [
    [1 * MiB, 64 * 1024],
    [1 * MiB, 4 * MiB],
    [8 * MiB, 128 * 1024],
    [8 * MiB, 2 * MiB],
    [100 * MiB, 1 * MiB],
    [100 * MiB, 4 * MiB],
  ];
  for (const [rate, size] of cases) {
    it(`holds ${rate / MiB} MiB/s within 1 % over a simulated minute with ${size / 1024} KiB chunks`, async () => {
      const clock = new SimClock();
      const bucket = new TokenBucket({ bytesPerSecond: rate, burstBytes: defaultBurst(rate, size), clock });
      const ac = new AbortController();
      const end = 61_000 + (size * 2000) / rate;
      const out = drain(clock, limitStream(endless(size), [bucket], ac.signal), () => clock.now() >= end);
      await clock.run(() => clock.now() >= end);
      ac.abort();
      const { rate: got, n } = steadyRate(out.times, size + CHUNK_OVERHEAD_BYTES, 60_000);
      assert.ok(n >= 10, `only ${n} chunks measured`);
      assert.ok(Math.abs(got - rate) / rate < 0.01, `rate ${got} against ${rate}`);
      // Before anything waited: at most the burst (plus the one chunk that overdrew it) went at once.
      const free = out.times.filter((t) => t === 0).length * (size + CHUNK_OVERHEAD_BYTES);
      assert.ok(free <= bucket.burstBytes + size + CHUNK_OVERHEAD_BYTES, `free ${free}`);
    });
  }

  it("splits the agent's bucket between two streams, a job's own cap on top", async () => {
    const clock = new SimClock();
    const agent = new TokenBucket({ bytesPerSecond: 8 * MiB, burstBytes: 2 * MiB, clock });
    const ac = new AbortController();
    const size = 256 * 1024;
    const end = 60_000;
    const stop = () => clock.now() >= end;
    const a = drain(clock, limitStream(endless(size), [agent], ac.signal), stop);
    const b = drain(clock, limitStream(endless(size), [agent], ac.signal), stop);
    await clock.run(stop);
    const count = (o: { times: number[] }) => o.times.filter((t) => t > 0 && t <= end).length * size;
    const [ra, rb] = [count(a) / 60, count(b) / 60];
    assert.ok(Math.abs(ra + rb - 8 * MiB) / (8 * MiB) < 0.01, `together ${ra + rb}`);
    assert.ok(Math.abs(ra - rb) / (4 * MiB) < 0.02, `a ${ra} b ${rb}`);

    // A second run: stream c has a job cap of 2 MiB/s, d none; the agent's 8 MiB/s leaves d the rest.
    const clock2 = new SimClock();
    const agent2 = new TokenBucket({ bytesPerSecond: 8 * MiB, burstBytes: 2 * MiB, clock: clock2 });
    const job = new TokenBucket({ bytesPerSecond: 2 * MiB, burstBytes: 256 * 1024, clock: clock2 });
    const stop2 = () => clock2.now() >= end;
    const c = drain(clock2, limitStream(endless(size), [job, agent2], ac.signal), stop2);
    const d = drain(clock2, limitStream(endless(size), [agent2], ac.signal), stop2);
    await clock2.run(stop2);
    const count2 = (o: { times: number[] }) => o.times.filter((t) => t > 0 && t <= end).length * size;
    const [rc, rd] = [count2(c) / 60, count2(d) / 60];
    assert.ok(Math.abs(rc - 2 * MiB) / (2 * MiB) < 0.02, `capped job ${rc}`);
    assert.ok(Math.abs(rd - 6 * MiB) / (6 * MiB) < 0.02, `the other ${rd}`);
    ac.abort();
  });

  it("rejects an aborted take at once; it pays nothing and the queue behind it moves on", async () => {
    const clock = new SimClock();
    const waits: number[] = [];
    const bucket = new TokenBucket({
      bytesPerSecond: MiB,
      burstBytes: MiB,
      clock,
      onWait: (s) => waits.push(s),
    });
    const never = new AbortController().signal;
    await bucket.take(MiB, never); // empties the bucket
    assert.equal(bucket.tokens, 0);
    const first = new AbortController();
    const second = new AbortController();
    const settled: string[] = [];
    const p1 = bucket.take(512 * 1024, first.signal).then(
      () => settled.push("first ok"),
      (e: Error) => settled.push(`first ${e.name}`),
    );
    const p2 = bucket.take(512 * 1024, second.signal).then(
      () => settled.push(`second ok at ${clock.now()}`),
      (e: Error) => settled.push(`second ${e.name}`),
    );
    assert.equal(clock.pending, 1, "one timer for the head");
    first.abort();
    await p1;
    assert.deepEqual(settled, ["first AbortError"], "rejected before the clock moved");
    assert.equal(clock.now(), 0);
    assert.equal(bucket.tokens, 0, "the aborted take paid nothing");
    assert.equal(clock.pending, 1, "the head's timer was replaced, not doubled");
    await clock.run(() => settled.length === 2);
    await p2;
    assert.deepEqual(settled, ["first AbortError", "second ok at 500"]);
    assert.equal(bucket.tokens, 0);
    assert.equal(clock.pending, 0);
    // An abort after the take went is a no-op: nothing is given back or taken twice.
    second.abort();
    assert.equal(bucket.tokens, 0);
    assert.deepEqual(
      waits.map((w) => Math.round(w * 1000)),
      [500],
      "the aborted take waited no time; the second 500 ms",
    );
  });

  it("refuses an already aborted signal, and a stream stops with the abort", async () => {
    const clock = new SimClock();
    const bucket = new TokenBucket({ bytesPerSecond: MiB, burstBytes: MiB, clock });
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(bucket.take(1, ac.signal), { name: "AbortError" });
    const live = new AbortController();
    const it = limitStream(endless(MiB), [bucket], live.signal)[Symbol.asyncIterator]();
    await it.next(); // the burst
    const next = it.next();
    live.abort();
    await assert.rejects(next, { name: "AbortError" });
    assert.equal(clock.now(), 0);
  });

  it("charges a chunk its data plus framing, and nothing for zero ranges, headers and trailers", async () => {
    assert.equal(wireBytes(chunk(1000)), 1000 + CHUNK_OVERHEAD_BYTES);
    assert.equal(wireBytes({ body: { $case: "zero", value: { offset: 0, length: 1 << 30 } } }), 0);
    const taken: number[] = [];
    const spy: RateLimiter = {
      bytesPerSecond: 1,
      take: async (n) => {
        taken.push(n);
      },
    };
    async function* msgs(): AsyncGenerator<TransferMessage> {
      yield { body: { $case: "zero", value: { offset: 0, length: 1 << 30 } } };
      yield chunk(10);
    }
    const seen: string[] = [];
    for await (const m of limitStream(msgs(), [spy, spy], new AbortController().signal)) seen.push(m.body?.$case ?? "");
    assert.deepEqual(seen, ["zero", "chunk"]);
    assert.deepEqual(taken, [10 + CHUNK_OVERHEAD_BYTES, 10 + CHUNK_OVERHEAD_BYTES]);
  });
});
