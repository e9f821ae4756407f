/**
 * An `rbd export-diff` stream as a transfer's message stream, for the sink (`runSink`) to write and
 * commit like any backup: the metadata records come first, and only once the size is known is the
 * header built (by the caller, who knows where the backup goes); then every 'w' piece becomes data
 * chunks (all-zero runs of ≥ 64 KiB become zero ranges, as the transfer source does) with their
 * CRC-32C, every 'z' a zero range; after 'e' the trailer with the counts and the digest. A fault in
 * the stream throws from the generator (INVALID_ARGUMENT naming the offset): the sink then cleans up
 * and commits nothing. The 't' name and 'p' flag are reported, not used (the backup has its own name).
 */
import { invalidArgument } from "../../../src/common/errors";
import type { TransferHeader, TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { segments, TransferDigest } from "../protocol";
import type { SourceStats } from "../source";
import type { DiffVersion } from "./format";
import { type DiffRecord, streamError } from "./parser";

/** What the stream said before its data. */
export interface DiffMeta {
  version: DiffVersion;
  fromSnapshot: string | null;
  /** Where the 'f' record starts (error messages name it). */
  fromAt: number;
  toSnapshot: string | null;
  size: number;
}

/**
 * `header(meta)` builds the transfer header once the metadata is read (it may throw: e.g. a stream
 * with a from-snapshot for a full import); `stats` counts what went out (progress, the result).
 */
export async function* diffToTransfer(
  records: AsyncIterable<DiffRecord>,
  header: (meta: DiffMeta) => TransferHeader,
  checksum: (data: Uint8Array) => number,
  stats: SourceStats,
): AsyncGenerator<TransferMessage> {
  const digest = new TransferDigest();
  const meta: DiffMeta = { version: 1, fromSnapshot: null, fromAt: 0, toSnapshot: null, size: 0 };
  let started = false;
  const zero = (offset: number, length: number): TransferMessage => {
    digest.zero(offset, length);
    stats.zeroRanges++;
    stats.zeroBytes += length;
    stats.position = Math.max(stats.position, offset + length);
    return { body: { $case: "zero", value: { offset, length } } };
  };
  for await (const rec of records) {
    if (!started && (rec.type === "data" || rec.type === "zero" || rec.type === "end")) {
      started = true;
      yield { body: { $case: "header", value: header(meta) } };
    }
    switch (rec.type) {
      case "banner":
        meta.version = rec.version;
        break;
      case "from":
        meta.fromSnapshot = rec.name;
        meta.fromAt = rec.at;
        break;
      case "to":
        meta.toSnapshot = rec.name;
        break;
      case "size":
        meta.size = rec.size;
        break;
      case "protect":
        break;
      case "zero":
        stats.extents++;
        yield zero(rec.offset, rec.length);
        break;
      case "data":
        stats.bytesRead += rec.data.length;
        for (const s of segments(rec.data, rec.offset)) {
          if (s.zero) {
            yield zero(s.offset, s.length);
            continue;
          }
          const view = rec.data.subarray(s.offset - rec.offset, s.offset - rec.offset + s.length);
          // A view of the received message keeps all of it alive while the chunk waits in the write window
          // (which counts only the chunk's bytes): a small piece of a large message is copied instead.
          const data = view.buffer.byteLength > Math.max(4 * view.length, 1 << 20) ? Buffer.from(view) : view;
          const crc = checksum(data);
          digest.chunk(s.offset, s.length, crc);
          stats.dataChunks++;
          stats.dataBytes += s.length;
          stats.position = Math.max(stats.position, s.offset + s.length);
          yield {
            body: { $case: "chunk", value: { offset: s.offset, data, crc32: crc, compression: 0, rawLength: 0 } },
          };
        }
        break;
      case "end":
        stats.position = meta.size;
        yield {
          body: {
            $case: "trailer",
            value: {
              dataChunks: stats.dataChunks,
              dataBytes: stats.dataBytes,
              zeroRanges: stats.zeroRanges,
              zeroBytes: stats.zeroBytes,
              digest: digest.digest(),
            },
          },
        };
        return;
    }
  }
  // The parser throws on a stream without 'e'; a record source that just stops is a bug upstream.
  throw invalidArgument("the rbd-diff records ended without an 'e' record");
}

export { streamError };
