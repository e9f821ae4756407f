/**
 * The destination's side of wire compression (TransferHeader.compression, DataChunk.compression and
 * raw_length): every compressed chunk is turned back into its raw bytes before StreamChecks sees it, so
 * the CRC-32C check, the digest and the writes stay exactly as for an uncompressed stream.
 *
 * Rules (transfer.proto): a header with a compression this agent does not know → INVALID_ARGUMENT; a
 * compressed chunk in a stream whose header says NONE, or with another algorithm than the header's →
 * INVALID_ARGUMENT (StreamChecks, which sees only raw chunks otherwise); raw_length 0 or above the header's chunk_size → INVALID_ARGUMENT; data that does
 * not decompress to exactly raw_length bytes → DATA_LOSS. Memory: the output buffer is raw_length
 * bytes from the receive pool, never more; the compressed buffer goes back to its pool once read.
 * Up to `inFlight` chunks decompress at once (on libuv's pool), in order.
 */
import { dataLoss, invalidArgument } from "../../../src/common/errors";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import type { TransferHeader, TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { type Codec, isCorruptData, nativeCodec } from "../../ceph";
import { type ReceivePool, receivePool } from "../message-reader";
import type { TransferMeter } from "../meter";
import { codecAlgorithm } from "../shaping/compress";
import { inOrder } from "../shaping/in-order";
import { RELEASE, type Releasable } from "../wire";

/** Throws INVALID_ARGUMENT for a header whose compression this agent cannot decompress. */
export function checkHeaderCompression(h: TransferHeader): void {
  const c = h.compression ?? Compression.COMPRESSION_NONE;
  if (c !== Compression.COMPRESSION_NONE && !codecAlgorithm(c))
    throw invalidArgument(`header.compression ${c} is not a compression this agent supports (ZSTD, LZ4)`);
}

export interface InflateOptions {
  codec?: Codec;
  meter?: TransferMeter;
  pool?: ReceivePool;
  /** Chunks decompressing at once (default 4). */
  inFlight?: number;
  /** The destination pool: a chunk that does not decompress counts as a checksum failure of it. */
  meterPool?: string;
}

/**
 * The messages after the header with every compressed chunk decompressed. For a header that says NONE
 * the stream as it is (StreamChecks refuses a compressed chunk in it).
 */
export function inflated(
  it: AsyncIterator<TransferMessage>,
  h: TransferHeader,
  opts: InflateOptions = {},
): AsyncIterator<TransferMessage> {
  const compression = h.compression ?? Compression.COMPRESSION_NONE;
  if (compression === Compression.COMPRESSION_NONE) return it;
  const pool = opts.pool ?? receivePool;
  return inOrder(
    it,
    (m) => inflate(m, h, compression, pool, opts),
    opts.inFlight ?? 4,
    (m) => (m as Releasable)[RELEASE]?.(),
  );
}

/** One chunk back to its raw bytes (any other message as it is). */
async function inflate(
  m: TransferMessage,
  h: TransferHeader,
  compression: Compression,
  pool: ReceivePool,
  opts: InflateOptions,
): Promise<TransferMessage> {
  const body = m.body;
  if (body?.$case !== "chunk") return m;
  const c = body.value;
  const releaseWire = (m as Releasable)[RELEASE];
  const algorithm = codecAlgorithm(compression) as NonNullable<ReturnType<typeof codecAlgorithm>>;
  const chunkCompression = c.compression ?? Compression.COMPRESSION_NONE;
  if (chunkCompression === Compression.COMPRESSION_NONE) {
    opts.meter?.compression?.("received", algorithm, c.data.length, c.data.length);
    return m;
  }
  let out: Buffer | null = null;
  try {
    if (chunkCompression !== compression)
      throw invalidArgument(
        `chunk at ${c.offset} is compressed with ${Compression[chunkCompression] ?? chunkCompression}, the header says ${Compression[compression]}`,
      );
    const raw = c.rawLength ?? 0;
    if (raw === 0 || raw > h.chunkSize)
      throw invalidArgument(`chunk at ${c.offset}: raw_length ${raw}, must be 1..${h.chunkSize} (the chunk size)`);
    if (c.data.length === 0 || c.data.length > h.chunkSize)
      throw invalidArgument(`chunk at ${c.offset}: ${c.data.length} compressed bytes, limit ${h.chunkSize}`);
    out = pool.acquire(raw);
    const src = Buffer.from(c.data.buffer, c.data.byteOffset, c.data.byteLength);
    try {
      await (opts.codec ?? nativeCodec).decompress(algorithm, src, raw, out);
    } catch (e) {
      if (!isCorruptData(e)) throw e;
      // Damage in transit shows here, before its CRC can be checked: counted as a checksum failure (the
      // RbdbackupChecksumFailures alert), as an uncompressed chunk's would be.
      if (opts.meterPool !== undefined) opts.meter?.checksumFailure(opts.meterPool);
      throw dataLoss(
        `chunk at ${c.offset} (${c.data.length} bytes of ${algorithm}) does not decompress to its ${raw} bytes: corrupted in transit (${(e as Error).message})`,
      );
    }
    opts.meter?.compression?.("received", algorithm, raw, c.data.length);
    const done = out;
    const inflatedMessage: Releasable = {
      body: { $case: "chunk", value: { offset: c.offset, data: done, crc32: c.crc32, compression: 0, rawLength: 0 } },
    };
    inflatedMessage[RELEASE] = () => pool.release(done);
    return inflatedMessage;
  } catch (e) {
    if (out) pool.release(out);
    throw e;
  } finally {
    releaseWire?.();
  }
}
