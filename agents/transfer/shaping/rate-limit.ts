/**
 * Bandwidth caps on the bytes a sending agent puts on the wire: a token bucket per job
 * (TransferOptions.bandwidth_limit_bytes_per_second) and one per agent (`limits.bandwidthBytesPerSecond`),
 * both awaited before a message goes out. CONTRACT STUB: the helper that owns this file implements it.
 */
import type { TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";

/** A token bucket (bytes per second, burst); `take` resolves when `bytes` may go, or rejects when `signal` aborts. */
export interface RateLimiter {
  readonly bytesPerSecond: number;
  take(bytes: number, signal: AbortSignal): Promise<void>;
}

/** The stream, each message released only once every limiter let its bytes go. */
export function limitStream(
  messages: AsyncIterable<TransferMessage>,
  limiters: readonly RateLimiter[],
  _signal: AbortSignal,
): AsyncIterable<TransferMessage> {
  if (limiters.length === 0) return messages;
  return messages;
}
