/**
 * The bulk channel's wire rules (transfer.proto, BulkOpen / BulkResult): the ALPN names, the version,
 * and the two small messages as gRPC length-prefixed frames. Chunk frames are not built here: the
 * source lays them out already framed (wire.ts), and the client writes them to the socket as they are.
 *
 * A BulkResult carries what a Transfer call's trailers would (status, message, typed reason, summary);
 * `resultError` turns a non-OK one into the same nice-grpc ClientError TransferClient raises, so the
 * engine cannot tell which channel a transfer took.
 */
import { ClientError, Status } from "nice-grpc-common";
import { toServerError } from "../../../src/common/errors";
import { BulkOpen, BulkResult, TransferSummary } from "../../../src/gen/rbdbackup/v1/transfer";
import { reasonOf } from "../protocol";
import { grpcFrame } from "../wire";

/** ALPN protocol of the bulk channel, offered before "h2". */
export const ALPN_BULK = "rbdbackup-bulk/1";
export const ALPN_H2 = "h2";
/** BulkOpen.version this agent speaks. */
export const BULK_VERSION = 1;
/** The method name errors carry (as a Transfer call's would): callers match on status, not on it. */
export const BULK_PATH = "/rbdbackup.v1.TransferService/Transfer";
/** A BulkResult is a few hundred bytes: anything much larger is a broken peer. */
export const MAX_RESULT_BYTES = 1024 * 1024;
/** Default for `transfer.bulkIdleTimeoutMs`. */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
/**
 * After the last byte of a transfer (either path): how long the destination may take to drain, flush,
 * commit and answer (keepalive pings meanwhile) before the source gives up with DEADLINE_EXCEEDED.
 */
export const RESULT_WAIT_MS = 10 * 60_000;

/**
 * The BulkOpen frame; `busyIntervalMs`: how often the destination is asked to say it is busy while it
 * does not read (BUSY_FRAME; 0: never — an agent before it ignores the field and sends none).
 */
export function openFrame(capability: string | undefined, busyIntervalMs = 0): Buffer {
  return grpcFrame(BulkOpen.encode({ version: BULK_VERSION, capability: capability ?? "", busyIntervalMs }).finish());
}

/** The destination is busy, not gone (BulkOpen.busy_interval_ms): a gRPC frame of length 0. */
export const BUSY_FRAME: Buffer = Buffer.alloc(5);

/** How often a source asks to hear from a busy destination: a third of its idle bound. */
export const busyIntervalFor = (idleTimeoutMs: number): number => Math.max(1, Math.floor(idleTimeoutMs / 3));

/**
 * A source's idle bound while it waits for the destination to take its bytes: `onIdle` once `ms` passed
 * with neither the wait's start nor the destination's last busy signal (`busyAt()`, ms since the epoch)
 * within them. Returns the function that stops it (the wait ended).
 */
export function unlessBusy(ms: number, busyAt: () => number, onIdle: () => void): () => void {
  const since = Date.now();
  const check = () => {
    const quiet = Date.now() - Math.max(since, busyAt());
    if (quiet < ms) timer = setTimeout(check, ms - quiet);
    else onIdle();
  };
  let timer = setTimeout(check, ms);
  return () => clearTimeout(timer);
}

/** The number of busy frames at the start of `bytes` (each BUSY_FRAME's five zero bytes). */
export function leadingBusyFrames(bytes: Buffer): number {
  let n = 0;
  while (bytes.length >= (n + 1) * 5 && bytes.subarray(n * 5, n * 5 + 5).equals(BUSY_FRAME)) n++;
  return n;
}

/** The frame answering a transfer: its summary, or the status its failure deserves (src/common/errors.ts). */
export function resultFrame(outcome: { summary: Partial<TransferSummary> } | { error: unknown }): Buffer {
  if ("summary" in outcome) {
    const summary = TransferSummary.fromPartial(outcome.summary);
    return grpcFrame(BulkResult.encode({ code: Status.OK, message: "", summary, reason: "" }).finish());
  }
  const se = toServerError(outcome.error);
  const result = { code: se.code, message: se.details, summary: undefined, reason: reasonOf(outcome.error) };
  return grpcFrame(BulkResult.encode(result).finish());
}

/** A BulkResult that is not OK, as the ClientError a Transfer call with that status would raise. */
export function resultError(r: BulkResult): ClientError {
  const err = new ClientError(BULK_PATH, r.code as Status, r.message);
  return r.reason ? Object.assign(err, { refusalReason: r.reason }) : err;
}

/**
 * Parses the server's answer: exactly one frame holding a BulkResult. Returns null while incomplete;
 * throws (INTERNAL) when malformed.
 */
export function parseResult(bytes: Buffer): BulkResult | null {
  if (bytes.length < 5) return null;
  const len = bytes.readUInt32BE(1);
  if (bytes[0] !== 0 || len > MAX_RESULT_BYTES) {
    throw new ClientError(BULK_PATH, Status.INTERNAL, `the peer sent a malformed bulk result (${bytes.length} bytes)`);
  }
  if (bytes.length < 5 + len) return null;
  try {
    return BulkResult.decode(bytes.subarray(5, 5 + len));
  } catch (e) {
    throw new ClientError(BULK_PATH, Status.INTERNAL, `cannot decode the peer's bulk result: ${(e as Error).message}`);
  }
}
