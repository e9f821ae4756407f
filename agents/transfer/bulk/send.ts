/**
 * One transfer over a bulk connection, the source's side: BulkOpen, then each message's frame written
 * to the TLS socket as it is (a chunk's frame is the pooled buffer the source read Ceph into, with the
 * gRPC prefix in place: wire.ts grpcFramed; it goes back to the pool once the socket took it), then
 * the socket's end — and the transfer's outcome is the server's one BulkResult.
 *
 * Same contract as TransferClient.transfer (transfer-client.ts), so callers cannot tell the two apart:
 * - backpressure: the next message is pulled only once the socket drained the previous one; a socket
 *   that does not drain for `idleTimeoutMs` while the destination does not say it is busy (the BulkOpen
 *   asks for a busy frame every third of it: server.ts) fails the transfer with DEADLINE_EXCEEDED and
 *   is destroyed (the destination sees the connection lost and cleans up);
 * - giving up (the caller's abort, the source's failure) closes this side without a trailer — the
 *   destination takes the stream as cut short, cleans up, answers — and settles on that answer, or after
 *   `cancelWaitMs` with a warning;
 * - a non-OK BulkResult is the ClientError a Transfer call with that status (and reason) would raise.
 */
import type { TLSSocket } from "node:tls";
import { AbortError } from "abort-controller-x";
import { ClientError, Status } from "nice-grpc-common";
import type { Logger } from "../../../src/common/log";
import { type BulkResult, type TransferMessage, TransferSummary } from "../../../src/gen/rbdbackup/v1/transfer";
import { encodeTransferMessage, FRAME, type FramePool, grpcFrame, grpcFramed, type MaybeFramed } from "../wire";
import {
  BULK_PATH,
  busyIntervalFor,
  leadingBusyFrames,
  openFrame,
  parseResult,
  RESULT_WAIT_MS,
  resultError,
  unlessBusy,
} from "./protocol";

const KEEPALIVE_MS = 15_000;

export interface SendOptions {
  frames: FramePool;
  idleTimeoutMs: number;
  cancelWaitMs: number;
  log: Logger;
  /** For messages: the peer's address. */
  peer: string;
}

export function sendBulk(
  socket: TLSSocket,
  messages: AsyncIterable<TransferMessage>,
  signal: AbortSignal,
  capability: string | undefined,
  o: SendOptions,
): Promise<TransferSummary> {
  socket.setKeepAlive(true, KEEPALIVE_MS);
  return new Promise<TransferSummary>((resolve, reject) => {
    let settled = false;
    let gaveUp: { error: unknown; timer: NodeJS.Timeout } | null = null;
    let transportError: Error | undefined;
    let resultTimer: NodeJS.Timeout | null = null;
    const received: Buffer[] = [];
    let wake: (() => void) | null = null;
    const poke = () => {
      const w = wake;
      wake = null;
      w?.();
    };

    const finish = (err: unknown, value?: TransferSummary) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener("abort", onAbort);
      if (resultTimer) clearTimeout(resultTimer);
      poke();
      if (gaveUp) {
        clearTimeout(gaveUp.timer);
        // The peer's answer is in: it cleaned up (or, when the stream was complete, committed).
        if (err || !value) reject(gaveUp.error);
        else resolve(value);
        return;
      }
      if (err) reject(err);
      else resolve(value as TransferSummary);
    };
    /** Stops sending and closes this side without a trailer: the destination cleans up, then answers. */
    const giveUp = (error: unknown) => {
      if (settled || gaveUp) return;
      const timer = setTimeout(() => {
        o.log.warn("the destination did not confirm its cleanup in time; closing the bulk connection", {
          peer: o.peer,
          waitedMs: o.cancelWaitMs,
        });
        finish(error);
        socket.destroy();
      }, o.cancelWaitMs);
      gaveUp = { error, timer };
      poke();
      if (socket.destroyed) finish(error);
      else socket.end();
    };
    const onAbort = () => giveUp(new AbortError());
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) onAbort(); // aborted before the listener was added: it would never fire

    const onResult = (r: BulkResult) => {
      if (r.code !== Status.OK) finish(resultError(r));
      else finish(undefined, TransferSummary.fromPartial(r.summary ?? {}));
      socket.destroy(); // the server closes after its answer; nothing more is exchanged
    };
    /** When the destination last said it is busy (BUSY_FRAME): its silence since then is not idleness. */
    let busyAt = 0;
    socket.on("data", (d: Buffer) => {
      if (settled) return;
      received.push(d);
      let bytes = received.length === 1 ? d : Buffer.concat(received);
      const beats = leadingBusyFrames(bytes);
      if (beats > 0) {
        busyAt = Date.now();
        bytes = bytes.subarray(beats * 5);
        received.length = 0;
        if (bytes.length) received.push(bytes);
      }
      if (!bytes.length) return;
      let r: BulkResult | null;
      try {
        r = parseResult(bytes);
      } catch (e) {
        finish(e);
        socket.destroy();
        return;
      }
      if (r) onResult(r);
    });
    socket.on("error", (e) => {
      transportError ??= e;
    });
    socket.on("close", () => {
      poke();
      if (settled) return;
      finish(
        new ClientError(
          BULK_PATH,
          Status.UNAVAILABLE,
          transportError
            ? `the bulk connection to ${o.peer} failed: ${transportError.message}`
            : `the bulk connection to ${o.peer} was lost before its result`,
        ),
      );
    });

    /** Resolves true once the socket drained; false when the transfer is over (settled, given up, closed). */
    const drained = () =>
      new Promise<boolean>((ok) => {
        const stop = unlessBusy(
          o.idleTimeoutMs,
          () => busyAt,
          () => {
            finish(
              new ClientError(
                BULK_PATH,
                Status.DEADLINE_EXCEEDED,
                `the destination ${o.peer} took no bytes for ${o.idleTimeoutMs} ms and did not say it was busy (transfer.bulkIdleTimeoutMs)`,
              ),
            );
            socket.destroy();
          },
        );
        const done = (v: boolean) => {
          stop();
          socket.off("drain", onDrain);
          wake = null;
          ok(v);
        };
        const onDrain = () => done(true);
        socket.on("drain", onDrain);
        wake = () => done(false);
      });
    const over = () => settled || gaveUp !== null || socket.destroyed;

    const pump = async () => {
      const it = messages[Symbol.asyncIterator]();
      let ended = false;
      try {
        const open = openFrame(capability, busyIntervalFor(o.idleTimeoutMs));
        if (!socket.write(open) && !(await drained())) return;
        for (;;) {
          if (over()) return;
          const r = await it.next();
          if (r.done) {
            ended = true;
            break;
          }
          const frame = (r.value as MaybeFramed)[FRAME];
          if (over()) {
            if (frame) o.frames.release(frame);
            return;
          }
          const bytes = frame ? grpcFramed(frame) : grpcFrame(encodeTransferMessage(r.value));
          const more = socket.write(bytes, frame ? (err) => (err ? undefined : o.frames.release(frame)) : undefined);
          if (!more && !(await drained())) return;
        }
        if (over()) return;
        socket.end();
        resultTimer = setTimeout(() => {
          finish(
            new ClientError(
              BULK_PATH,
              Status.DEADLINE_EXCEEDED,
              `no result from ${o.peer} within ${RESULT_WAIT_MS} ms`,
            ),
          );
          socket.destroy();
        }, RESULT_WAIT_MS);
        resultTimer.unref();
      } catch (e) {
        // The source failed (e.g. a Ceph read): that is the call's error, once the peer cleaned up.
        giveUp(e);
      } finally {
        if (!ended) await it.return?.(undefined).catch(() => {});
      }
    };
    void pump();
  });
}
