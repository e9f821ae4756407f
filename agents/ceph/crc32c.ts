/**
 * CRC-32C (Castagnoli) from the addon: the SSE4.2 instruction where the CPU has it (crc32cHardware()),
 * a table otherwise. The transfer protocol's per-chunk checksum.
 */
import { native } from "./native";

export function crc32c(data: Uint8Array): number {
  return native().crc32c(data);
}

/** Whether the SSE4.2 instruction is used (loads the addon). */
export function crc32cHardware(): boolean {
  return native().crc32cHardware;
}
