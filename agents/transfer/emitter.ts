/**
 * What the source sends for the bytes it read: zero detection (protocol.ts `segments`, which skips the
 * per-block scan where `provablyData` shows a read is all data), adjacent zero ranges merged, data
 * segments framed as chunk messages with their CRC-32C, the transfer digest and the counters kept, and
 * the trailer. Reading, and the order reads come back in, are source.ts's job.
 */
import type { TransferMessage } from "../../src/gen/rbdbackup/v1/transfer";
import { noMeter, type TransferMeter } from "./meter";
import { checksum, segments, TransferDigest } from "./protocol";
import { capacityFor, type Piece } from "./read-plan";
import { type ChunkFrame, FRAME, type FramePool, finishChunkFrame, framePool, type MaybeFramed } from "./wire";

/** The emitter's part of the source's options (source.ts `SourceOptions`). */
export interface EmitOptions {
  /** The chunk size: a data segment copied out of a read takes a buffer of at most this capacity. */
  chunkSize: number;
  /** Where bytes sent are counted (metrics), labelled with `meterPool`. */
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
  /**
   * Milliseconds from the first message pulled: the diff's first batch, the diff's end, the last read
   * done (for the log: where a small incremental's transfer time goes).
   */
  ms?: { diffFirst: number; diffDone: number; readsDone: number };
  /** The read window's largest size (reads in flight, in chunks' worth): it grows while reads are slow. */
  readWindowPeak?: number;
}

export function newStats(): SourceStats {
  return { extents: 0, bytesRead: 0, dataChunks: 0, dataBytes: 0, zeroRanges: 0, zeroBytes: 0, position: 0 };
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
export class Emitter {
  readonly digest: TransferDigest;
  #pendingZero: Piece | null = null;

  readonly meter: TransferMeter;
  readonly pool: string;
  readonly frames: FramePool;
  readonly checksum: (data: Uint8Array) => number;

  constructor(
    readonly stats: SourceStats,
    readonly opts: EmitOptions,
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
