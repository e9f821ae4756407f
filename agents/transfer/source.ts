/**
 * The source side of a transfer: turns an RBD snapshot's diff (or a file) into the message stream.
 *
 * Reads run ahead of the consumer by at most `readsInFlight` chunks' worth of buffers (small reads take
 * small buffers, so up to 2 × readsInFlight of them fly at once), and messages come out in ascending
 * offset order; emitter.ts turns what was read into messages. The consumer (gRPC, which waits for HTTP/2 flow
 * control, or an in-process sink) pulls; nothing is read that it has not made room for, so memory is
 * bounded by maxReadsInFlight × chunkSize whatever the image size: an image's reads widen the window
 * from `readsInFlight` up to `maxReadsInFlight` only while they are slow and widening pays (widening.ts,
 * the destination's write window's rule); a file's stay at `readsInFlight`.
 */
import type { FileHandle } from "node:fs/promises";
import type { TransferHeader, TransferMessage } from "../../src/gen/rbdbackup/v1/transfer";
import { type Extent, type Image, prunedDiff } from "../ceph";
import { type EmitOptions, Emitter, type SourceResume, type SourceStats } from "./emitter";
import {
  capacityFor,
  type Piece,
  type ReadPlan,
  ReadPlanner,
  SMALL_READS_PER_SLOT,
  split,
  windowFull,
} from "./read-plan";
import { Widening } from "./widening";
import { type ChunkFrame, type FramePool, framePool } from "./wire";

export { newStats, type SourceResume, type SourceStats } from "./emitter";

export interface SourceOptions extends EmitOptions {
  /** Reads ahead of the consumer, in chunks' worth of buffers (read-plan.ts `windowFull`). */
  readsInFlight: number;
  /** While reads are slow the window grows up to this many (the module comment); absent: fixed. */
  maxReadsInFlight?: number;
  /** Milliseconds now (default performance.now); tests give their own clock. */
  now?: () => number;
}

/** Marks a failure of the source's own diff/read (so AUTO mode can fall back to a full backup). */
export class SourceReadError extends Error {
  override readonly name = "SourceReadError";
}

/**
 * One slot of the window, of one shape whatever it holds (a zero range, or a read's buffer and the
 * pieces of it to send — `parts` null: all of it), so the code that handles slots sees one map.
 */
class Item {
  constructor(
    readonly zero: boolean,
    readonly offset: number,
    readonly length: number,
    readonly buf: Buffer | null,
    readonly frame: ChunkFrame | null,
    readonly parts: Piece[] | null,
  ) {}
}

/**
 * An ordered window of work: reads start when pushed; items are turned into messages (digest,
 * zero merging) strictly in push order, when they reach the head.
 */
class Window {
  #slots: Array<Promise<Item>> = [];
  #bytes: number[] = [];
  #held = 0;
  constructor(readonly em: Emitter) {}
  /** `bytes`: the buffer capacity the slot holds until it is shifted. */
  push(p: Promise<Item>, bytes = 0): void {
    p.catch(() => {}); // awaited in order; silence "unhandled" for slots behind a failed one
    this.#slots.push(p);
    this.#bytes.push(bytes);
    this.#held += bytes;
  }
  zero(offset: number, length: number): void {
    if (length > 0) this.push(Promise.resolve(new Item(true, offset, length, null, null, null)));
  }
  get size(): number {
    return this.#slots.length;
  }
  /** Bytes of read buffers the slots hold. */
  get held(): number {
    return this.#held;
  }
  async shift(): Promise<TransferMessage[]> {
    this.#held -= this.#bytes.shift() ?? 0;
    const item = await this.#slots.shift();
    const out: TransferMessage[] = [];
    if (item) this.#emit(item, out);
    return out;
  }
  #emit(item: Item, out: TransferMessage[]): void {
    const buf = item.buf;
    if (item.zero || !buf) this.em.zero(item.offset, item.length, out);
    else if (item.parts) {
      for (const p of item.parts)
        this.em.data(buf.subarray(p.offset - item.offset, p.offset - item.offset + p.length), p.offset, out);
      if (item.frame) this.em.frames.release(item.frame); // the parts were copied out of it
    } else this.em.data(buf, item.offset, out, item.frame ?? undefined);
  }
  /** What is left once all slots are drained: a pending zero range, then the trailer. */
  finish(): TransferMessage[] {
    const out: TransferMessage[] = [];
    this.em.trailer(out);
    return out;
  }
}

/**
 * One step of a diff's transfer, in send order: a read to start (`plan`, taking a buffer of `capacity`
 * bytes from the frame pool), or a zero range (no plan, no buffer).
 */
class Step {
  constructor(
    readonly plan: ReadPlan | null,
    readonly offset: number,
    readonly length: number,
    readonly capacity: number,
  ) {}
}

interface DiffScope {
  fromSnapshot?: string;
  fullCopy: boolean;
  includeParent?: boolean;
  wholeObject?: boolean;
  /** Resume: only what lies at or after resume.offset (extents are clipped there). */
  resume?: SourceResume;
}

/**
 * The per-extent work of rbdMessages, in small methods of one class: the generator around it only
 * waits and yields. An agent runs one transfer after another; a single generator holding all of this
 * was re-optimised by V8 after most transfers (150–360 ms of compiler time each, the source agent's
 * largest CPU cost in a small incremental — README "Measured", sixth round), whereas these methods
 * see objects of one shape each and stay optimised.
 */
class DiffSource {
  readonly em: Emitter;
  readonly win: Window;
  readonly planner: ReadPlanner;
  readonly frames: FramePool;
  readonly fullCopy: boolean;
  readonly from: number;
  readonly size: number;
  readonly chunkSize: number;
  /** The read window now (widening.ts: from readsInFlight up to maxReadsInFlight), and its count bound. */
  readsInFlight: number;
  maxCount: number;
  readonly widening: Widening;
  readonly now: () => number;
  /** When the consumer pulled past the header (the stats' ms count from there). */
  t0 = performance.now();
  readonly ms = { diffFirst: -1, diffDone: -1, readsDone: -1 };
  cursor: number;
  /** Steps of the current batch, reused from batch to batch. */
  readonly steps: Step[] = [];

  constructor(
    readonly image: Image,
    o: DiffScope,
    opts: SourceOptions,
    readonly stats: SourceStats,
    size: number,
  ) {
    this.em = new Emitter(stats, opts, o.resume);
    this.win = new Window(this.em);
    this.frames = opts.frames ?? framePool;
    this.fullCopy = o.fullCopy;
    this.from = o.resume?.offset ?? 0;
    this.cursor = this.from;
    this.size = size;
    this.chunkSize = opts.chunkSize;
    this.readsInFlight = opts.readsInFlight;
    this.maxCount = opts.readsInFlight * SMALL_READS_PER_SLOT;
    this.now = opts.now ?? (() => performance.now());
    this.widening = new Widening({
      base: opts.readsInFlight,
      max: Math.max(opts.readsInFlight, opts.maxReadsInFlight ?? opts.readsInFlight),
      now: this.now,
    });
    stats.readWindowPeak = opts.readsInFlight;
    // A full copy sends the gaps between extents as zero ranges, in order: each extent is read alone there.
    this.planner = new ReadPlanner(opts.chunkSize, o.fullCopy ? 0 : undefined);
    stats.ms = this.ms;
  }

  since(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }

  /** The diff's next batch of extents, null at its end (a failure is the source's: SourceReadError). */
  async batch(diff: AsyncGenerator<Extent[], void, undefined>): Promise<Extent[] | null> {
    let step: IteratorResult<Extent[], void>;
    try {
      step = await diff.next();
    } catch (e) {
      throw new SourceReadError(`reading the diff of ${this.image.label}: ${(e as Error).message}`, { cause: e });
    }
    if (this.ms.diffFirst < 0) this.ms.diffFirst = this.since();
    return step.done ? null : step.value;
  }

  /** The steps for a batch of extents, in send order (this.steps, refilled). */
  plan(extents: Extent[]): Step[] {
    const steps = this.steps;
    steps.length = 0;
    for (let i = 0; i < extents.length; i++) {
      const x = extents[i] as Extent;
      this.extent(x.offset, x.length, x.exists, steps);
    }
    return steps;
  }

  extent(wholeOffset: number, wholeLength: number, exists: boolean, steps: Step[]): void {
    const end = wholeOffset + wholeLength;
    if (end <= this.from) return; // sent by an earlier attempt
    const offset = Math.max(wholeOffset, this.from);
    const length = end - offset;
    this.stats.extents++;
    if (this.fullCopy && offset > this.cursor) {
      this.reads(this.planner.flush(), steps); // the reads gathered so far go first: the window keeps offset order
      steps.push(new Step(null, this.cursor, offset - this.cursor, 0));
    }
    if (end > this.cursor) this.cursor = end;
    if (!exists) {
      this.reads(this.planner.flush(), steps);
      steps.push(new Step(null, offset, length, 0));
    } else this.reads(this.planner.add(offset, length), steps);
  }

  /** The steps once the diff ended: the last read gathered, the tail of a full copy. */
  last(): Step[] {
    const steps = this.steps;
    steps.length = 0;
    this.ms.diffDone = this.since();
    this.reads(this.planner.flush(), steps);
    if (this.fullCopy && this.cursor < this.size) steps.push(new Step(null, this.cursor, this.size - this.cursor, 0));
    return steps;
  }

  reads(plans: ReadPlan[], steps: Step[]): void {
    for (let i = 0; i < plans.length; i++) {
      const p = plans[i] as ReadPlan;
      steps.push(new Step(p, p.offset, p.length, capacityFor(p.length, this.chunkSize)));
    }
  }

  /** Whether the window must give back messages before `step` may start. */
  full(step: Step): boolean {
    const win = this.win;
    // Zero ranges hold no buffer: bounded by count only.
    const full = () => (step.plan ? windowFull(win.size, win.held, step.capacity, this) : win.size >= this.maxCount);
    while (full()) if (!this.resize()) return true;
    return false;
  }

  /** The window is full: it may widen, or go back (widening.ts). */
  resize(): boolean {
    if (!this.widening.decide(this.readsInFlight)) return false;
    this.readsInFlight = this.widening.size;
    this.maxCount = this.readsInFlight * SMALL_READS_PER_SLOT;
    this.stats.readWindowPeak = this.widening.peak;
    return true;
  }

  /** Starts `step` (there is room: see full()). */
  start(step: Step): void {
    const p = step.plan;
    if (!p) {
      this.win.zero(step.offset, step.length);
      return;
    }
    const frame = this.frames.acquire(p.length, step.capacity);
    this.win.push(this.read(p, frame), step.capacity);
  }

  async read(p: ReadPlan, frame: ChunkFrame): Promise<Item> {
    const em = this.em;
    const buf = frame.data;
    const t0 = this.now();
    em.meter.ioStarted();
    let n: number;
    try {
      n = await this.image.read(buf, p.offset);
    } catch (err) {
      em.meter.ioFinished();
      throw new SourceReadError(`reading ${this.image.label} at ${p.offset}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    em.meter.ioFinished();
    // librbd clips a read that runs past the image's end: the frame's tail would go out holding an
    // earlier chunk's bytes (frames are reused), checksummed as if read. Plans come from the snapshot's
    // diff, inside its size, so this is a snapshot that shrank under us or a librbd fault: stop.
    if (n !== buf.length) {
      throw new SourceReadError(
        `reading ${this.image.label} at ${p.offset}: got ${n} of ${buf.length} bytes (a short read: the image ends before it)`,
      );
    }
    const ms = this.now() - t0;
    this.widening.finished(ms);
    em.meter.io("read", ms / 1000);
    em.meter.read(em.pool, n);
    this.stats.bytesRead += n;
    return new Item(false, p.offset, p.length, buf, frame, p.parts);
  }
}

/**
 * Messages for an image opened at the snapshot to send: the diff from `fromSnapshot` (or from
 * creation). With `fullCopy`, every byte of [0, size) is covered: gaps between extents become zero
 * ranges (used to restore over an existing volume). `includeParent: false` (a clone): only the clone's
 * own extents, not what it reads through from its parent (a failback's changes since the failover);
 * with `wholeObject`, whole objects (a clone's object, once it exists, hides the parent's whole object —
 * a trimmed one too, which holds no extents).
 */
export async function* rbdMessages(
  image: Image,
  header: TransferHeader,
  o: DiffScope,
  opts: SourceOptions,
  stats: SourceStats,
): AsyncGenerator<TransferMessage> {
  const s = new DiffSource(image, o, opts, stats, header.imageSize);
  yield { body: { $case: "header", value: header } };
  s.t0 = performance.now();
  // The exact diff, walked only over the objects that exist (at either end, for an incremental) when the
  // object maps can say which (pruned-diff.ts; never by "written since", which a rollback makes wrong).
  // An incremental reads its from-snapshot's map through a handle of its own (this one never moves).
  const diff = prunedDiff(image, {
    ...(o.fromSnapshot ? { fromSnapshot: o.fromSnapshot } : {}),
    ...(o.includeParent === false ? { includeParent: false } : {}),
    ...(o.wholeObject ? { wholeObject: true } : {}),
  });
  // A transfer that stops early (cancelled, refused, a failed read, a lost peer) returns this generator at
  // a yield: the diff is closed here, or its native iterator would stay parked inside rbd_diff_iterate2,
  // holding the image handle (no rbd_close) until garbage collection, while the caller removes the
  // snapshot or starts another diff on the same handle.
  try {
    // Each batch of the diff, then (null: the diff ended) what is left: the last read gathered, a full copy's tail.
    for (;;) {
      const extents = await s.batch(diff);
      for (const step of extents ? s.plan(extents) : s.last()) {
        while (s.full(step)) yield* await s.win.shift();
        s.start(step);
      }
      if (!extents) break;
    }
  } finally {
    await diff.return();
  }
  while (s.win.size > 0) yield* await s.win.shift();
  s.ms.readsDone = s.since();
  yield* s.win.finish();
}

/**
 * Messages for a file or block device: a full copy of [0, size), reading `chunkSize` at a time with
 * `readsInFlight` reads ahead; zero blocks become zero ranges (never written into the new base image),
 * and every offset stays absolute, so skipped blocks never shift the data after them.
 */
export async function* fileMessages(
  file: FileHandle,
  header: TransferHeader,
  opts: SourceOptions,
  stats: SourceStats,
): AsyncGenerator<TransferMessage> {
  const em = new Emitter(stats, opts);
  const win = new Window(em);
  const size = header.imageSize;
  yield { body: { $case: "header", value: header } };
  for (const p of split(0, size, opts.chunkSize)) {
    stats.extents++;
    const buf = Buffer.allocUnsafe(p.length);
    win.push(
      (async (): Promise<Item> => {
        let got = 0;
        while (got < p.length) {
          const { bytesRead } = await file.read(buf, got, p.length - got, p.offset + got);
          if (bytesRead === 0)
            throw new SourceReadError(`the file ended at ${p.offset + got}, before its size ${size}`);
          got += bytesRead;
        }
        stats.bytesRead += got;
        em.meter.read(em.pool, got);
        return new Item(false, p.offset, p.length, buf, null, null);
      })(),
    );
    while (win.size >= opts.readsInFlight) yield* await win.shift();
  }
  while (win.size > 0) yield* await win.shift();
  yield* win.finish();
}
