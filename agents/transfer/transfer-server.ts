/**
 * The server side of TransferService.Transfer on node:http2 (routed past grpc-js by
 * src/common/http2-server.ts; the rest of the agent's gRPC server is grpc-js). Same wire protocol and
 * the same handler as before: messages are parsed from the HTTP/2 stream and handed to the sink one
 * at a time; the result is a normal gRPC response (a TransferSummary, or a status with its message
 * — always as a trailers-only response for errors).
 *
 * Why not grpc-js: it assembles every 2 MiB message into a freshly allocated buffer, so a transfer
 * allocated and garbage-collected its own size again on the destination's main thread. Here a
 * chunk's bytes are assembled into a buffer from a ReceivePool, and the sink gives the buffer back
 * once librbd has written it (the message's RELEASE callback), so a transfer reuses a few dozen
 * buffers whatever its size.
 *
 * Flow control: at most QUEUE_MESSAGES parsed messages wait for the sink; beyond that the stream is
 * paused, HTTP/2 stops granting window, and the source stops sending — backpressure end to end.
 */
import http2 from "node:http2";
import { AbortError } from "abort-controller-x";
import { Status } from "nice-grpc-common";
import { AppError, toServerError } from "../../src/common/errors";
import { TransferMessage, TransferSummary } from "../../src/gen/rbdbackup/v1/transfer";
import { BufferPool } from "./buffer-pool";
import { grpcFrame, RELEASE, type Releasable } from "./wire";

/** Parsed messages waiting for the sink before the stream is paused. */
const QUEUE_MESSAGES = 2;
/** Messages this large or larger are assembled in pooled buffers. */
const POOLED_FROM = 64 * 1024;
const POOL_GRAIN = 64 * 1024;
/** After an early error: how long a client may keep sending before its stream is reset. */
const LINGER_MS = 10_000;

/** Reusable receive buffers, by capacity (a multiple of 64 KiB). */
export class ReceivePool extends BufferPool {
  /** `maxIdle`: the agent sets it from its write window (writesInFlight + 4). */
  constructor(maxIdle = 24) {
    super(maxIdle);
  }

  acquire(length: number): Buffer {
    return this.take(Math.ceil(length / POOL_GRAIN) * POOL_GRAIN).subarray(0, length);
  }

  release(b: Buffer): void {
    this.give(Buffer.from(b.buffer, 0, b.buffer.byteLength)); // the whole allocation (allocUnsafeSlow: offset 0)
  }
}

export const receivePool = new ReceivePool();

/** Splits the stream's bytes into gRPC messages and decodes them; a pull-based async iterable. */
class MessageReader implements AsyncIterable<TransferMessage> {
  #queue: TransferMessage[] = [];
  #wake: (() => void) | null = null;
  #ended = false;
  #error: unknown = null;
  #prefix = Buffer.alloc(5);
  #prefixHave = 0;
  #msg: Buffer | null = null;
  #msgHave = 0;
  #pooled = false;

  constructor(
    readonly stream: http2.ServerHttp2Stream,
    readonly maxMessageBytes: number,
    readonly pool: ReceivePool,
  ) {
    stream.on("data", (d: Buffer) => {
      try {
        this.#consume(d);
      } catch (e) {
        this.fail(e);
      }
    });
    // A client's reset (cancel) can also end the readable side: never mistake it for a clean end.
    stream.on("aborted", () => this.fail(new AbortError()));
    stream.on("end", () => {
      if (stream.aborted || (stream.rstCode ?? 0) !== 0) this.fail(new AbortError());
      if (this.#prefixHave > 0 || this.#msg)
        this.fail(new AppError(Status.INTERNAL, "the stream ended inside a message"));
      this.#ended = true;
      this.#poke();
    });
  }

  fail(e: unknown): void {
    this.#error ??= e;
    this.stream.pause();
    this.#poke();
  }

  #poke(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  #consume(d: Buffer): void {
    let p = 0;
    while (p < d.length) {
      if (!this.#msg) {
        const n = Math.min(5 - this.#prefixHave, d.length - p);
        d.copy(this.#prefix, this.#prefixHave, p, p + n);
        this.#prefixHave += n;
        p += n;
        if (this.#prefixHave < 5) return;
        this.#prefixHave = 0;
        if (this.#prefix[0] !== 0) {
          throw new AppError(
            Status.UNIMPLEMENTED,
            "compressed messages are not accepted (send grpc-encoding identity)",
          );
        }
        const len = this.#prefix.readUInt32BE(1);
        if (len > this.maxMessageBytes) {
          throw new AppError(
            Status.RESOURCE_EXHAUSTED,
            `a message of ${len} bytes exceeds the limit of ${this.maxMessageBytes} bytes`,
          );
        }
        this.#pooled = len >= POOLED_FROM;
        this.#msg = this.#pooled ? this.pool.acquire(len) : Buffer.allocUnsafe(len);
        this.#msgHave = 0;
        if (len > 0) continue;
      } else {
        const n = Math.min(this.#msg.length - this.#msgHave, d.length - p);
        d.copy(this.#msg, this.#msgHave, p, p + n);
        this.#msgHave += n;
        p += n;
        if (this.#msgHave < this.#msg.length) return;
      }
      this.#complete();
    }
  }

  #complete(): void {
    const buf = this.#msg as Buffer;
    const pooled = this.#pooled;
    this.#msg = null;
    let m: TransferMessage;
    try {
      m = TransferMessage.decode(buf);
    } catch (e) {
      throw new AppError(Status.INVALID_ARGUMENT, `a message that is not a TransferMessage: ${(e as Error).message}`);
    }
    // Only a chunk's data points into the buffer for long; anything else decoded from a pooled
    // buffer (never seen in practice: those messages are small) just leaves it to the GC.
    if (pooled && m.body?.$case === "chunk") (m as Releasable)[RELEASE] = () => this.pool.release(buf);
    this.#queue.push(m);
    if (this.#queue.length >= QUEUE_MESSAGES) this.stream.pause();
    this.#poke();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<TransferMessage> {
    for (;;) {
      const m = this.#queue.shift();
      if (m) {
        if (this.#queue.length < QUEUE_MESSAGES && !this.#error) this.stream.resume();
        yield m;
        continue;
      }
      if (this.#error) throw this.#error;
      if (this.#ended) return;
      await new Promise<void>((r) => {
        this.#wake = r;
      });
    }
  }
}

function grpcMessageHeader(s: string): string {
  // gRPC's percent-encoding of grpc-message (every peer percent-decodes it).
  return encodeURIComponent(s);
}

export type TransferHandler = (
  messages: AsyncIterable<TransferMessage>,
  signal: AbortSignal,
) => Promise<Partial<TransferSummary>>;

/** The http2 stream handler for TransferService.Transfer. */
export function transferStreamHandler(
  handler: TransferHandler,
  opts: { maxMessageBytes: number; pool?: ReceivePool },
): (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void {
  const pool = opts.pool ?? receivePool;
  return (stream, headers) => {
    stream.on("error", () => {}); // a reset by the client shows as close; the sink sees the abort
    const ct = String(headers["content-type"] ?? "");
    if (headers[":method"] !== "POST" || !ct.startsWith("application/grpc")) {
      stream.respond({ ":status": 415 }, { endStream: true });
      return;
    }
    const respondStatus = (code: Status, message: string) => {
      if (stream.closed || stream.destroyed || stream.headersSent) return;
      stream.respond(
        {
          ":status": 200,
          "content-type": "application/grpc+proto",
          "grpc-status": String(code),
          "grpc-message": grpcMessageHeader(message),
        },
        { endStream: true },
      );
      // The client stops sending when it reads the status; one that does not is reset.
      stream.resume();
      const t = setTimeout(() => {
        if (!stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
      }, LINGER_MS);
      t.unref();
      stream.once("close", () => clearTimeout(t));
    };
    const enc = headers["grpc-encoding"];
    if (enc !== undefined && enc !== "identity") {
      respondStatus(Status.UNIMPLEMENTED, `grpc-encoding ${String(enc)} is not supported; send identity`);
      return;
    }
    const ac = new AbortController();
    stream.once("close", () => ac.abort(new AbortError()));
    const reader = new MessageReader(stream, opts.maxMessageBytes, pool);
    handler(reader, ac.signal).then(
      (summary) => {
        if (stream.closed || stream.destroyed) return;
        let body: Buffer;
        try {
          body = grpcFrame(TransferSummary.encode(TransferSummary.fromPartial(summary)).finish());
        } catch (e) {
          respondStatus(Status.INTERNAL, `cannot encode the transfer's summary: ${(e as Error).message}`);
          return;
        }
        stream.respond(
          { ":status": 200, "content-type": "application/grpc+proto", "grpc-accept-encoding": "identity" },
          { waitForTrailers: true },
        );
        stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": String(Status.OK) }));
        stream.end(body);
      },
      (e) => {
        const se = toServerError(e);
        respondStatus(se.code, se.details);
      },
    );
  };
}
