/**
 * The aio write window: many librbd writes in flight, bounded by count (`writesInFlight`) and by the
 * bytes of chunk data they hold (`windowBytes`). `submit` waits for room before it starts a write, so
 * the receive loop — and through it HTTP/2 flow control and the source — runs only as far ahead as
 * the window allows.
 *
 * Slow writes widen it, up to `maxWindowBytes`: when the window is full and the writes finished since
 * it last changed (at least as many as it holds) took `growAtMs` or more on average, it grows by half
 * its starting size, the count in proportion (the write size stays). Writes that slow are waiting on
 * round trips (OSD or network latency), where more in flight means more throughput; writes that keep
 * up (a local, CPU-bound cluster: 8–22 ms) never grow it, so the memory stays that of `windowBytes`.
 * It never shrinks within a transfer; each transfer starts at `windowBytes`. A chunk's buffer goes back to its pool (its `release`) exactly once: after
 * librbd wrote it, or at once when the write never started.
 *
 * The first failed write stops the window: the next `submit` or `drain` throws its error. `settle`
 * (on any failure) keeps writes that have not started from starting and waits for those librbd holds.
 */
import { delay } from "../../../src/common/retry";
import type { TransferMeter } from "../meter";
import { abortable } from "./abort";

export interface WriteWindowOptions {
  writesInFlight: number;
  windowBytes: number;
  /** The window may grow to this many bytes while writes are slow (default: `windowBytes`, no growth). */
  maxWindowBytes?: number;
  /** Mean write latency (ms) at or above which a full window grows (default GROW_AT_MS). */
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

/** A 2 MiB write on a local cluster takes 8–22 ms even CPU-bound (README, Measured); 0–100 ms of OSD latency made it ~200. */
export const GROW_AT_MS = 50;

export class WriteWindow {
  readonly #inflight = new Set<Promise<void>>();
  #bytes = 0;
  #error: unknown = null;
  #submitted = 0;
  /** Milliseconds librbd took over all finished ops, and the longest one (for the log). */
  #opMs = 0;
  #opMaxMs = 0;
  #ops = 0;
  /** The window now (bytes, writes), and the largest it was. */
  #windowBytes: number;
  #maxWrites: number;
  #peakBytes: number;
  /** Ops finished since the window last changed, and their total latency (ms). */
  #sampleOps = 0;
  #sampleMs = 0;
  readonly #stop = new AbortController();

  /** `signal`: waits for room end when it aborts (with its reason). */
  constructor(
    readonly o: WriteWindowOptions,
    readonly signal: AbortSignal,
  ) {
    this.#windowBytes = o.windowBytes;
    this.#maxWrites = o.writesInFlight;
    this.#peakBytes = o.windowBytes;
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
      windowPeakMiB: r(this.#peakBytes / 2 ** 20),
    };
  }

  /** The window's size now: bytes and writes. */
  get size(): { bytes: number; writes: number } {
    return { bytes: this.#windowBytes, writes: this.#maxWrites };
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
        if (this.#grow()) continue;
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
    return this.#inflight.size < this.#maxWrites && this.#bytes + bytes <= this.#windowBytes;
  }

  /** The window is full: widen it if the writes are slow (see the module comment). */
  #grow(): boolean {
    const max = this.o.maxWindowBytes ?? this.o.windowBytes;
    if (this.#windowBytes >= max) return false;
    if (this.#sampleOps < this.#maxWrites) return false; // not yet a window's worth at this size
    if (this.#sampleMs / this.#sampleOps < (this.o.growAtMs ?? GROW_AT_MS)) return false;
    this.#windowBytes = Math.min(max, this.#windowBytes + Math.ceil(this.o.windowBytes / 2));
    this.#maxWrites = Math.ceil((this.o.writesInFlight * this.#windowBytes) / this.o.windowBytes);
    this.#peakBytes = Math.max(this.#peakBytes, this.#windowBytes);
    this.#sampleOps = 0;
    this.#sampleMs = 0;
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
      this.#sampleOps++;
      this.#sampleMs += ms;
      if (ms > this.#opMaxMs) this.#opMaxMs = ms;
      meter.io(kind, ms / 1000);
      if (kind === "write") meter.written(this.o.pool, bytes);
    } catch (e) {
      this.#error ??= e;
    }
  }
}
