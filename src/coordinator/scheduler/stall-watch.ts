/**
 * The coordinator's own deafness. Leases are renewed by heartbeats the coordinator reads on its one
 * thread. When that thread is held — a long synchronous catalog statement (the PostgreSQL bridge allows
 * 10 s), a long GC pause, the host suspended — the heartbeats wait unread in the sockets, and the first
 * timer to fire afterwards (before the loop's poll phase reads them) would expire leases whose agents
 * never stopped reporting: healthy attempts failed, their agents told to stop, their work retried.
 *
 * The watch notices the thread's absence on a monotonic clock of its own (not the scheduler's, which
 * tests drive): a look `everyMs` apart that finds more than `thresholdMs` beyond the period was a stall,
 * and the lease broker gives every running lease that time back (lease-broker.ts). Both the watch's own
 * timer and the broker's expiry pass look, so whichever runs first after a stall counts it, once.
 */
import { performance } from "node:perf_hooks";

export class StallWatch {
  #last: number;
  #timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly clock: () => number = () => performance.now(),
    readonly everyMs = 500,
    readonly thresholdMs = 2_000,
  ) {
    this.#last = clock();
  }

  /** How long the thread was away beyond the period since the last look (0: not a stall); counts it once. */
  take(): number {
    const t = this.clock();
    const gap = t - this.#last - this.everyMs;
    this.#last = t;
    return gap >= this.thresholdMs ? Math.round(gap) : 0;
  }

  /** Looks every `everyMs` (unref'd: it never keeps the process alive); `onStall` gets each stall's length. */
  start(onStall: (ms: number) => void): void {
    if (this.#timer) return;
    this.#last = this.clock();
    this.#timer = setInterval(() => {
      const ms = this.take();
      if (ms > 0) onStall(ms);
    }, this.everyMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
