/**
 * One gRPC call as the data-plane server sees it: a node:http2 stream plus the response side of the
 * gRPC protocol — a cancellation signal (the client's reset or the connection's end, or the deadline
 * the client sent as grpc-timeout), a reply (headers, one length-prefixed message, grpc-status OK in
 * the trailers) or a failure (a trailers-only response with grpc-status and the percent-encoded
 * grpc-message, as every gRPC peer reads them). A call answers once; later answers are ignored.
 */
import http2 from "node:http2";
import { Status } from "nice-grpc-common";
import { toServerError } from "../../src/common/errors";
import { abortError } from "../../src/common/retry";
import { REASON_HEADER, reasonOf } from "./protocol";
import { grpcFrame } from "./wire";

/** After an early failure: how long a client may keep sending before its stream is closed. */
const LINGER_MS = 10_000;

/** The longest delay setTimeout honours (a longer one fires after 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** grpc-timeout units, in ms (gRPC over HTTP/2: "H", "M", "S", "m", "u", "n"). */
const TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

export class ServerCall {
  readonly #ac = new AbortController();
  #answered = false;
  #deadline: NodeJS.Timeout | null = null;

  constructor(
    readonly stream: http2.ServerHttp2Stream,
    readonly path: string,
    timeout: string | undefined,
    /** The request's headers (what the call's handler may read besides the path and timeout). */
    readonly headers: http2.IncomingHttpHeaders = {},
  ) {
    stream.on("error", () => {}); // a reset by the client shows as close: the signal tells the handler
    stream.once("close", () => {
      if (this.#deadline) clearTimeout(this.#deadline);
      this.#ac.abort(abortError());
    });
    if (timeout !== undefined) this.#startDeadline(timeout);
  }

  /** Aborted when the call ends before its answer (client cancel, connection lost, deadline). */
  get signal(): AbortSignal {
    return this.#ac.signal;
  }

  /** Whether the call has been answered (or its stream is gone). */
  get done(): boolean {
    return this.#answered || this.stream.closed || this.stream.destroyed;
  }

  #startDeadline(value: string): void {
    const m = /^(\d{1,8})([HMSmun])$/.exec(value);
    if (!m) {
      this.fail(Status.INTERNAL, `invalid grpc-timeout value "${value}"`);
      return;
    }
    const ms = Math.ceil(Number(m[1]) * (TIMEOUT_UNIT_MS[m[2] as string] as number));
    // setTimeout takes at most 2^31-1 ms (~24.8 days) and fires at once beyond it: a longer deadline is none.
    if (ms > MAX_TIMER_MS) return;
    this.#deadline = setTimeout(() => {
      this.fail(Status.DEADLINE_EXCEEDED, "Deadline exceeded");
      this.#ac.abort(Object.assign(new Error("the call's deadline passed"), { name: "AbortError" }));
    }, ms);
    this.#deadline.unref();
  }

  /** Answers with one message and grpc-status OK. */
  reply(message: Uint8Array): void {
    if (this.done) return;
    this.#answered = true;
    const stream = this.stream;
    stream.respond(
      { ":status": 200, "content-type": "application/grpc+proto", "grpc-accept-encoding": "identity" },
      { waitForTrailers: true },
    );
    stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": String(Status.OK) }));
    stream.end(grpcFrame(message));
  }

  /** Answers with a failure status (trailers-only), and its typed reason when it has one. */
  fail(code: Status, message: string, reason = ""): void {
    if (this.done || this.stream.headersSent) return;
    this.#answered = true;
    const stream = this.stream;
    stream.respond(
      {
        ":status": 200,
        "content-type": "application/grpc+proto",
        "grpc-status": String(code),
        "grpc-message": encodeGrpcMessage(message),
        ...(reason ? { [REASON_HEADER]: reason } : {}),
      },
      { endStream: true },
    );
    // The client stops sending when it reads the status; one that does not is cut off.
    stream.resume();
    const t = setTimeout(() => {
      if (!stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    }, LINGER_MS);
    t.unref();
    stream.once("close", () => clearTimeout(t));
  }

  /** Answers with the status any failure deserves (src/common/errors.ts). */
  failWith(e: unknown): void {
    const se = toServerError(e);
    this.fail(se.code, se.details, reasonOf(e));
  }
}

/**
 * gRPC's percent-encoding of grpc-message (PROTOCOL-HTTP2.md): each UTF-8 byte outside 0x20–0x7E, and
 * '%', as %XX; everything else as it is. Not encodeURIComponent: grpc-js decodes with decodeURI, which
 * leaves %3A, %2C, %2F… encoded, so a message's ':' reached its callers as "%3A".
 */
export function encodeGrpcMessage(message: string): string {
  let out = "";
  for (const b of Buffer.from(message, "utf8")) {
    out +=
      b >= 0x20 && b <= 0x7e && b !== 0x25
        ? String.fromCharCode(b)
        : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
