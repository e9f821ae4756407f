/**
 * When a data-plane window widens (agents/transfer/widening.ts), on the test's clock: a step on trial
 * when the window is full and a window's worth of ops averaged ≥ 50 ms; the step stays only if the
 * throughput it shows (size ÷ mean latency) beats the one before by MIN_GAIN, else the size goes back
 * for good; ops started before a decision, uncounted ops, fast ops and a stale sample start no step;
 * never past the maximum.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MIN_GAIN, Widening } from "../../../agents/transfer/widening";

/** A Widening of base 8 (max 16 unless told), and `ops(n, ms)`: n ops started after now, each taking ms. */
function widening(max = 16) {
  const t = { now: 0 };
  const w = new Widening({ base: 8, max, now: () => t.now });
  const ops = (n: number, ms: number, counts = true) => {
    t.now += ms;
    for (let i = 0; i < n; i++) w.finished(ms, counts);
  };
  return { t, w, ops };
}

describe("window widening", () => {
  it("no decision before a window's worth of ops; slow ops then start a step of half the base", () => {
    const { w, ops } = widening();
    ops(7, 80);
    assert.equal(w.decide(8), false, "7 ops of a window of 8: not yet");
    ops(1, 80);
    assert.equal(w.decide(8), true);
    assert.equal(w.size, 12);
    assert.equal(w.peak, 12);
  });

  it("a step that pays (latency held as the window grew) stays and the next is tried, up to the maximum", () => {
    const { w, ops } = widening();
    ops(8, 80); // 8 / 80
    assert.ok(w.decide(8));
    ops(12, 80); // 12 / 80: +50 %
    assert.ok(w.decide(12));
    assert.equal(w.size, 16);
    ops(16, 80);
    assert.equal(w.decide(16), false, "at the maximum");
    assert.equal(w.size, 16);
    assert.equal(w.peak, 16);
  });

  it(`a step whose latency grew with it (less than ${MIN_GAIN * 100} % more throughput) goes back, and no other is tried`, () => {
    const { w, ops } = widening();
    ops(8, 80); // 8 / 80 = 0.1
    assert.ok(w.decide(8));
    ops(12, 110); // 12 / 110 = 0.109: +9 %
    assert.ok(w.decide(12), "the size changed: back");
    assert.equal(w.size, 8);
    assert.equal(w.peak, 12);
    ops(8, 200);
    assert.equal(w.decide(8), false, "settled for this transfer");
    assert.equal(w.size, 8);
  });

  it("ops started before the last decision are not the sample: they ran at the size before", () => {
    const { t, w, ops } = widening();
    ops(8, 80);
    assert.ok(w.decide(8));
    t.now += 10;
    for (let i = 0; i < 12; i++) w.finished(200); // started 190 ms before the step
    assert.equal(w.decide(12), false, "no sample yet");
    assert.equal(w.size, 12);
  });

  it("fast ops, uncounted ops and a stale sample start no step; max ≤ base never grows", () => {
    const fast = widening();
    fast.ops(8, 49);
    assert.equal(fast.w.decide(8), false);
    const zeros = widening();
    zeros.ops(8, 200, false);
    assert.equal(zeros.w.decide(8), false, "uncounted ops");
    const stale = widening();
    stale.ops(40, 200);
    assert.equal(stale.w.decide(8), false, "over four windows' worth: dropped");
    stale.ops(8, 200);
    assert.equal(stale.w.decide(8), true, "the next fresh sample decides");
    const fixed = widening(8);
    fixed.ops(8, 500);
    assert.equal(fixed.w.decide(8), false);
    assert.equal(fixed.w.size, 8);
  });
});
