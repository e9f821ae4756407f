/**
 * The client side of TransferService.Transfer, the data plane's one bulk call, written on node:http2
 * instead of grpc-js: standard gRPC on the wire (the destination is the same grpc-js server as for
 * every other call), but this side owns the buffers. A chunk frame is read from Ceph into a buffer
 * that already holds the gRPC and protobuf prefixes (wire.ts), handed to HTTP/2 as is, and returned to
 * the frame pool when HTTP/2 has written it — grpc-js instead copies every message into a fresh
 * buffer, which on this box cost the source a 2 MiB allocation, a copy and the garbage collection of
 * both per chunk (test/bench/transport.ts measures the two clients side by side).
 *
 * What it keeps from a gRPC client: mutual TLS with the same files and server-name rule as every
 * channel (src/common/tls.ts: tlsFiles, tlsServerName), one HTTP/2 connection per peer reused by its
 * transfers (peer-connection.ts: replaced when it fails, a connect deadline, keepalive pings while a
 * transfer runs, so a dead peer fails the call instead of blocking it), cancellation by AbortSignal, flow control end to end (the next message is
 * pulled only when HTTP/2 took the previous one), and the result as a nice-grpc ClientError with the
 * server's status code and message, so callers see exactly what a nice-grpc client would have shown them.
 *
 * Giving up waits for the destination's cleanup. When the caller cancels, or the message source
 * fails, the request stream is half-closed without a trailer — which the destination takes as a
 * transfer cut short: it stops, cleans up (removes the image it created, rolls a head back) and only
 * then answers with its status. The call settles (AbortError, or the source's error) once that answer
 * came, so "the source gave up" implies "the destination is clean". If no answer comes within
 * `cancelWaitMs` (30 s) the stream is reset (CANCEL) with a logged warning: the destination still
 * cleans up, but after the call settled. A cancel that reaches a stream already complete (trailer
 * sent) cannot stop its commit: the destination's answer is taken as it is (the summary when it
 * committed). After the last message the answer is awaited at most `resultWaitMs` (10 min, as on the
 * bulk channel): a live destination stuck in its commit would otherwise hold the job's lease forever.
 */
import http2 from "node:http2";
import type { TLSSocket } from "node:tls";
import { AbortError } from "abort-controller-x";
import { ClientError, Status } from "nice-grpc-common";
import { CAPABILITY_HEADER } from "../../src/common/capability";
import { type Logger, logger } from "../../src/common/log";
import { abortable } from "../../src/common/retry";
import type { TlsConfig } from "../../src/common/tls";
import { VERSION } from "../../src/common/version";
import { type TransferMessage, TransferServiceDefinition, TransferSummary } from "../../src/gen/rbdbackup/v1/transfer";
import { busyIntervalFor, DEFAULT_IDLE_TIMEOUT_MS, RESULT_WAIT_MS, unlessBusy } from "./bulk/protocol";
import { PeerConnection, type PeerConnectionOptions } from "./peer-connection";
import { BUSY_HEADER, REASON_HEADER } from "./protocol";
import {
  encodeTransferMessage,
  FRAME,
  type FramePool,
  framePool,
  grpcFrame,
  grpcFramed,
  type MaybeFramed,
} from "./wire";

export const TRANSFER_PATH = `/${TransferServiceDefinition.fullName}/${TransferServiceDefinition.methods.transfer.name}`;
/** Largest response accepted (a TransferSummary is a few hundred bytes). */
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
/** How long a source that gave up waits for the destination's cleanup (its final status). */
export const CANCEL_WAIT_MS = 30_000;

export interface TransferClientOptions {
  /** The server check of its connection's handshake (transfer-authz.ts peerServerCheck). */
  checkServer?: PeerConnectionOptions["checkServer"];
  /**
   * Judged for every transfer once the connection is up, before its stream opens (transfer-authz.ts
   * destinationRefusal with this transfer's capability): a refusal fails the transfer with its status.
   */
  checkDestination?: (socket: TLSSocket, capability: string | undefined) => { status: Status; message: string } | null;
  /** Give up connecting after this long (UNAVAILABLE). */
  connectTimeoutMs?: number;
  /** While a transfer runs: ping the peer this often, fail the connection if a ping is not answered in `keepaliveTimeoutMs`. */
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  /** Close the connection after this long without a transfer (CLIENT_IDLE_SESSION_MS, before the peer's GOAWAY). */
  idleCloseMs?: number;
  /** Where chunk frames go back once written. */
  frames?: FramePool;
  /** After giving up (cancel, source failure): how long to wait for the destination's final status. */
  cancelWaitMs?: number;
  /**
   * A destination whose HTTP/2 window stays full this long (it took none of our data: a hung sink on a
   * live connection, which still answers pings) ends the transfer with DEADLINE_EXCEEDED and a reset
   * stream — as the bulk channel's idle bound (transfer.bulkIdleTimeoutMs, the same default).
   */
  idleTimeoutMs?: number;
  /**
   * After the last message: how long the destination may take to commit and answer (RESULT_WAIT_MS,
   * as on the bulk channel) before the call ends DEADLINE_EXCEEDED and the stream is reset.
   */
  resultWaitMs?: number;
  log?: Logger;
}

/** RST_STREAM codes → gRPC status, as in gRPC's HTTP/2 mapping. */
function statusOfRst(code: number): Status {
  const c = http2.constants;
  switch (code) {
    case c.NGHTTP2_REFUSED_STREAM:
      return Status.UNAVAILABLE;
    case c.NGHTTP2_CANCEL:
      return Status.CANCELLED;
    case c.NGHTTP2_ENHANCE_YOUR_CALM:
      return Status.RESOURCE_EXHAUSTED;
    case c.NGHTTP2_INADEQUATE_SECURITY:
      return Status.PERMISSION_DENIED;
    case c.NGHTTP2_NO_ERROR:
    case c.NGHTTP2_PROTOCOL_ERROR:
    case c.NGHTTP2_INTERNAL_ERROR:
    case c.NGHTTP2_FLOW_CONTROL_ERROR:
    case c.NGHTTP2_FRAME_SIZE_ERROR:
    case c.NGHTTP2_COMPRESSION_ERROR:
      return Status.INTERNAL;
    default:
      return Status.UNAVAILABLE;
  }
}

function decodeGrpcMessage(v: unknown): string {
  if (typeof v !== "string") return "";
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

function headerOf(h: http2.IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Transfers to one peer agent, over one HTTP/2 connection they share (peer-connection.ts). */
export class TransferClient {
  readonly #conn: PeerConnection;
  readonly #checkDestination: TransferClientOptions["checkDestination"];
  /** The wait for each connecting session, shared by the transfers judging it (#connected). */
  readonly #ready = new WeakMap<http2.ClientHttp2Session, Promise<TLSSocket>>();
  readonly #opts: { frames: FramePool; cancelWaitMs: number; idleTimeoutMs: number; resultWaitMs: number; log: Logger };

  constructor(
    readonly address: string,
    tls: TlsConfig,
    opts: TransferClientOptions = {},
  ) {
    this.#conn = new PeerConnection(address, tls, {
      ...(opts.checkServer ? { checkServer: opts.checkServer } : {}),
      connectTimeoutMs: opts.connectTimeoutMs ?? 20_000,
      keepaliveMs: opts.keepaliveMs ?? 15_000,
      keepaliveTimeoutMs: opts.keepaliveTimeoutMs ?? 10_000,
      ...(opts.idleCloseMs !== undefined ? { idleCloseMs: opts.idleCloseMs } : {}),
    });
    this.#checkDestination = opts.checkDestination;
    this.#opts = {
      frames: opts.frames ?? framePool,
      cancelWaitMs: opts.cancelWaitMs ?? CANCEL_WAIT_MS,
      idleTimeoutMs: opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
      resultWaitMs: opts.resultWaitMs ?? RESULT_WAIT_MS,
      log: opts.log ?? logger({ component: "transfer-client" }),
    };
  }

  /**
   * Streams `messages` to the peer; resolves with its summary or rejects with a ClientError (the
   * server's status), the messages' own error (e.g. a failed read), or an AbortError. After a cancel
   * or a failed source it settles only once the peer answered (it has cleaned up), or after
   * `cancelWaitMs`.
   */
  transfer(
    messages: AsyncIterable<TransferMessage>,
    signal: AbortSignal,
    capability?: string,
  ): Promise<TransferSummary> {
    if (signal.aborted) return Promise.reject(new AbortError());
    const check = this.#checkDestination;
    if (!check) return this.#send(messages, signal, capability);
    return this.#connected(signal).then((socket) => {
      if (signal.aborted) throw new AbortError(); // aborted while the check waited: nothing sent
      const refusal = check(socket, capability);
      if (refusal) {
        this.#opts.log.warn("refusing to send to the destination", { peer: this.address, why: refusal.message });
        throw new ClientError(TRANSFER_PATH, refusal.status, `refusing to send to ${this.address}: ${refusal.message}`);
      }
      return this.#send(messages, signal, capability);
    });
  }

  /**
   * The TLS socket of the connection to the peer once it is up (the connection is shared: a transfer
   * judges it for itself, with its own capability). UNAVAILABLE when it fails (its connect deadline is
   * the connection's), AbortError on abort.
   */
  #connected(signal: AbortSignal): Promise<TLSSocket> {
    let session: http2.ClientHttp2Session;
    try {
      session = this.#conn.session();
    } catch (e) {
      return Promise.reject(
        new ClientError(TRANSFER_PATH, Status.UNAVAILABLE, `cannot reach ${this.address}: ${(e as Error).message}`),
      );
    }
    if (!session.connecting) return Promise.resolve(session.socket as TLSSocket);
    // One wait per connecting session, however many transfers wait on it (no listener per transfer).
    let ready = this.#ready.get(session);
    if (!ready) {
      ready = new Promise<TLSSocket>((resolve, reject) => {
        const unreachable = (why: string) =>
          new ClientError(TRANSFER_PATH, Status.UNAVAILABLE, `cannot reach ${this.address}: ${why}`);
        const done = (err?: unknown) => {
          session.off("connect", onConnect);
          session.off("close", onClose);
          session.off("error", onError);
          if (err) reject(err);
          else resolve(session.socket as TLSSocket);
        };
        const onConnect = () => done();
        const onError = (e: Error) => done(unreachable(e.message));
        const onClose = () => done(unreachable("the connection closed while connecting"));
        session.once("connect", onConnect);
        session.once("error", onError);
        session.once("close", onClose);
      });
      ready.catch(() => {}); // every waiter gets the rejection; none left unhandled
      this.#ready.set(session, ready);
    }
    return abortable(ready, signal, () => new AbortError());
  }

  #send(messages: AsyncIterable<TransferMessage>, signal: AbortSignal, capability?: string): Promise<TransferSummary> {
    let session: http2.ClientHttp2Session;
    let stream: http2.ClientHttp2Stream;
    try {
      session = this.#conn.session();
      stream = session.request(
        {
          ":method": "POST",
          ":path": TRANSFER_PATH,
          "content-type": "application/grpc+proto",
          te: "trailers",
          "user-agent": `rbdbackup-agent/${VERSION}`,
          "grpc-accept-encoding": "identity",
          ...(capability ? { [CAPABILITY_HEADER]: capability } : {}),
          [BUSY_HEADER]: String(busyIntervalFor(this.#opts.idleTimeoutMs)),
        },
        { endStream: false },
      );
    } catch (e) {
      return Promise.reject(
        new ClientError(TRANSFER_PATH, Status.UNAVAILABLE, `cannot reach ${this.address}: ${(e as Error).message}`),
      );
    }
    this.#conn.began(session);
    const frames = this.#opts.frames;

    return new Promise<TransferSummary>((resolve, reject) => {
      let settled = false;
      let status: number | undefined;
      let statusMessage = "";
      const received: Buffer[] = [];
      let receivedBytes = 0;
      let transportError: (Error & { code?: string }) | undefined;

      /** Set once this side gave up: why, and the bound on waiting for the peer's answer. */
      let gaveUp: { error: unknown; timer: NodeJS.Timeout } | null = null;
      /** Set once the whole stream was sent: the bound on waiting for the peer's answer. */
      let resultTimer: NodeJS.Timeout | null = null;

      /** When the destination last said this stream is busy (a busy PING): its silence since is not idleness. */
      let busyAt = 0;
      const unbusy = this.#conn.onBusy(session, stream, () => {
        busyAt = Date.now();
      });
      const finish = (err: unknown, value?: TransferSummary) => {
        if (settled) return;
        settled = true;
        unbusy();
        if (resultTimer) clearTimeout(resultTimer);
        signal.removeEventListener("abort", onAbort);
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
      /**
       * Stops sending and half-closes the stream without a trailer; the peer takes that as a transfer
       * cut short, cleans up, then answers — `finish` runs on that answer (or on the deadline).
       */
      const giveUp = (error: unknown) => {
        if (settled || gaveUp) return;
        const timer = setTimeout(() => {
          this.#opts.log.warn("the destination did not confirm its cleanup in time; resetting the stream", {
            peer: this.address,
            waitedMs: this.#opts.cancelWaitMs,
          });
          finish(error);
          if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
        }, this.#opts.cancelWaitMs);
        gaveUp = { error, timer };
        if (stream.closed || stream.destroyed) {
          finish(error);
          return;
        }
        if (!stream.writableEnded) {
          try {
            stream.end();
          } catch {
            finish(error);
            if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
          }
        }
      };
      const onAbort = () => giveUp(new AbortError());
      signal.addEventListener("abort", onAbort, { once: true });
      if (signal.aborted) onAbort(); // aborted before the listener was added: it would never fire

      const takeStatus = (h: http2.IncomingHttpHeaders) => {
        const s = headerOf(h, "grpc-status");
        if (s === undefined) return;
        status = Number(s);
        statusMessage = decodeGrpcMessage(headerOf(h, "grpc-message"));
        if (status !== Status.OK) {
          // The peer gave up (it may still be reading): settle now, stop sending, free the stream.
          const err = new ClientError(TRANSFER_PATH, status as Status, statusMessage);
          const reason = headerOf(h, REASON_HEADER);
          finish(reason ? Object.assign(err, { refusalReason: reason }) : err);
          if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
        }
      };
      stream.on("response", (h) => {
        const httpStatus = Number(h[":status"]);
        const ct = headerOf(h, "content-type") ?? "";
        if (httpStatus !== 200 || !ct.startsWith("application/grpc")) {
          status = httpStatus === 200 ? Status.UNKNOWN : Status.UNAVAILABLE;
          statusMessage = `the peer ${this.address} answered HTTP ${httpStatus} (${ct || "no content-type"}), not gRPC`;
          stream.close(http2.constants.NGHTTP2_CANCEL);
          return;
        }
        takeStatus(h); // a trailers-only response carries the status here
      });
      stream.on("data", (d: Buffer) => {
        receivedBytes += d.length;
        if (receivedBytes > MAX_RESPONSE_BYTES) {
          status = Status.RESOURCE_EXHAUSTED;
          statusMessage = `the peer's response exceeds ${MAX_RESPONSE_BYTES} bytes`;
          stream.close(http2.constants.NGHTTP2_CANCEL);
          return;
        }
        received.push(d);
      });
      stream.on("trailers", takeStatus);
      stream.on("error", (e) => {
        // A reset by the peer shows as its RST code on close; anything else (socket, TLS) is kept.
        if ((e as { code?: string }).code !== "ERR_HTTP2_STREAM_ERROR") transportError ??= e;
      });
      stream.on("close", () => {
        this.#conn.ended();
        if (settled) return;
        if (status === undefined) {
          // The session's own error (one listener per session: PeerConnection.errorOf), when the stream had none.
          transportError ??= this.#conn.errorOf(session);
          const rst = stream.rstCode ?? http2.constants.NGHTTP2_INTERNAL_ERROR;
          // A connection that died (the peer killed, the network cut) cancels its streams: that is the
          // peer gone (UNAVAILABLE, retried), not a cancel of the job.
          const lost = !transportError && (session.destroyed || session.closed);
          finish(
            lost
              ? new ClientError(TRANSFER_PATH, Status.UNAVAILABLE, `the connection to ${this.address} was lost`)
              : transportError
                ? new ClientError(
                    TRANSFER_PATH,
                    Status.UNAVAILABLE,
                    `the connection to ${this.address} failed: ${transportError.message}`,
                  )
                : new ClientError(
                    TRANSFER_PATH,
                    statusOfRst(rst),
                    `the peer ${this.address} reset the stream (HTTP/2 code ${rst}) without a gRPC status`,
                  ),
          );
          return;
        }
        if (status !== Status.OK) {
          finish(new ClientError(TRANSFER_PATH, status as Status, statusMessage));
          return;
        }
        const body = Buffer.concat(received);
        if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) {
          finish(
            new ClientError(
              TRANSFER_PATH,
              Status.INTERNAL,
              `the peer ${this.address} sent a malformed response (${body.length} bytes)`,
            ),
          );
          return;
        }
        try {
          finish(undefined, TransferSummary.decode(body.subarray(5)));
        } catch (e) {
          finish(
            new ClientError(
              TRANSFER_PATH,
              Status.INTERNAL,
              `cannot decode the peer's response: ${(e as Error).message}`,
            ),
          );
        }
      });

      // The pump: one message at a time, each written when HTTP/2 has room (drain), so a slow
      // destination slows the reads. It stops when the call is settled (the peer answered early) or
      // given up (the caller cancelled) and closes the message source, so the source's reads stop too.
      const drained = () =>
        new Promise<void>((ok) => {
          const idleMs = this.#opts.idleTimeoutMs;
          const stop = unlessBusy(
            idleMs,
            () => busyAt,
            () => {
              done();
              finish(
                new ClientError(
                  TRANSFER_PATH,
                  Status.DEADLINE_EXCEEDED,
                  `the destination ${this.address} took no data for ${idleMs} ms and did not say it was busy (transfer.bulkIdleTimeoutMs)`,
                ),
              );
              if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
            },
          );
          const done = () => {
            stop();
            stream.off("drain", done);
            stream.off("close", done);
            ok();
          };
          stream.on("drain", done);
          stream.on("close", done);
        });
      const pump = async () => {
        const it = messages[Symbol.asyncIterator]();
        let ended = false;
        try {
          for (;;) {
            if (settled || gaveUp || stream.closed) return;
            const r = await it.next();
            if (r.done) {
              ended = true;
              break;
            }
            const frame = (r.value as MaybeFramed)[FRAME];
            if (settled || gaveUp || stream.closed) {
              if (frame) frames.release(frame); // pulled, never written
              return;
            }
            const bytes = frame ? grpcFramed(frame) : grpcFrame(encodeTransferMessage(r.value));
            const more = stream.write(bytes, frame ? (err) => (err ? undefined : frames.release(frame)) : undefined);
            if (!more) await drained();
          }
          if (!stream.closed && !gaveUp) {
            stream.end();
            const waitMs = this.#opts.resultWaitMs;
            resultTimer = setTimeout(() => {
              finish(
                new ClientError(
                  TRANSFER_PATH,
                  Status.DEADLINE_EXCEEDED,
                  `no result from ${this.address} within ${waitMs} ms of the transfer's end`,
                ),
              );
              if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
            }, waitMs);
            resultTimer.unref();
          }
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

  close(): void {
    this.#conn.close();
  }
}
