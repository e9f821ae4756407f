/**
 * What the transfer code reports as it goes (bytes read, sent, received, written; checksum failures;
 * librbd I/O latency). The agent implements it with Prometheus metrics (agents/agent/metrics.ts);
 * code without metrics uses noMeter.
 */
export interface TransferMeter {
  /** Source: bytes read from RBD or a file. */
  read(pool: string, bytes: number): void;
  /** Source: a data chunk sent (bytes on the wire, before framing). */
  sent(pool: string, bytes: number): void;
  /** Source: a zero range sent (no bytes on the wire). */
  zeroRange(pool: string, bytes: number): void;
  /** Destination: a chunk received and verified. */
  received(pool: string, bytes: number): void;
  /** Destination: bytes written to RBD. */
  written(pool: string, bytes: number): void;
  checksumFailure(pool: string): void;
  /**
   * Destination: a stream into `pool` opened — its checksum-failure series exists (at 0) before any
   * chunk is checked, so that the first corrupt chunk counts as an increase for the alert.
   */
  receiving?(pool: string): void;
  /**
   * A chunk of a compressed stream sent or received: its bytes before (`raw`) and after (`wire`)
   * compression (equal when it went as it was).
   */
  compression?(direction: "sent" | "received", algorithm: string, raw: number, wire: number): void;
  /** A librbd aio op finished after `seconds`. */
  io(op: "read" | "write" | "zeroes", seconds: number): void;
  ioStarted(): void;
  ioFinished(): void;
}

export const noMeter: TransferMeter = {
  read() {},
  sent() {},
  zeroRange() {},
  received() {},
  written() {},
  checksumFailure() {},
  io() {},
  ioStarted() {},
  ioFinished() {},
};
