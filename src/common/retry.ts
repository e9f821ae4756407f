/**
 * The one retry helper: every place that retries (busy images, reconnects, a job's next attempt) uses
 * `retry` or `backoffDelay` from here, so backoff, jitter and cancellation behave the same everywhere.
 * Waits always end: each has a bounded delay and an AbortSignal that rejects at once with an AbortError.
 */

export interface BackoffOptions {
  /** Delay before the 2nd attempt, ms (doubles each attempt). */
  baseMs: number;
  /** Upper bound of one delay, ms. */
  maxMs: number;
  /** Spread each delay over [d·(1-jitter/2), d·(1+jitter/2)]: 0 = exact, 1 = ±50 % (default 0). */
  jitter?: number;
}

export interface RetryOptions extends BackoffOptions {
  /** Attempts in all, ≥ 1 (the first call included). */
  attempts: number;
  /** Whether a failure is worth another attempt (default: every failure). */
  retryIf?: (e: unknown, attempt: number) => boolean;
  /** Called before each wait, e.g. to log. */
  onRetry?: (e: unknown, attempt: number, delayMs: number) => void;
  signal?: AbortSignal;
  /** What the last failure is turned into once attempts are spent (default: thrown as is). */
  onExhausted?: (e: unknown, attempts: number) => unknown;
}

/** Delay after failed attempt number `attempt` (1-based): base·2^(attempt-1), capped, with jitter. */
export function backoffDelay(attempt: number, o: BackoffOptions, random: () => number = Math.random): number {
  const d = Math.min(o.maxMs, o.baseMs * 2 ** Math.max(0, attempt - 1));
  const j = o.jitter ?? 0;
  return Math.max(0, Math.round(d * (1 - j / 2 + j * random())));
}

/** An AbortError, as AbortSignal-aware APIs throw it (name "AbortError"). */
export function abortError(signal?: AbortSignal): Error {
  const reason = signal?.reason;
  if (reason instanceof Error && reason.name === "AbortError") return reason;
  return Object.assign(new Error("the operation was aborted", { cause: reason }), { name: "AbortError" });
}

/**
 * Settles like `p`, or rejects with `why()` (default: `signal.reason`) as soon as `signal` aborts — a
 * wait that ends with the signal, without a listener left behind.
 */
export function abortable<T>(p: Promise<T>, signal: AbortSignal, why: () => unknown = () => signal.reason): Promise<T> {
  if (signal.aborted) return Promise.reject(why());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(why());
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

/** Resolves after `ms`, or rejects with an AbortError as soon as `signal` aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortError(signal));
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Calls `f` until it succeeds, a failure is not retryable, attempts run out, or `signal` aborts. */
export async function retry<T>(f: (attempt: number) => Promise<T>, o: RetryOptions): Promise<T> {
  if (!Number.isInteger(o.attempts) || o.attempts < 1) throw new RangeError(`attempts must be ≥ 1, got ${o.attempts}`);
  for (let attempt = 1; ; attempt++) {
    if (o.signal?.aborted) throw abortError(o.signal);
    try {
      return await f(attempt);
    } catch (e) {
      if (o.signal?.aborted) throw abortError(o.signal);
      if (o.retryIf && !o.retryIf(e, attempt)) throw e;
      if (attempt >= o.attempts) throw o.onExhausted ? o.onExhausted(e, attempt) : e;
      const ms = backoffDelay(attempt, o);
      o.onRetry?.(e, attempt, ms);
      await delay(ms, o.signal);
    }
  }
}
