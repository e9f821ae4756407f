/**
 * The destination's side of TransferService's two methods on the data-plane server
 * (data-plane-server.ts routes calls here):
 *
 * - Transfer: the request stream is parsed into TransferMessages handed to the transfer entry one at
 *   a time (message-reader.ts: backpressure, pooled chunk buffers); the answer is its TransferSummary,
 *   or the status of its failure. Waiting for a message that does not come — the header included — is
 *   bounded by the idle timeout, as on the bulk channel (DEADLINE_EXCEEDED). The entry is a plain
 *   function — the sink behind it is the same one the same-cluster shortcut calls in-process.
 * - ListChains: unary; the request is decoded with the generated codec, the answer encoded with it.
 *
 * Why not grpc-js: it assembles every 2 MiB message into a freshly allocated buffer, so a transfer
 * allocated and garbage-collected its own size again on the destination's main thread. Here a chunk
 * is assembled in a buffer from a ReceivePool and given back once librbd has written it (the message's
 * RELEASE callback), so a transfer reuses a few dozen buffers whatever its size.
 */
import { Status } from "nice-grpc-common";
import { AppError } from "../../src/common/errors";
import {
  type ListChainsRequest,
  type ListChainsResponse,
  TransferMessage,
  TransferServiceDefinition,
  TransferSummary,
} from "../../src/gen/rbdbackup/v1/transfer";
import { beatWhileBusy, failWhenIdle, MessageReader, type ReceivePool, receivePool } from "./message-reader";
import { BUSY_HEADER, busyPing } from "./protocol";
import type { ServerCall } from "./server-call";
import type { TransferCaller } from "./transfer-authz";
import { type UnaryOptions, unaryMethod } from "./unary-method";
import { RELEASE, type Releasable } from "./wire";

/** Where a transfer's messages go: the destination's sink (or, in tests, any function). */
export type TransferEntry = (
  messages: AsyncIterable<TransferMessage>,
  signal: AbortSignal,
  /** Who called, and the capability it presented (transfer-authz.ts). */
  caller: TransferCaller,
) => Promise<Partial<TransferSummary>>;

/** ListChains' handler: it gets the caller, whose capability must cover the volume (authorizeListChains). */
export type ListChainsEntry = (
  req: ListChainsRequest,
  signal: AbortSignal,
  caller: TransferCaller,
) => Promise<Partial<ListChainsResponse>>;

/** A method's handler on the data-plane server. */
export type MethodHandler = (call: ServerCall, caller: TransferCaller) => void;

function decodeTransferMessage(bytes: Buffer, release: (() => void) | null): TransferMessage {
  let m: TransferMessage;
  try {
    m = TransferMessage.decode(bytes);
  } catch (e) {
    throw new AppError(Status.INVALID_ARGUMENT, `a message that is not a TransferMessage: ${(e as Error).message}`);
  }
  // Only a chunk's data points into the buffer for long; anything else decoded from a pooled buffer
  // (never seen in practice: those messages are small) just leaves it to the GC.
  if (release && m.body?.$case === "chunk") (m as Releasable)[RELEASE] = release;
  return m;
}

/** TransferService.Transfer: client-streaming, chunks in pooled buffers. */
export function transferMethod(
  entry: TransferEntry,
  opts: { maxMessageBytes: number; pool?: ReceivePool; idleTimeoutMs: number; busyBeats?: boolean },
) {
  const pool = opts.pool ?? receivePool;
  return (call: ServerCall, caller: TransferCaller): void => {
    const reader = new MessageReader(call.stream, {
      maxMessageBytes: opts.maxMessageBytes,
      pool,
      decode: decodeTransferMessage,
    });
    // Bounded like the bulk channel: waiting for the next message (the header first) while nothing
    // arrives for idleTimeoutMs ends the transfer (the entry's reader fails; the sink cleans up).
    const idle = failWhenIdle(
      call.stream,
      reader,
      opts.idleTimeoutMs,
      "the source went quiet (transfer.bulkIdleTimeoutMs)",
    );
    // Asked for by the source (BUSY_HEADER): busy PINGs naming this stream while this side does not read.
    const busy = opts.busyBeats === false ? { stop() {} } : busyBeat(call, reader);
    entry(reader, call.signal, caller).then(
      (summary) => {
        idle.stop();
        busy.stop();
        let body: Uint8Array;
        try {
          body = TransferSummary.encode(TransferSummary.fromPartial(summary)).finish();
        } catch (e) {
          call.fail(Status.INTERNAL, `cannot encode the transfer's summary: ${(e as Error).message}`);
          return;
        }
        call.reply(body);
      },
      (e) => {
        idle.stop();
        busy.stop();
        // Refused or failed: what the source still sends is read and dropped, not held in pooled buffers.
        reader.discard();
        call.failWith(e);
      },
    );
  };
}

/** The busy PINGs a Transfer call asked for (BUSY_HEADER), until stopped or the stream closes; none when not asked. */
function busyBeat(call: ServerCall, reader: MessageReader<TransferMessage>): { stop(): void } {
  const asked = Number(call.headers[BUSY_HEADER]);
  const stream = call.stream;
  if (!Number.isFinite(asked) || asked <= 0 || stream.id === undefined) return { stop() {} };
  const beat = beatWhileBusy(stream, reader, asked, () => {
    const session = stream.session;
    if (!session || session.closed || session.destroyed || stream.closed) return;
    try {
      session.ping(busyPing(stream.id as number), () => {}); // its answer is not waited for
    } catch {
      // too many PINGs unanswered (the peer is slow to ack): the next beat tries again
    }
  });
  stream.once("close", () => beat.stop());
  return beat;
}

/** TransferService.ListChains: unary — exactly one request message, then one answer. */
export function listChainsMethod(entry: ListChainsEntry, opts: UnaryOptions) {
  return unaryMethod(TransferServiceDefinition.fullName, TransferServiceDefinition.methods.listChains, entry, opts);
}
