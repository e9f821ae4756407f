/**
 * When a data-plane window may widen: the destination's write window (sink/write-window.ts, in bytes)
 * and the source's read-ahead (source.ts, in reads). One rule for both, decided each time the window
 * is full and there is a fresh sample — at least as many finished ops as the window holds now:
 *
 * - Slow: the sample's ops took `growAtMs` or more on average. Then the window grows by half its
 *   starting size (up to `max`) on trial.
 * - Trial: the next sample (ops started after the step) must show a throughput MIN_GAIN above the one
 *   before it. Throughput is taken by Little's law — what a full window holds ÷ its ops' mean latency —
 *   as a span of time would be skewed by the ops still in flight from before the step and by ops that
 *   finish together. If it does, the step stays (and, still slow, the next one is tried). If not, the
 *   window goes back to where it was and stays there for the rest of the transfer.
 *
 * Ops slow because of round trips (OSD or network latency) get more throughput from more in flight, so
 * the window widens; ops slow because the cluster is at its throughput (latency = bytes in flight ÷
 * throughput: an HDD pool, a busy cluster) get none, so the window returns after one trial and the
 * memory stays that of the start. Fast ops (a local, CPU-bound cluster: 8–22 ms a 2 MiB write) never
 * start a trial. A sample that grew past four windows' worth without a decision is dropped, so
 * what is measured is recent.
 */

/** Mean op latency (ms) from which a full window tries to grow: 2 MiB writes take 8–22 ms on a local cluster even CPU-bound, ~200 ms under 0–100 ms of OSD latency. */
export const GROW_AT_MS = 50;
/** The throughput a step must add to stay (noise on a busy host is ~5 %). */
export const MIN_GAIN = 0.15;

export interface WideningOptions {
  /** The window's starting size and its most (same unit: bytes, reads). */
  base: number;
  max: number;
  growAtMs?: number;
  /** Milliseconds now. */
  now: () => number;
}

export class Widening {
  /** The window's size now. */
  size: number;
  /** The largest it was. */
  peak: number;
  /** The sample: ops started from `#from` on (the last decision: they ran at the size now). */
  #ops = 0;
  #ms = 0;
  #from: number;
  /** A step on trial: the throughput before it (size ÷ mean latency) and the size it came from. */
  #trial: { before: number; from: number } | null = null;
  /** A step did not pay: no more for this transfer. */
  #settled: boolean;

  constructor(readonly o: WideningOptions) {
    this.size = o.base;
    this.peak = o.base;
    this.#from = o.now();
    this.#settled = o.max <= o.base;
  }

  /** One op finished: it took `ms`; `counts` false leaves it out (e.g. a zero-fill, no data moved). */
  finished(ms: number, counts = true): void {
    if (this.#settled || !counts) return;
    if (this.o.now() - ms < this.#from) return; // started before the last decision: it ran at another size
    this.#ops++;
    this.#ms += ms;
  }

  /**
   * The window is full and holds up to `count` ops at its size now: whether its size changed (grew on
   * trial, or went back after a trial that did not pay).
   */
  decide(count: number): boolean {
    if (this.#settled || this.#ops < count) return false;
    const mean = this.#ms / this.#ops;
    const stale = this.#ops > 4 * count;
    this.#ops = 0;
    this.#ms = 0;
    this.#from = this.o.now();
    if (stale) return false; // measured over too long: the next sample decides
    const rate = this.size / Math.max(mean, 1e-3);
    const trial = this.#trial;
    this.#trial = null;
    if (trial && rate < trial.before * (1 + MIN_GAIN)) {
      this.size = trial.from;
      this.#settled = true;
      return true;
    }
    if (this.size >= this.o.max || mean < (this.o.growAtMs ?? GROW_AT_MS)) return false;
    this.#trial = { before: rate, from: this.size };
    this.size = Math.min(this.o.max, this.size + Math.ceil(this.o.base / 2));
    this.peak = Math.max(this.peak, this.size);
    return true;
  }
}
