/**
 * Chunk compression on the wire (TransferOptions.compression). The source compresses each data chunk
 * off the JS thread (the addon's codecs, on libuv's pool), keeps it as it is when compression does not
 * shrink it by at least 1/32 (the raw chunk keeps its zero-copy frame and the destination skips a
 * decompression), and sets the header's `compression`; the destination decompresses before it checks
 * the chunk's CRC-32C, which stays over the uncompressed bytes (sink/decompress.ts).
 *
 * Order and backpressure (in-order.ts): at most `inFlight` chunks are being compressed at once, pulled
 * from the source only when the transport asks for a message, so the source reads no further ahead
 * than that. A chunk whose compressed form is sent gives its pooled read frame back at once; one sent
 * as it is keeps its frame, which the transport gives back once written (transfer-client.ts).
 */
import type { Logger } from "../../../src/common/log";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import type { TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { type Codec, type CodecAlgorithm, nativeCodec } from "../../ceph";
import type { TransferMeter } from "../meter";
import { FRAME, type FramePool, framePool, type MaybeFramed } from "../wire";
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
  const codec = deps.codec ?? nativeCodec;
  const out = raw.length > 0 ? await codec.compress(algorithm, deps.zstdLevel, raw, worthItBelow(raw.length)) : null;
  deps.meter?.compression?.("sent", algorithm, raw.length, out ? out.length : raw.length);
  if (!out) return m; // sent as it is, with its frame
  const frame = (m as MaybeFramed)[FRAME];
  if (frame) (deps.frames ?? framePool).release(frame);
  return {
    body: {
      $case: "chunk",
      value: { offset: c.offset, data: out, crc32: c.crc32, compression, rawLength: raw.length },
    },
  };
}
