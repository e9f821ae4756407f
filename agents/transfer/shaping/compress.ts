/**
 * Chunk compression on the wire (TransferOptions.compression). The source compresses each data chunk
 * (off the JS thread, in the addon), keeps it as it is when compression does not shrink it, and sets
 * the header's `compression`; the destination decompresses before it checks the chunk's CRC-32C
 * (always over the uncompressed bytes). CONTRACT STUB: the helper that owns this file implements it.
 */
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { Logger } from "../../../src/common/log";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import type { TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";

export interface CompressDeps {
  /** zstd level (agent config `transfer.zstdLevel`, default 1). */
  zstdLevel: number;
  log?: Logger;
}

/** The stream with its chunks compressed with `compression` (the header's field set to it). */
export function compressStream(
  messages: AsyncIterable<TransferMessage>,
  compression: Compression,
  _deps: CompressDeps,
): AsyncIterable<TransferMessage> {
  if (compression === Compression.COMPRESSION_NONE) return messages;
  throw new AppError(Status.UNIMPLEMENTED, `compression ${Compression[compression]} is not built yet`);
}
