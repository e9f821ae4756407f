/**
 * Chunk compression on the wire (TransferOptions.compression). The source compresses each data chunk
 * off the JS thread (the addon's codecs, on libuv's pool), keeps it as it is when compression does not
 * shrink it by at least 1/32 (the raw chunk keeps its zero-copy frame and the destination skips a
 * decompression), and sets the header's `compression`; the destination decompresses before it checks
 * the chunk's CRC-32C, which stays over the uncompressed bytes (sink/decompress.ts).
 *
 * Order and backpressure (in-order.ts): at most `inFlight` chunks are being compressed at once, pulled
 * from the source only when the transport asks for a message, so the source reads no further ahead
 * than that. A chunk is compressed into a pooled frame of its own (wire.ts; the transport writes it as
 * it is and gives it back once written) and its read frame goes back at once; one sent as it is keeps
 * its read frame, which the transport gives back once written (transfer-client.ts, bulk/send.ts).
 */
import type { Logger } from "../../../src/common/log";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import type { TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { type Codec, type CodecAlgorithm, nativeCodec } from "../../ceph";
import type { TransferMeter } from "../meter";
import {
  COMPRESSED_TAIL,
  FRAME,
  type FramePool,
  finishChunkFrame,
  frameOfLength,
  framePool,
  type MaybeFramed,
} from "../wire";
import { inOrder } from "./in-order";

export interface CompressDeps {
  /** zstd level (agent config `transfer.zstdLevel`, default 1). */
  zstdLevel: number;
  log?: Logger;
  /** Bytes before and after compression (metrics). */
  meter?: TransferMeter;
  /** Default: the addon's codecs (tests inject their own). */
  codec?: Codec;
  /** Where a compressed chunk's read frame goes back (default: the process's pool). */
  frames?: FramePool;
  /** Chunks being compressed at once (default 4). */
  inFlight?: number;
}

const DEFAULT_IN_FLIGHT = 4;

/** The codec of a Compression value, or undefined for NONE and for values this agent does not know. */
export function codecAlgorithm(c: Compression): CodecAlgorithm | undefined {
  if (c === Compression.COMPRESSION_ZSTD) return "zstd";
  if (c === Compression.COMPRESSION_LZ4) return "lz4";
  return undefined;
}

/** The largest compressed size worth sending instead of `raw` bytes (a saving of at least 1/32). */
export function worthItBelow(raw: number): number {
  return raw - Math.max(1, raw >> 5);
}

/** The stream with its chunks compressed with `compression` (the header's field set to it). */
export function compressStream(
  messages: AsyncIterable<TransferMessage>,
  compression: Compression,
  deps: CompressDeps,
): AsyncIterable<TransferMessage> {
  const algorithm = codecAlgorithm(compression);
  if (!algorithm) return messages;
  return {
    [Symbol.asyncIterator]: () =>
      inOrder(
        messages[Symbol.asyncIterator](),
        (m) => shape(m, compression, algorithm, deps),
        deps.inFlight ?? DEFAULT_IN_FLIGHT,
        // Compressed but never sent (the transport stopped early): its frame goes back to the pool.
        (m) => {
          const f = (m as MaybeFramed)[FRAME];
          if (f) (deps.frames ?? framePool).release(f);
        },
      ),
  };
}

/** One message as it goes on the wire: the header marked, a chunk compressed when that pays. */
async function shape(
  m: TransferMessage,
  compression: Compression,
  algorithm: CodecAlgorithm,
  deps: CompressDeps,
): Promise<TransferMessage> {
  const body = m.body;
  if (body?.$case === "header") return { body: { $case: "header", value: { ...body.value, compression } } };
  if (body?.$case !== "chunk") return m;
  const c = body.value;
  const raw = Buffer.from(c.data.buffer, c.data.byteOffset, c.data.byteLength);
  const frames = deps.frames ?? framePool;
  const frame = (m as MaybeFramed)[FRAME];
  // Compressed straight into a pooled frame with the read frame's capacity (the same pool bucket), which
  // the transport writes as it is and gives back once written: per chunk, no allocation and no copy
  // into a message (before: a maxLength buffer, then the encoded message and its gRPC frame — three
  // allocations left to the garbage collector per chunk).
  const capacity = frame?.capacity ?? raw.length;
  const max = Math.min(worthItBelow(raw.length), capacity - COMPRESSED_TAIL);
  const own = raw.length > 0 && max > 0 ? frames.acquire(max, capacity) : null;
  let out: Buffer | null = null;
  if (own) {
    try {
      out = await (deps.codec ?? nativeCodec).compress(algorithm, deps.zstdLevel, raw, max, own.data);
    } catch (e) {
      frames.release(own);
      throw e;
    }
  }
  deps.meter?.compression?.("sent", algorithm, raw.length, out ? out.length : raw.length);
  if (!own || !out) {
    if (own) frames.release(own);
    return m; // sent as it is, with its frame
  }
  if (frame) frames.release(frame);
  const f = frameOfLength(own, out.length);
  finishChunkFrame(f, c.offset, c.crc32, compression, raw.length);
  const shaped: MaybeFramed = {
    body: {
      $case: "chunk",
      value: { offset: c.offset, data: f.data, crc32: c.crc32, compression, rawLength: raw.length },
    },
  };
  shaped[FRAME] = f;
  return shaped;
}
