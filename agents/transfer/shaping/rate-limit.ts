/**
 * Bandwidth caps on the bytes a sending agent puts on the wire: a token bucket per job
 * (TransferOptions.bandwidth_limit_bytes_per_second) and one per agent (`limits.bandwidthBytesPerSecond`),
 * both awaited before a message goes out.
 *
 * A bucket fills at `bytesPerSecond` up to `burstBytes` and starts full. Takers queue in arrival order
 * (two streams sharing a bucket split it); the head of the queue goes once the bucket holds
 * min(bytes, burst) tokens, and then pays all its bytes — a message larger than the burst leaves the
 * bucket in debt, which the next takers wait out, so the long-run rate holds whatever the message size.
 * A taker whose signal aborts leaves the queue at once, having paid nothing. One timer at a time per
 * bucket (the head's), through src/common/retry.ts `delay`; the clock is injectable for tests.
 */
import { abortError, delay } from "../../../src/common/retry";
import type { TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";

/** A token bucket (bytes per second, burst); `take` resolves when `bytes` may go, or rejects when `signal` aborts. */
export interface RateLimiter {
  readonly bytesPerSecond: number;
  take(bytes: number, signal: AbortSignal): Promise<void>;
}

/** Time as the bucket sees it: milliseconds, and an abortable sleep. */
export interface Clock {
  now(): number;
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export const realClock: Clock = { now: () => performance.now(), sleep: delay };

export interface BucketOptions {
  bytesPerSecond: number;
  /** Tokens the bucket holds at most (and starts with); default `defaultBurst(bytesPerSecond)`. */
  burstBytes?: number;
  clock?: Clock;
  /** Told the seconds each take spent waiting (taken or aborted), for metrics. */
  onWait?(seconds: number): void;
}

/** Bytes a chunk costs beyond its data: the frame, the message's fields (offset, CRC, lengths). */
export const CHUNK_OVERHEAD_BYTES = 32;
/** The default burst: an eighth of a second of the rate, and at least one chunk (`chunkBytes`). */
export const defaultBurst = (bytesPerSecond: number, chunkBytes = 0): number =>
  Math.max(chunkBytes, Math.ceil(bytesPerSecond / 8));

interface Waiter {
  bytes: number;
  since: number;
  resolve(): void;
  reject(e: Error): void;
  signal: AbortSignal;
  onAbort(): void;
}

export class TokenBucket implements RateLimiter {
  readonly bytesPerSecond: number;
  readonly burstBytes: number;
  readonly #clock: Clock;
  readonly #onWait?: (seconds: number) => void;
  #tokens: number;
  #at: number;
  readonly #queue: Waiter[] = [];
  /** The head's timer, aborted when the head leaves the queue. */
  #timer: AbortController | null = null;

  constructor(o: BucketOptions) {
    if (!(o.bytesPerSecond > 0)) throw new RangeError(`bytesPerSecond must be > 0, got ${o.bytesPerSecond}`);
    this.bytesPerSecond = o.bytesPerSecond;
    this.burstBytes = Math.max(1, o.burstBytes ?? defaultBurst(o.bytesPerSecond));
    this.#clock = o.clock ?? realClock;
    this.#onWait = o.onWait;
    this.#tokens = this.burstBytes;
    this.#at = this.#clock.now();
  }

  /** Tokens now (negative: in debt); for tests and gauges. */
  get tokens(): number {
    this.#refill();
    return this.#tokens;
  }

  take(bytes: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(abortError(signal));
    if (bytes <= 0) return Promise.resolve();
    if (this.#queue.length === 0 && this.#ready(bytes)) {
      this.#tokens -= bytes;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        bytes,
        since: this.#clock.now(),
        resolve,
        reject,
        signal,
        onAbort: () => this.#abort(w),
      };
      signal.addEventListener("abort", w.onAbort, { once: true });
      this.#queue.push(w);
      if (this.#queue.length === 1) this.#pump();
    });
  }

  #refill(): void {
    const now = this.#clock.now();
    if (now > this.#at) {
      this.#tokens = Math.min(this.burstBytes, this.#tokens + ((now - this.#at) * this.bytesPerSecond) / 1000);
      this.#at = now;
    }
  }

  /** Whether `bytes` may go now: the bucket holds min(bytes, burst) tokens (refilled first). */
  #ready(bytes: number): boolean {
    this.#refill();
    return this.#tokens >= Math.min(bytes, this.burstBytes);
  }

  /** Releases the queue's head while it may go, then sleeps until the next one may. */
  #pump(): void {
    while (this.#queue.length > 0) {
      const w = this.#queue[0] as Waiter;
      if (!this.#ready(w.bytes)) break;
      this.#queue.shift();
      this.#tokens -= w.bytes;
      this.#settle(w);
      w.resolve();
    }
    const head = this.#queue[0];
    if (!head) return;
    const missing = Math.min(head.bytes, this.burstBytes) - this.#tokens;
    const ms = Math.max(1, Math.ceil((missing * 1000) / this.bytesPerSecond));
    const timer = new AbortController();
    this.#timer = timer;
    this.#clock.sleep(ms, timer.signal).then(
      () => {
        if (this.#timer !== timer) return;
        this.#timer = null;
        this.#pump();
      },
      () => {},
    );
  }

  #abort(w: Waiter): void {
    const i = this.#queue.indexOf(w);
    if (i < 0) return;
    this.#queue.splice(i, 1);
    this.#settle(w);
    w.reject(abortError(w.signal));
    if (i === 0) {
      this.#timer?.abort();
      this.#timer = null;
      this.#pump();
    }
  }

  #settle(w: Waiter): void {
    w.signal.removeEventListener("abort", w.onAbort);
    const waited = (this.#clock.now() - w.since) / 1000;
    if (waited > 0) this.#onWait?.(waited);
  }
}

/** What a message costs on the wire: a chunk its data plus framing; everything else next to nothing. */
export function wireBytes(m: TransferMessage): number {
  if (m.body?.$case === "chunk") return m.body.value.data.length + CHUNK_OVERHEAD_BYTES;
  return 0;
}

/** The stream, each message released only once every limiter let its bytes go. */
export function limitStream(
  messages: AsyncIterable<TransferMessage>,
  limiters: readonly RateLimiter[],
  signal: AbortSignal,
): AsyncIterable<TransferMessage> {
  if (limiters.length === 0) return messages;
  return (async function* () {
    for await (const m of messages) {
      const n = wireBytes(m);
      if (n > 0) for (const l of limiters) await l.take(n, signal);
      yield m;
    }
  })();
}

/** Which bucket a wait was on (the metrics' `limiter` label). */
export type LimiterKind = "agent" | "job";

/**
 * An agent's limiters, made once at start: its own bucket (none when `agentBytesPerSecond` is 0), shared
 * by all its transfers, and a factory of a job's bucket per transfer; bursts of at least one chunk.
 */
export function agentLimiters(o: {
  agentBytesPerSecond: number;
  chunkBytes: number;
  onWait?(limiter: LimiterKind, seconds: number): void;
  clock?: Clock;
}): { agentLimiter?: RateLimiter; jobLimiter(bytesPerSecond: number): RateLimiter } {
  const bucket = (bytesPerSecond: number, kind: LimiterKind) =>
    new TokenBucket({
      bytesPerSecond,
      burstBytes: defaultBurst(bytesPerSecond, o.chunkBytes + CHUNK_OVERHEAD_BYTES),
      ...(o.clock ? { clock: o.clock } : {}),
      ...(o.onWait ? { onWait: (s: number) => o.onWait?.(kind, s) } : {}),
    });
  return {
    ...(o.agentBytesPerSecond > 0 ? { agentLimiter: bucket(o.agentBytesPerSecond, "agent") } : {}),
    jobLimiter: (bytesPerSecond) => bucket(bytesPerSecond, "job"),
  };
}
