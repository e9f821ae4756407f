/**
 * Where the time of one operation goes: named phases measured on the monotonic clock
 * (`performance.now()`), each the milliseconds since the previous mark. Cheap enough for every job; the
 * result goes into the operation's log line (and from there into the latency bench).
 */
import { performance } from "node:perf_hooks";

export class PhaseTimer {
  /** Milliseconds per phase, in the order they ended (a phase marked twice adds up). */
  readonly ms: Record<string, number> = {};
  readonly #start = performance.now();
  #mark = this.#start;

  /** The named phase ended now. */
  mark(name: string): void {
    const now = performance.now();
    this.ms[name] = round((this.ms[name] ?? 0) + now - this.#mark);
    this.#mark = now;
  }

  /** Milliseconds since the timer started. */
  elapsedMs(): number {
    return round(performance.now() - this.#start);
  }
}

const round = (x: number) => Math.round(x * 10) / 10;
