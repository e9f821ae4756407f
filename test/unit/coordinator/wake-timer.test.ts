/**
 * The wake-up timer the scheduler and the policy and verify runners share (scheduler/wake-timer.ts):
 * it fires 1 ms past the instant it is armed for, never sleeps longer than its longest sleep (the safety
 * pass by default), keeps an earlier timer only when asked to (the scheduler), re-arms otherwise (the
 * runners), and arms nothing before start() or after stop(). Node's mock timers and an injected clock
 * (moved together by `advance`) make every instant exact: nothing here waits on real time.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import { SAFETY_PASS_MS, WakeTimer, type WakeTimerOptions } from "../../../src/coordinator/scheduler/wake-timer";

describe("wake timer", () => {
  let t: number;
  let fired: number[];
  const timer = (opts: WakeTimerOptions = {}): WakeTimer => {
    const w = new WakeTimer(() => fired.push(t), { now: () => t, ...opts });
    w.start();
    return w;
  };
  /** Moves the injected clock and the mocked timers together. */
  const advance = (ms: number): void => {
    for (let i = 0; i < ms; i++) {
      t++;
      mock.timers.tick(1);
    }
  };

  beforeEach(() => {
    mock.timers.enable({ apis: ["setTimeout"] });
    t = 1_000_000;
    fired = [];
  });
  afterEach(() => mock.timers.reset());

  it("fires once, 1 ms past the instant it is armed for (something due at t is handled once t is past)", () => {
    const w = timer();
    w.next = t + 100;
    w.arm();
    assert.equal(w.armedAt, t + 100);
    advance(100);
    assert.deepEqual(fired, [], "not at the instant itself");
    advance(1);
    assert.deepEqual(fired, [t]);
    assert.equal(w.armedAt, Number.POSITIVE_INFINITY, "not armed once fired");
    advance(SAFETY_PASS_MS * 2);
    assert.equal(fired.length, 1, "once: the owner's pass arms it again");
  });

  it("an instant already past: fires 1 ms from now", () => {
    const w = timer();
    w.next = t - 5_000;
    w.arm();
    advance(1);
    assert.equal(fired.length, 1);
  });

  it("never sleeps longer than the safety pass (nothing due, or due later); another longest sleep if given", () => {
    const start = t;
    const w = timer();
    w.next = Number.POSITIVE_INFINITY;
    w.arm();
    advance(SAFETY_PASS_MS - 1);
    assert.deepEqual(fired, []);
    advance(1);
    assert.deepEqual(fired, [start + SAFETY_PASS_MS]);
    w.next = t + 10 * SAFETY_PASS_MS;
    w.arm();
    advance(SAFETY_PASS_MS);
    assert.deepEqual(fired, [start + SAFETY_PASS_MS, start + 2 * SAFETY_PASS_MS]);

    const long = timer({ maxSleepMs: Number.POSITIVE_INFINITY });
    long.next = t + 2 * SAFETY_PASS_MS;
    long.arm();
    advance(2 * SAFETY_PASS_MS);
    assert.equal(fired.length, 2, "no cap: not before its instant");
    advance(1);
    assert.equal(fired.length, 3);
    long.next = Number.POSITIVE_INFINITY;
    long.arm();
    assert.equal(long.armedAt, Number.POSITIVE_INFINITY, "nothing due and no cap: no timer");
  });

  it("without keepEarlier (the runners): each arm() replaces the timer, later or earlier", () => {
    const w = timer();
    w.next = t + 100;
    w.arm();
    w.next = t + 500;
    w.arm();
    assert.equal(w.armedAt, t + 500);
    advance(101);
    assert.deepEqual(fired, [], "the earlier timer is gone");
    advance(400);
    assert.equal(fired.length, 1);
  });

  it("keepEarlier (the scheduler): an earlier timer stays, a later one is replaced, an overdue one too", () => {
    const w = timer({ keepEarlier: true });
    w.next = t + 100;
    w.arm();
    w.next = t + 500;
    w.arm();
    assert.equal(w.armedAt, t + 100, "kept: fires no later than the new instant");
    advance(101);
    assert.equal(fired.length, 1);
    w.next = t + 500;
    w.arm();
    w.next = t + 50;
    w.arm();
    assert.equal(w.armedAt, t + 50, "replaced: the new instant is earlier");
    // The clock passes the instant without the timer firing (the owner's fake clock ran ahead): overdue,
    // so a later instant replaces it.
    t += 60;
    w.next = t + 500;
    w.arm();
    assert.equal(w.armedAt, t + 500);
  });

  it("arms at the owner's pass time when given (the scheduler's tick start), not at now()", () => {
    const w = timer();
    const passAt = t;
    t += 40; // the pass took 40 ms
    w.next = passAt + 100;
    w.arm(passAt);
    mock.timers.tick(100);
    assert.deepEqual(fired, []);
    mock.timers.tick(1);
    assert.equal(fired.length, 1, "101 ms after the pass time given");
  });

  it("arms nothing before start() or after stop(); stop() clears the pending timer", () => {
    const w = new WakeTimer(() => fired.push(t), { now: () => t });
    w.next = t + 10;
    w.arm();
    assert.equal(w.armedAt, Number.POSITIVE_INFINITY, "not started");
    w.start();
    w.arm();
    assert.equal(w.armedAt, t + 10);
    w.stop();
    assert.equal(w.armedAt, Number.POSITIVE_INFINITY);
    advance(SAFETY_PASS_MS + 1);
    assert.deepEqual(fired, [], "the pending timer was cleared");
    w.arm();
    assert.equal(w.armedAt, Number.POSITIVE_INFINITY, "stopped");
    w.start();
    w.next = t + 10;
    w.arm();
    advance(11);
    assert.equal(fired.length, 1, "started again");
  });
});
