/**
 * The rules of the message stream as the destination enforces them (every message comes from the
 * network): exactly one header first, for this cluster; then chunks and zero ranges inside the image,
 * each chunk's checksum verified before anything is written (DATA_LOSS otherwise); then exactly one
 * trailer, whose counts and digest over the records received must match before anything commits.
 */
import { AppError, dataLoss, failedPrecondition, invalidArgument, Status } from "../../../src/common/errors";
import {
  type TransferHeader,
  TransferKind,
  type TransferMessage,
  type TransferTrailer,
} from "../../../src/gen/rbdbackup/v1/transfer";
import type { TransferMeter } from "../meter";
import { checksumPieces, checksum as crc32c, TransferDigest, validateHeader } from "../protocol";
import type { Counts, ResumeBase } from "./checkpoint";
import { checkHeaderCompression } from "./decompress";

/** Reads and checks the first message: a valid header, for a cluster with this fsid. */
export async function readHeader(
  it: AsyncIterator<TransferMessage>,
  cluster: { fsid: string; clusterName: string },
): Promise<TransferHeader> {
  const first = await it.next();
  if (first.done || first.value.body?.$case !== "header")
    throw invalidArgument("the transfer must start with a header");
  const h = validateHeader(first.value.body.value);
  checkHeaderCompression(h);
  if (h.expectedFsid && h.expectedFsid !== cluster.fsid) {
    throw failedPrecondition(
      `this agent serves cluster ${cluster.clusterName} (fsid ${cluster.fsid}), not the expected fsid ${h.expectedFsid}`,
    );
  }
  return h;
}

/**
 * A message that passed the checks: what to write. A chunk checked with `blockSize` set carries the
 * CRC-32C of each digest-map block it meets (`pieces`, see checksumPieces): a view valid until the
 * next message is checked.
 */
export type Checked =
  | { $case: "chunk"; offset: number; length: number; data: Buffer; pieces: Uint32Array | undefined }
  | { $case: "zero"; offset: number; length: number; data: null; pieces: undefined }
  | { $case: "trailer"; offset: number; length: number; data: null; pieces: undefined };
// Every Checked is built with the same keys in the same order: the receive loop, which runs for every
// message of every transfer, then sees objects of one shape (V8 re-optimised it when a new one came).

/** Checks the messages after the header, in order, and keeps the counts and digest of what arrived. */
export class StreamChecks {
  #digest = new TransferDigest();
  #trailer: TransferTrailer | null = null;
  chunks = 0;
  dataBytes = 0;
  zeroRanges = 0;
  zeroBytes = 0;
  /** A resumed transfer: records must start at or after this offset (sink/resume.ts). */
  minOffset = 0;
  /**
   * The digest map's block size when the sink builds one (sink/digests.ts), else 0: the chunk's CRC
   * then comes with its blocks' CRCs from the same pass over the bytes.
   */
  blockSize = 0;
  #pieces: Uint32Array | null = null;
  /** Where the last record ended: a resumable transfer's records must come after it (see #inOrder). */
  #end = 0;

  constructor(
    readonly h: TransferHeader,
    readonly meter: TransferMeter,
    /** Label of the metrics (the destination pool). */
    readonly pool: string,
    /** Injected by tests without the addon (the CRC-32C in plain JS). */
    readonly checksum?: (data: Uint8Array) => number,
  ) {
    meter.receiving?.(pool);
  }

  /** Checks one message; throws INVALID_ARGUMENT or DATA_LOSS for one that must not be written. */
  next(m: TransferMessage): Checked {
    const body = m.body;
    if (this.#trailer) throw invalidArgument("a message followed the trailer");
    // What decodes without a body: a kind of message a newer source sends (its field unknown here), or
    // an empty one; said so, as the version skew it most likely is.
    if (!body) {
      throw new AppError(
        Status.UNIMPLEMENTED,
        "a message without a body this agent knows: a kind sent by a newer agent version (upgrade this one), or an empty message",
      );
    }
    const size = this.h.imageSize;
    switch (body.$case) {
      case "header":
        throw invalidArgument("a second header in the same transfer");
      case "chunk": {
        const c = body.value;
        // Compressed chunks were decompressed before (decompress.ts): one still compressed means NONE.
        if ((c.compression ?? 0) !== 0)
          throw invalidArgument(`chunk at ${c.offset} is compressed in a transfer whose header says compression NONE`);
        const len = c.data.length;
        if (len === 0 || len > this.h.chunkSize)
          throw invalidArgument(`chunk at ${c.offset}: ${len} bytes, limit ${this.h.chunkSize}`);
        if (!Number.isSafeInteger(c.offset) || c.offset + len > size || c.offset < this.minOffset) {
          throw invalidArgument(`chunk at ${c.offset}+${len} lies beyond the image size ${size}${this.#before()}`);
        }
        this.#inOrder(c.offset, len, "chunk");
        let pieces: Uint32Array | undefined;
        let crc: number;
        if (this.blockSize > 0) {
          pieces = this.#piecesFor(len);
          crc = checksumPieces(c.data, c.offset, this.blockSize, pieces, this.checksum);
        } else crc = (this.checksum ?? crc32c)(c.data) >>> 0;
        if (crc !== c.crc32) {
          this.meter.checksumFailure(this.pool);
          throw dataLoss(`checksum mismatch in the chunk at offset ${c.offset} (${len} bytes): corrupted in transit`);
        }
        this.#digest.chunk(c.offset, len, crc);
        this.meter.received(this.pool, len);
        this.chunks++;
        this.dataBytes += len;
        return {
          $case: "chunk",
          offset: c.offset,
          length: len,
          data: Buffer.from(c.data.buffer, c.data.byteOffset, c.data.byteLength),
          pieces,
        };
      }
      case "zero": {
        const z = body.value;
        if (
          !Number.isSafeInteger(z.offset) ||
          !Number.isSafeInteger(z.length) ||
          z.length <= 0 ||
          z.offset + z.length > size ||
          z.offset < this.minOffset
        ) {
          throw invalidArgument(
            `zero range ${z.offset}+${z.length} is empty or lies beyond the image size ${size}${this.#before()}`,
          );
        }
        this.#inOrder(z.offset, z.length, "zero range");
        this.#digest.zero(z.offset, z.length);
        this.zeroRanges++;
        this.zeroBytes += z.length;
        return { $case: "zero", offset: z.offset, length: z.length, data: null, pieces: undefined };
      }
      case "trailer":
        this.#trailer = body.value;
        return { $case: "trailer", offset: 0, length: 0, data: null, pieces: undefined };
    }
  }

  /** Room for the CRCs of the blocks a chunk of `len` bytes meets (reused from chunk to chunk). */
  #piecesFor(len: number): Uint32Array {
    const need = Math.ceil(len / this.blockSize) + 1;
    if (!this.#pieces || this.#pieces.length < need)
      this.#pieces = new Uint32Array(Math.max(need, Math.ceil(this.h.chunkSize / this.blockSize) + 1));
    return this.#pieces;
  }

  /**
   * Records in ascending, non-overlapping offset order (as every source sends them), required where it
   * matters. A resumable transfer's checkpoint says "everything below this offset is written": a record
   * below the end of the one before would make a checkpoint taken after it claim what has not come yet —
   * a resume would then skip it and commit zeros there, under a digest that still matches. A stream over
   * an existing volume (writesEveryByte) must write every byte, checked by the sum of its records: a
   * range sent twice would make up for one skipped, the volume's old data left there. INVALID_ARGUMENT.
   */
  #inOrder(offset: number, length: number, what: string): void {
    if (!this.h.resumable && !writesEveryByte(this.h)) return;
    if (offset < this.#end) {
      const which = this.h.resumable ? "a resumable transfer's" : "a transfer over an existing volume's";
      throw invalidArgument(
        `${what} at ${offset}+${length} after a record ending at ${this.#end}: ${which} records must come in ascending, non-overlapping offset order`,
      );
    }
    this.#end = offset + length;
  }

  #before(): string {
    return this.minOffset > 0 ? ` or before the resume offset ${this.minOffset}` : "";
  }

  /** Continues the counts and digest of the earlier attempts (a resumed transfer, sink/resume.ts). */
  resumeFrom(base: ResumeBase): void {
    this.#digest = new TransferDigest(base.prefixDigest);
    this.chunks = base.counts.dataChunks;
    this.dataBytes = base.counts.dataBytes;
    this.zeroRanges = base.counts.zeroRanges;
    this.zeroBytes = base.counts.zeroBytes;
    this.minOffset = base.offset;
    this.#end = base.offset;
  }

  /** The digest of the records so far (a checkpoint's prefix digest) and the counts. */
  prefixDigest(): Buffer {
    return this.#digest.snapshot();
  }

  counts(): Counts {
    return {
      dataChunks: this.chunks,
      dataBytes: this.dataBytes,
      zeroRanges: this.zeroRanges,
      zeroBytes: this.zeroBytes,
    };
  }

  /** At the end of the stream: a stream without its trailer was cut short (the source gave up or is gone). */
  requireTrailer(): void {
    if (!this.#trailer)
      throw new AppError(Status.UNAVAILABLE, "the transfer stream ended before its trailer (source gone?)");
  }

  /** The trailer's counts and digest against what arrived (DATA_LOSS: lost, duplicated or reordered). */
  verifyTrailer(): void {
    this.requireTrailer();
    const t = this.#trailer as TransferTrailer;
    if (
      t.dataChunks !== this.chunks ||
      t.dataBytes !== this.dataBytes ||
      t.zeroRanges !== this.zeroRanges ||
      t.zeroBytes !== this.zeroBytes
    ) {
      throw dataLoss(
        `the trailer counts ${t.dataChunks} chunks / ${t.dataBytes} bytes / ${t.zeroRanges} zero ranges / ${t.zeroBytes} zero bytes, received ${this.chunks} / ${this.dataBytes} / ${this.zeroRanges} / ${this.zeroBytes}`,
      );
    }
    if (!Buffer.from(t.digest).equals(this.#digest.digest())) {
      throw dataLoss(
        "the transfer digest does not match the records received (lost, duplicated or reordered messages)",
      );
    }
    // A stream that writes over an existing volume covers every byte of it with data or zeros (source.ts
    // rbdMessages fullCopy): a gap would leave the volume's old data there under a restore said complete.
    if (writesEveryByte(this.h) && this.dataBytes + this.zeroBytes !== this.h.imageSize) {
      throw dataLoss(
        `the stream covers ${this.dataBytes} bytes of data and ${this.zeroBytes} of zeros, not the image's ${this.h.imageSize}: a restore over an existing volume must write every byte (a source that skipped a range)`,
      );
    }
  }
}

/** Transfers over an existing volume whose source sends every byte: RESTORE_ORIGINAL, a full-copy FAILBACK. */
export const writesEveryByte = (h: TransferHeader): boolean =>
  h.kind === TransferKind.RESTORE_ORIGINAL || (h.kind === TransferKind.FAILBACK && !h.fromSnapshot);
