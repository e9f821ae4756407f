/**
 * The source side of a transfer: turns an RBD snapshot's diff (or a file) into the message stream.
 *
 * Reads run ahead of the consumer by at most `readsInFlight` chunks' worth of buffers (small reads take
 * small buffers, so up to 2 × readsInFlight of them fly at once), and messages come out in ascending
 * offset order. The consumer (gRPC, which waits for HTTP/2 flow
 * control, or an in-process sink) pulls; nothing is read that it has not made room for, so memory is
 * bounded by readsInFlight × chunkSize whatever the image size.
 */
import type { FileHandle } from "node:fs/promises";
import type { TransferHeader, TransferMessage } from "../../src/gen/rbdbackup/v1/transfer";
import type { Image } from "../ceph";
import { noMeter, type TransferMeter } from "./meter";
import { checksum, segments, TransferDigest } from "./protocol";
import {
  capacityFor,
  type Piece,
  type ReadPlan,
  ReadPlanner,
  SMALL_READS_PER_SLOT,
  split,
  windowFull,
} from "./read-plan";
import { type ChunkFrame, FRAME, type FramePool, finishChunkFrame, framePool, type MaybeFramed } from "./wire";

export interface SourceOptions {
  chunkSize: number;
  readsInFlight: number;
  /** Where bytes read and sent are counted (metrics), labelled with `meterPool`. */
  meter?: TransferMeter;
  meterPool?: string;
  /** Test-only fault: corrupt the data of this chunk (1-based) after its checksum was taken. */
  corruptChunk?: number;
  /** Where read buffers come from (default: the process's pool; the transport gives them back). */
  frames?: FramePool;
  /** The chunk checksum (default: protocol.ts's, CRC-32C from the addon; tests without it pass a JS one). */
  checksum?: (data: Uint8Array) => number;
}

export interface SourceStats {
  /** Extents the diff reported. */
  extents: number;
  bytesRead: number;
  dataChunks: number;
  dataBytes: number;
  zeroRanges: number;
  zeroBytes: number;
  /** End of the furthest range emitted so far (the diff runs in offset order): progress through the image. */
  position: number;
}

export function newStats(): SourceStats {
  return { extents: 0, bytesRead: 0, dataChunks: 0, dataBytes: 0, zeroRanges: 0, zeroBytes: 0, position: 0 };
}

/** Marks a failure of the source's own diff/read (so AUTO mode can fall back to a full backup). */
export class SourceReadError extends Error {
  override readonly name = "SourceReadError";
}

/**
 * A resumed transfer (ResumePoint's answer): only records at or after `offset` are sent, the digest
 * continues from the earlier attempts' prefix digest and the trailer's totals include their counts.
 */
export interface SourceResume {
  offset: number;
  prefixDigest: Uint8Array;
  dataChunks: number;
  dataBytes: number;
  zeroRanges: number;
  zeroBytes: number;
}

/** Builds messages from read pieces and zero ranges, keeps the digest and the counters. */
class Emitter {
  readonly digest: TransferDigest;
  #pendingZero: Piece | null = null;

  readonly meter: TransferMeter;
  readonly pool: string;
  readonly frames: FramePool;
  readonly checksum: (data: Uint8Array) => number;

  constructor(
    readonly stats: SourceStats,
    readonly opts: SourceOptions,
    readonly resume?: SourceResume,
  ) {
    this.frames = opts.frames ?? framePool;
    this.checksum = opts.checksum ?? checksum;
    this.meter = opts.meter ?? noMeter;
    this.pool = opts.meterPool ?? "";
    this.digest = new TransferDigest(resume?.prefixDigest);
    if (resume) stats.position = resume.offset;
  }

  /** Zero ranges are merged with adjacent ones before they are sent. */
  zero(offset: number, length: number, out: TransferMessage[]): void {
    if (length <= 0) return;
    this.stats.position = Math.max(this.stats.position, offset + length);
    const z = this.#pendingZero;
    if (z && z.offset + z.length === offset) {
      z.length += length;
      return;
    }
    this.flushZero(out);
    this.#pendingZero = { offset, length };
  }

  flushZero(out: TransferMessage[]): void {
    const z = this.#pendingZero;
    if (!z) return;
    this.#pendingZero = null;
    this.digest.zero(z.offset, z.length);
    this.stats.zeroRanges++;
    this.stats.zeroBytes += z.length;
    this.meter.zeroRange(this.pool, z.length);
    out.push({ body: { $case: "zero", value: { offset: z.offset, length: z.length } } });
  }

  /**
   * The data and zero messages for `buf` read at `offset`. With `frame` (the pooled buffer `buf` was read
   * into): a buffer of data only is sent as that frame; otherwise each data segment is copied into a
   * frame of its own and `frame` goes back to the pool at once — a sparse image's reads are mostly
   * zeros, and dropping those buffers to the garbage collector made the source allocate (and collect)
   * every buffer it read.
   */
  data(buf: Buffer, offset: number, out: TransferMessage[], frame?: ChunkFrame): void {
    this.stats.position = Math.max(this.stats.position, offset + buf.length);
    const segs = segments(buf, offset);
    const only = segs[0];
    if (frame && segs.length === 1 && only && !only.zero) {
      // All data: the read buffer already is the message (wire.ts, zero-copy chunks).
      this.flushZero(out);
      const crc = this.checksum(buf);
      this.digest.chunk(offset, buf.length, crc);
      this.stats.dataChunks++;
      this.stats.dataBytes += buf.length;
      this.meter.sent(this.pool, buf.length);
      if (this.opts.corruptChunk === this.stats.dataChunks) buf[0] = (buf[0] ?? 0) ^ 0xff;
      const m: MaybeFramed = {
        body: { $case: "chunk", value: { offset, data: buf, crc32: crc, compression: 0, rawLength: 0 } },
      };
      finishChunkFrame(frame, offset, crc);
      m[FRAME] = frame;
      out.push(m);
      return;
    }
    for (const s of segs) {
      if (s.zero) {
        this.zero(s.offset, s.length, out);
        continue;
      }
      this.flushZero(out);
      const own = this.frames.acquire(s.length, capacityFor(s.length, this.opts.chunkSize));
      const data = own.data;
      buf.copy(data, 0, s.offset - offset, s.offset - offset + s.length);
      const crc = this.checksum(data);
      this.digest.chunk(s.offset, s.length, crc);
      this.stats.dataChunks++;
      this.stats.dataBytes += s.length;
      this.meter.sent(this.pool, s.length);
      if (this.opts.corruptChunk === this.stats.dataChunks) data[0] = (data[0] ?? 0) ^ 0xff;
      const m: MaybeFramed = {
        body: { $case: "chunk", value: { offset: s.offset, data, crc32: crc, compression: 0, rawLength: 0 } },
      };
      finishChunkFrame(own, s.offset, crc);
      m[FRAME] = own;
      out.push(m);
    }
    if (frame) this.frames.release(frame); // nothing refers to it any more: every segment was copied
  }

  trailer(out: TransferMessage[]): void {
    this.flushZero(out);
    const s = this.stats;
    const r = this.resume;
    out.push({
      body: {
        $case: "trailer",
        value: {
          dataChunks: s.dataChunks + (r?.dataChunks ?? 0),
          dataBytes: s.dataBytes + (r?.dataBytes ?? 0),
          zeroRanges: s.zeroRanges + (r?.zeroRanges ?? 0),
          zeroBytes: s.zeroBytes + (r?.zeroBytes ?? 0),
          digest: this.digest.digest(),
        },
      },
    });
  }
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
  yield* readAll(planner.flush());
  if (o.fullCopy && cursor < size) win.zero(cursor, size - cursor);
  while (win.size > 0) yield* await win.shift();
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
