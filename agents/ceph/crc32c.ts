/**
 * CRC-32C (Castagnoli) from the addon: the SSE4.2 instruction where the CPU has it (crc32cHardware()),
 * a table otherwise. The transfer protocol's per-chunk checksum.
 */
import { native } from "./native";

export function crc32c(data: Uint8Array): number {
  return native().crc32c(data);
}

/**
 * CRC-32C of `data` computed once, as pieces: the first `first` bytes (1..blockSize), then `blockSize`
 * bytes each (the last one shorter). Each piece's CRC-32C goes to `out` (room for
 * 1 + ceil((length - first) / blockSize) values); returns the whole's, combined from the pieces'
 * (zlib's crc32_combine with the Castagnoli polynomial) instead of a second pass over the bytes.
 */
export function crc32cPieces(data: Uint8Array, first: number, blockSize: number, out: Uint32Array): number {
  return native().crc32cPieces(data, first, blockSize, out);
}

/** Whether the SSE4.2 instruction is used (loads the addon). */
export function crc32cHardware(): boolean {
  return native().crc32cHardware;
}
