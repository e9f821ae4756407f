/**
 * The source side of a transfer: turns an RBD snapshot's diff (or a file) into the message stream.
 *
 * Reads run ahead of the consumer by at most `readsInFlight` chunks' worth of buffers (small reads take
 * small buffers, so up to 2 × readsInFlight of them fly at once), and messages come out in ascending
 * offset order; emitter.ts turns what was read into messages. The consumer (gRPC, which waits for HTTP/2 flow
 * control, or an in-process sink) pulls; nothing is read that it has not made room for, so memory is
 * bounded by readsInFlight × chunkSize whatever the image size.
 */
import type { FileHandle } from "node:fs/promises";
import type { TransferHeader, TransferMessage } from "../../src/gen/rbdbackup/v1/transfer";
import type { Image } from "../ceph";
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
import { type ChunkFrame, framePool } from "./wire";

export { newStats, type SourceResume, type SourceStats } from "./emitter";

export interface SourceOptions extends EmitOptions {
  /** Reads ahead of the consumer, in chunks' worth of buffers (read-plan.ts `windowFull`). */
  readsInFlight: number;
}

/** Marks a failure of the source's own diff/read (so AUTO mode can fall back to a full backup). */
export class SourceReadError extends Error {
  override readonly name = "SourceReadError";
}

type Item =
  | { zero: true; offset: number; length: number }
  /** `parts`: the pieces of `buf` to send (a read that covered several extents), null: all of it. */
  | { zero: false; offset: number; buf: Buffer; frame?: ChunkFrame; parts?: Piece[] | null };

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
    if (length > 0) this.push(Promise.resolve({ zero: true, offset, length }));
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
    if (!item) return out;
    if (item.zero) this.em.zero(item.offset, item.length, out);
    else if (item.parts) {
      for (const p of item.parts)
        this.em.data(item.buf.subarray(p.offset - item.offset, p.offset - item.offset + p.length), p.offset, out);
      if (item.frame) this.em.frames.release(item.frame); // the parts were copied out of it
    } else this.em.data(item.buf, item.offset, out, item.frame);
    return out;
  }
  /** What is left once all slots are drained: a pending zero range, then the trailer. */
  finish(): TransferMessage[] {
    const out: TransferMessage[] = [];
    this.em.trailer(out);
    return out;
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
  o: {
    fromSnapshot?: string;
    fullCopy: boolean;
    includeParent?: boolean;
    wholeObject?: boolean;
    /** Resume: only what lies at or after resume.offset (extents are clipped there). */
    resume?: SourceResume;
  },
  opts: SourceOptions,
  stats: SourceStats,
): AsyncGenerator<TransferMessage> {
  const em = new Emitter(stats, opts, o.resume);
  const win = new Window(em);
  const size = header.imageSize;
  const frames = opts.frames ?? framePool;
  const from = o.resume?.offset ?? 0;
  let cursor = from;
  // A full copy sends the gaps between extents as zero ranges, in order: each extent is read alone there.
  const planner = new ReadPlanner(opts.chunkSize, o.fullCopy ? 0 : undefined);
  /** Starts the planned reads (waiting for room in the window), yielding what the window gives back. */
  async function* readAll(plans: ReadPlan[]): AsyncGenerator<TransferMessage> {
    for (const p of plans) {
      const capacity = capacityFor(p.length, opts.chunkSize);
      while (windowFull(win.size, win.held, capacity, opts)) yield* await win.shift();
      const frame = frames.acquire(p.length, capacity);
      const buf = frame.data;
      const t0 = performance.now();
      em.meter.ioStarted();
      win.push(
        image.read(buf, p.offset).then(
          (n): Item => {
            em.meter.ioFinished();
            em.meter.io("read", (performance.now() - t0) / 1000);
            em.meter.read(em.pool, n);
            stats.bytesRead += n;
            return { zero: false, offset: p.offset, buf, frame, parts: p.parts };
          },
          (err: Error) => {
            em.meter.ioFinished();
            throw new SourceReadError(`reading ${image.label} at ${p.offset}: ${err.message}`, { cause: err });
          },
        ),
        capacity,
      );
    }
  }
  yield { body: { $case: "header", value: header } };

  const t0 = performance.now();
  const ms = { diffFirst: -1, diffDone: -1, readsDone: -1 };
  stats.ms = ms;
  const since = () => Math.round((performance.now() - t0) * 10) / 10;
  const diff = image.diff({
    ...(o.fromSnapshot ? { fromSnapshot: o.fromSnapshot } : {}),
    ...(o.includeParent === false ? { includeParent: false } : {}),
    ...(o.wholeObject ? { wholeObject: true } : {}),
  });
  for (;;) {
    let step: IteratorResult<Array<{ offset: number; length: number; exists: boolean }>>;
    try {
      step = await diff.next();
    } catch (e) {
      throw new SourceReadError(`reading the diff of ${image.label}: ${(e as Error).message}`, { cause: e });
    }
    if (ms.diffFirst < 0) ms.diffFirst = since();
    if (step.done) break;
    for (const whole of step.value) {
      if (whole.offset + whole.length <= from) continue; // sent by an earlier attempt
      const e = whole.offset >= from ? whole : { ...whole, offset: from, length: whole.offset + whole.length - from };
      stats.extents++;
      if (o.fullCopy && e.offset > cursor) {
        yield* readAll(planner.flush()); // the reads gathered so far go first: the window keeps offset order
        win.zero(cursor, e.offset - cursor);
      }
      cursor = Math.max(cursor, e.offset + e.length);
      if (!e.exists) {
        yield* readAll(planner.flush());
        win.zero(e.offset, e.length);
      } else {
        yield* readAll(planner.add(e.offset, e.length));
      }
      // Zero ranges hold no buffer: bounded by count only.
      while (win.size >= opts.readsInFlight * SMALL_READS_PER_SLOT) yield* await win.shift();
    }
  }
  ms.diffDone = since();
  yield* readAll(planner.flush());
  if (o.fullCopy && cursor < size) win.zero(cursor, size - cursor);
  while (win.size > 0) yield* await win.shift();
  ms.readsDone = since();
  yield* win.finish();
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
        return { zero: false, offset: p.offset, buf };
      })(),
    );
    while (win.size >= opts.readsInFlight) yield* await win.shift();
  }
  while (win.size > 0) yield* await win.shift();
  yield* win.finish();
}
