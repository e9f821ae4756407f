/**
 * A faster encoder for the one message that carries bulk data. The generic protobuf writer grows and
 * re-joins buffers for every 1 MiB chunk (copies plus garbage); a DataChunk's wire form is simple, so
 * it is laid out here in one exactly-sized Buffer with a single copy of the data. Every other message
 * goes through the generated encoder. The bytes are the standard encoding (the generated decoder
 * reads them; a unit test checks both agree).
 */
import { TransferMessage } from "../../src/gen/rbdbackup/v1/transfer";
import { BufferPool } from "./buffer-pool";

function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

/** The size of a DataChunk's compression and raw_length fields (each written only when not 0). */
function compressionFieldsSize(compression: number, rawLength: number): number {
  return (compression !== 0 ? 1 + varintSize(compression) : 0) + (rawLength !== 0 ? 1 + varintSize(rawLength) : 0);
}

/** Writes a DataChunk's compression and raw_length fields at `p`; returns the position after them. */
function writeCompressionFields(buf: Buffer, p: number, compression: number, rawLength: number): number {
  if (compression !== 0) {
    buf[p++] = 0x20; // compression: field 4, varint
    p = writeVarint(buf, p, compression);
  }
  if (rawLength !== 0) {
    buf[p++] = 0x28; // raw_length: field 5, varint
    p = writeVarint(buf, p, rawLength);
  }
  return p;
}

/** TransferMessage{chunk: DataChunk{offset=1, data=2, crc32=3, compression=4, raw_length=5}} in wire format. */
export function encodeChunkMessage(
  offset: number,
  data: Uint8Array,
  crc32: number,
  compression = 0,
  rawLength = 0,
): Buffer {
  // DataChunk fields are written only when not default, like the generated encoder.
  const inner =
    (offset !== 0 ? 1 + varintSize(offset) : 0) +
    (data.length !== 0 ? 1 + varintSize(data.length) + data.length : 0) +
    (crc32 !== 0 ? 1 + varintSize(crc32) : 0) +
    compressionFieldsSize(compression, rawLength);
  const buf = Buffer.allocUnsafe(1 + varintSize(inner) + inner);
  let p = 0;
  buf[p++] = 0x12; // TransferMessage.chunk: field 2, length-delimited
  p = writeVarint(buf, p, inner);
  if (offset !== 0) {
    buf[p++] = 0x08; // offset: field 1, varint
    p = writeVarint(buf, p, offset);
  }
  if (data.length !== 0) {
    buf[p++] = 0x12; // data: field 2, length-delimited
    p = writeVarint(buf, p, data.length);
    buf.set(data, p);
    p += data.length;
  }
  if (crc32 !== 0) {
    buf[p++] = 0x18; // crc32: field 3, varint
    p = writeVarint(buf, p, crc32);
  }
  p = writeCompressionFields(buf, p, compression, rawLength);
  return buf;
}

/**
 * Zero-copy chunks: the source reads straight into the middle of a buffer that becomes the whole
 * gRPC frame — room for gRPC's 5-byte message prefix and the message's own prefix before the data,
 * for the crc field after it — so a chunk is neither copied into a message nor allocated twice (on a
 * saturated 2-core box the copy and the extra 1 GiB of allocations per GiB moved cost the source's
 * main thread about a quarter of its time). The crc field is written as a 5-byte varint (non-minimal,
 * valid protobuf: every decoder reads it), because the prefix's length field must be known before
 * the crc is.
 *
 * Frames come from a FramePool and go back to it once the transport has written them (the HTTP/2
 * write's callback, see transfer-client.ts), so a long transfer reuses the same few buffers instead
 * of allocating (and garbage-collecting) one per chunk.
 */
const GRPC_PREFIX = 5; // gRPC message prefix: compressed flag + 4-byte big-endian length
const FRAME_HEAD = 1 + 5 + 1 + 10 + 1 + 5; // chunk tag + len, offset tag + varint, data tag + len
const FRAME_TAIL = 1 + 5; // crc tag + 5-byte varint
const DATA_AT = GRPC_PREFIX + FRAME_HEAD;

export interface ChunkFrame {
  /** Where to read the chunk's data into. */
  readonly data: Buffer;
  /** The whole allocation (capacity for `capacity` data bytes). */
  readonly buffer: Buffer;
  readonly capacity: number;
  /** Set by finishChunkFrame: where the encoded TransferMessage starts and ends in `buffer`. */
  start: number;
  end: number;
}

/**
 * Reusable chunk frames (by capacity: the source's chunk size). Releasing a frame the transport still
 * reads would corrupt a chunk — which the destination's per-chunk CRC-32C would reject (DATA_LOSS)
 * rather than store.
 */
export class FramePool extends BufferPool {
  /** `maxIdle`: the agent sets it from its read window (maxReadsInFlight + 2). */
  constructor(maxIdle = 16) {
    super(maxIdle);
  }

  acquire(length: number, capacity: number): ChunkFrame {
    const cap = Math.max(capacity, length);
    const buffer = this.take(DATA_AT + cap + FRAME_TAIL);
    return { buffer, capacity: cap, data: buffer.subarray(DATA_AT, DATA_AT + length), start: 0, end: 0 };
  }

  release(f: ChunkFrame): void {
    this.give(f.buffer);
  }
}

/** The process's frame pool (shared by every transfer this agent sends). */
export const framePool = new FramePool();

/** Bytes a frame needs beyond its data for a compressed chunk's two more fields (compression, raw_length). */
export const COMPRESSED_TAIL = 1 + 1 + 1 + 5;

/** The same frame with only its first `length` data bytes (≤ its data's): e.g. what a compressor wrote into it. */
export function frameOfLength(f: ChunkFrame, length: number): ChunkFrame {
  if (length > f.data.length) throw new RangeError(`a frame of ${f.data.length} data bytes cannot hold ${length}`);
  return { buffer: f.buffer, capacity: f.capacity, data: f.data.subarray(0, length), start: 0, end: 0 };
}

/**
 * Encodes TransferMessage{chunk} around data already in place (see FramePool.acquire); returns its bytes.
 * A compressed chunk's `compression` and `rawLength` follow the crc: the frame's capacity must exceed its
 * data by COMPRESSED_TAIL then.
 */
export function finishChunkFrame(f: ChunkFrame, offset: number, crc32: number, compression = 0, rawLength = 0): Buffer {
  const length = f.data.length;
  const extra = compressionFieldsSize(compression, rawLength);
  if (extra > 0 && DATA_AT + length + FRAME_TAIL + extra > f.buffer.length)
    throw new RangeError(`no room after ${length} data bytes for the compressed chunk's fields`);
  const inner = (offset !== 0 ? 1 + varintSize(offset) : 0) + 1 + varintSize(length) + length + FRAME_TAIL + extra;
  const prefixLen = 1 + varintSize(inner) + (offset !== 0 ? 1 + varintSize(offset) : 0) + 1 + varintSize(length);
  const start = DATA_AT - prefixLen;
  const buf = f.buffer;
  let p = start;
  buf[p++] = 0x12; // TransferMessage.chunk
  p = writeVarint(buf, p, inner);
  if (offset !== 0) {
    buf[p++] = 0x08; // offset
    p = writeVarint(buf, p, offset);
  }
  buf[p++] = 0x12; // data
  p = writeVarint(buf, p, length);
  p = DATA_AT + length;
  const c = crc32 >>> 0;
  buf[p++] = 0x18; // crc32, as a 5-byte varint
  buf[p++] = (c & 0x7f) | 0x80;
  buf[p++] = ((c >>> 7) & 0x7f) | 0x80;
  buf[p++] = ((c >>> 14) & 0x7f) | 0x80;
  buf[p++] = ((c >>> 21) & 0x7f) | 0x80;
  buf[p++] = (c >>> 28) & 0x0f;
  p = writeCompressionFields(buf, p, compression, rawLength);
  f.start = start;
  f.end = p;
  return buf.subarray(start, p);
}

/** The finished frame as one gRPC length-prefixed message, written in place (no copy). */
export function grpcFramed(f: ChunkFrame): Buffer {
  const at = f.start - GRPC_PREFIX;
  f.buffer[at] = 0; // not compressed
  f.buffer.writeUInt32BE(f.end - f.start, at + 1);
  return f.buffer.subarray(at, f.end);
}

/** Any encoded message as a gRPC length-prefixed message (one copy; for the small messages). */
export function grpcFrame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(GRPC_PREFIX + body.length);
  out[0] = 0;
  out.writeUInt32BE(body.length, 1);
  out.set(body, GRPC_PREFIX);
  return out;
}

/** A message whose data already sits in a finished chunk frame (see finishChunkFrame). */
export const FRAME = Symbol("frame");
export type MaybeFramed = TransferMessage & { [FRAME]?: ChunkFrame };

/** The encoding of any TransferMessage: chunks by the fast encoder, the rest by the generated one. */
export function encodeTransferMessage(m: TransferMessage): Uint8Array {
  if (m.body?.$case === "chunk") {
    const c = m.body.value;
    return encodeChunkMessage(c.offset, c.data, c.crc32, c.compression, c.rawLength);
  }
  // Like a generated client: missing fields take their defaults (fromPartial) before encoding.
  return TransferMessage.encode(TransferMessage.fromPartial(m)).finish();
}

/**
 * On a received chunk whose data lives in a pooled buffer: give the buffer back. Called by the sink
 * once nothing reads the data any more (its write finished, or failed).
 */
export const RELEASE = Symbol("release");
export type Releasable = TransferMessage & { [RELEASE]?: () => void };
