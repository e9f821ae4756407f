/**
 * The wake-up timer of the coordinator's level-triggered loops: the scheduler (scheduler.ts) and the
 * policy and verify runners (../policy/runner.ts, ../policy/verify-runner.ts) each hold one.
 *
 * Who owns what: the owner decides WHAT falls due — each pass computes the next instant something falls
 * due by itself and writes it to `next` (the owner's `nextWake` getter reads it back) — and what a
 * wake-up does (`onWake`: its pass). This timer owns WHEN that pass runs again: the one pending
 * setTimeout (unref'd: it never keeps the process alive), the instant it is armed for (`armedAt`), the
 * arming rules below, and stop().
 *
 *  - Something due at t is handled once t is strictly past (a lease has expired once its expiry is
 *    past): the timer fires 1 ms after the instant it is armed for.
 *  - It never sleeps longer than `maxSleepMs` (default SAFETY_PASS_MS: a safety pass, in case an event
 *    that should have woken its owner was missed).
 *  - `keepEarlier` (the scheduler, which every event ticks): an armed timer that fires no later than the
 *    new instant, and is not overdue, stays — a pass never pushes back a wake-up an earlier one set.
 *    Without it (the runners) each arm() replaces the timer.
 *  - arm() does nothing before start() and after stop(); stop() clears the pending timer.
 *
 * Instants are epoch ms of the owner's clock (`now`, injected), so a test with a fake clock reads the
 * same `next` the owner computed.
 */

/** The longest a loop sleeps with nothing due (a safety pass: a kick some path forgot). */
export const SAFETY_PASS_MS = 30_000;

export interface WakeTimerOptions {
  /** The owner's clock (default Date.now). */
  now?: () => number;
  /** Keep an armed timer that fires no later than the new instant (default false: re-arm each time). */
  keepEarlier?: boolean;
  /** The longest sleep, ms, counting the 1 ms past the instant (default SAFETY_PASS_MS). */
  maxSleepMs?: number;
}

export class WakeTimer {
  /** What the owner's last pass found next due (epoch ms); Infinity before the first pass. */
  next = Number.POSITIVE_INFINITY;
  readonly #onWake: () => void;
  readonly #now: () => number;
  readonly #keepEarlier: boolean;
  readonly #maxSleepMs: number;
  #timer: NodeJS.Timeout | null = null;
  /** The instant the pending timer is armed for (it fires 1 ms later); Infinity when none is. */
  #at = Number.POSITIVE_INFINITY;
  #on = false;

  constructor(onWake: () => void, opts: WakeTimerOptions = {}) {
    this.#onWake = onWake;
    this.#now = opts.now ?? Date.now;
    this.#keepEarlier = opts.keepEarlier ?? false;
    this.#maxSleepMs = opts.maxSleepMs ?? SAFETY_PASS_MS;
  }

  /** The instant the pending timer is armed for (it fires 1 ms later); Infinity when none is. */
  get armedAt(): number {
    return this.#at;
  }

  /** Between start() and stop(): arm() sets the timer. */
  get started(): boolean {
    return this.#on;
  }

  /** From now on arm() sets the timer. */
  start(): void {
    this.#on = true;
  }

  /** Clears the pending timer; arm() does nothing until start(). */
  stop(): void {
    this.#on = false;
    this.#clear();
  }

  /** Sets the timer for `next` (at most maxSleepMs from `now`, the owner's pass time by default: now()). */
  arm(now = this.#now()): void {
    if (!this.#on) return;
    const at = Math.min(this.next, now + this.#maxSleepMs - 1);
    if (this.#keepEarlier && this.#timer && this.#at <= at && this.#at >= now) return;
    this.#clear();
    // Nothing due and no longest sleep: no timer (setTimeout would take Infinity for 1 ms).
    if (!Number.isFinite(at)) return;
    this.#at = at;
    this.#timer = setTimeout(
      () => {
        this.#timer = null;
        this.#at = Number.POSITIVE_INFINITY;
        this.#onWake();
      },
      Math.max(0, at - now) + 1,
    );
    this.#timer.unref?.();
  }

  #clear(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#at = Number.POSITIVE_INFINITY;
  }
}
