/**
 * The aio write window: many librbd writes in flight, bounded by count (`writesInFlight`) and by the
 * bytes of chunk data they hold (`windowBytes`). `submit` waits for room before it starts a write, so
 * the receive loop — and through it HTTP/2 flow control and the source — runs only as far ahead as
 * the window allows.
 *
 * Slow writes widen it, up to `maxWindowBytes`, while widening pays (../widening.ts: a step of half
 * `windowBytes` on trial, kept only if throughput rose), the count in proportion (the write size
 * stays); each transfer starts at `windowBytes`. A chunk's buffer goes back to its pool (its `release`)
 * exactly once: after librbd wrote it, or at once when the write never started.
 *
 * The first failed write stops the window: the next `submit` or `drain` throws its error. `settle`
 * (on any failure) keeps writes that have not started from starting and waits for those librbd holds.
 */
import { delay } from "../../../src/common/retry";
import type { TransferMeter } from "../meter";
import { Widening } from "../widening";
import { abortable } from "./abort";

export interface WriteWindowOptions {
  writesInFlight: number;
  windowBytes: number;
  /** The window may grow to this many bytes while writes are slow (default: `windowBytes`, no growth). */
  maxWindowBytes?: number;
  /** Mean write latency (ms) from which a full window tries to grow (default: widening.ts GROW_AT_MS). */
  growAtMs?: number;
  meter: TransferMeter;
  /** Label of the metrics (the destination pool). */
  pool: string;
  /** Test-only: delay every write. */
  writeDelayMs?: number;
  /** Milliseconds now (default performance.now); tests give their own clock. */
  now?: () => number;
}

export type WriteKind = "write" | "zeroes";

export class WriteWindow {
  readonly #inflight = new Set<Promise<void>>();
  #bytes = 0;
  #error: unknown = null;
  #submitted = 0;
  /** Milliseconds librbd took over all finished ops, and the longest one (for the log). */
  #opMs = 0;
  #opMaxMs = 0;
  #ops = 0;
  /** The window's size in bytes (its count follows: #maxWrites). */
  readonly #widening: Widening;
  #maxWrites: number;
  readonly #stop = new AbortController();

  /** `signal`: waits for room end when it aborts (with its reason). */
  constructor(
    readonly o: WriteWindowOptions,
    readonly signal: AbortSignal,
  ) {
    this.#widening = new Widening({
      base: o.windowBytes,
      max: Math.max(o.windowBytes, o.maxWindowBytes ?? o.windowBytes),
      ...(o.growAtMs !== undefined ? { growAtMs: o.growAtMs } : {}),
      now: o.now ?? (() => performance.now()),
    });
    this.#maxWrites = o.writesInFlight;
  }

  /** Writes in flight now. */
  get inFlight(): number {
    return this.#inflight.size;
  }

  /** Bytes held by writes in flight now. */
  get bytesHeld(): number {
    return this.#bytes;
  }

  /** Finished ops: how many, their mean and longest latency (ms); the window's largest size (MiB). */
  get latency(): { ops: number; meanMs: number; maxMs: number; windowPeakMiB: number } {
    const r = (x: number) => Math.round(x * 10) / 10;
    return {
      ops: this.#ops,
      meanMs: r(this.#ops ? this.#opMs / this.#ops : 0),
      maxMs: r(this.#opMaxMs),
      windowPeakMiB: r(this.#widening.peak / 2 ** 20),
    };
  }

  /** The window's size now: bytes and writes. */
  get size(): { bytes: number; writes: number } {
    return { bytes: this.#widening.size, writes: this.#maxWrites };
  }

  /** Writes started so far (the image may have changed once this is > 0). */
  get submitted(): number {
    return this.#submitted;
  }

  /**
   * Starts `op` (holding `bytes`) once the window has room. Owns `release` from the call on: it runs
   * when the op settled, or before this throws if the op never started.
   */
  async submit(bytes: number, kind: WriteKind, op: () => Promise<unknown>, release?: () => void): Promise<void> {
    try {
      while (this.#inflight.size > 0 && !this.#fits(bytes)) {
        if (this.#resize()) continue;
        await abortable(Promise.race(this.#inflight), this.signal);
      }
      if (this.#error) throw this.#error;
      if (this.#stop.signal.aborted) throw this.signal.reason ?? new Error("the write window was stopped");
    } catch (e) {
      release?.();
      throw e;
    }
    this.#bytes += bytes;
    this.#submitted++;
    const tracked: Promise<void> = this.#run(bytes, kind, op).finally(() => {
      this.#inflight.delete(tracked);
      this.#bytes -= bytes;
      release?.(); // the write is over: its buffer may be reused
    });
    this.#inflight.add(tracked);
  }

  /** Waits until every write is done (ends early when the signal aborts); throws the first write error. */
  async drain(): Promise<void> {
    await abortable(Promise.all(this.#inflight), this.signal);
    if (this.#error) throw this.#error;
  }

  /** Resolves once every write started so far has finished (later ones are not waited for); false when a write failed. */
  async barrier(): Promise<boolean> {
    await Promise.all([...this.#inflight]);
    return this.#error === null;
  }

  /**
   * After a failure: writes not yet handed to librbd never start; waits for those it holds (each
   * bounded by the cluster's op timeout), so no buffer is still in use once this resolves.
   */
  async settle(): Promise<void> {
    this.#stop.abort();
    await Promise.all(this.#inflight);
  }

  #fits(bytes: number): boolean {
    return this.#inflight.size < this.#maxWrites && this.#bytes + bytes <= this.#widening.size;
  }

  /** The window is full: it may widen, or go back (../widening.ts). */
  #resize(): boolean {
    if (!this.#widening.decide(this.#maxWrites)) return false;
    this.#maxWrites = Math.ceil((this.o.writesInFlight * this.#widening.size) / this.o.windowBytes);
    return true;
  }

  async #run(bytes: number, kind: WriteKind, op: () => Promise<unknown>): Promise<void> {
    const meter = this.o.meter;
    try {
      if (this.o.writeDelayMs) await delay(this.o.writeDelayMs, this.#stop.signal);
      if (this.#stop.signal.aborted) return;
      const now = this.o.now ?? (() => performance.now());
      const t0 = now();
      meter.ioStarted();
      try {
        await op();
      } finally {
        meter.ioFinished();
      }
      const ms = now() - t0;
      this.#ops++;
      this.#opMs += ms;
      this.#widening.finished(ms, kind === "write");
      if (ms > this.#opMaxMs) this.#opMaxMs = ms;
      meter.io(kind, ms / 1000);
      if (kind === "write") meter.written(this.o.pool, bytes);
    } catch (e) {
      this.#error ??= e;
    }
  }
}
