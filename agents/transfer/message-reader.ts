/**
 * The receiving half of gRPC's framing on a node:http2 server stream or a socket (the bulk channel,
 * bulk/server.ts): bytes → length-prefixed messages → decoded messages, as a pull-based async iterable
 * (the data-plane server's methods read their requests through it).
 *
 * Large messages (a transfer's chunks) are assembled in buffers from a ReceivePool; the decoder gets
 * a `release` callback that gives the buffer back, and the sink calls it once librbd has written the
 * chunk — so a transfer reuses a few dozen buffers whatever its size.
 *
 * On a socket (the bulk channel) the reader can take the bytes straight into its buffers (`direct`):
 * Node's `onread` mode, where the TLS layer copies each decrypted record into the buffer the reader
 * names — the rest of the message being assembled — instead of allocating a Buffer per 16 KiB record,
 * pushing it through the socket's stream and 'data' events, and copying it again. That per-record
 * garbage (1 GiB of ArrayBuffers per GiB received) drove V8 into a major GC every few dozen MiB.
 * Node documents `onread` for sockets it creates (net/tls.connect); an accepted TLS socket gets it
 * here through the same handle method and socket fields — looked up at run time, and where they are
 * missing (another Node) the reader reads 'data' events as before.
 *
 * Flow control: at most QUEUE_MESSAGES decoded messages wait for the consumer; beyond that the stream
 * is paused, HTTP/2 stops granting window (a socket stops reading: TCP's window closes), and the
 * sender stops sending — backpressure end to end.
 */
import { Status } from "nice-grpc-common";
import { AppError } from "../../src/common/errors";
import { abortError } from "../../src/common/retry";
import { BufferPool } from "./buffer-pool";

/** Decoded messages waiting for the consumer before the stream is paused. */
const QUEUE_MESSAGES = 2;
/** Messages this large or larger are assembled in pooled buffers (when the reader has a pool). */
const POOLED_FROM = 64 * 1024;
const POOL_GRAIN = 64 * 1024;

/** Reusable receive buffers, by capacity (a multiple of 64 KiB). */
export class ReceivePool extends BufferPool {
  /** `maxIdle`: the agent sets it from its write window (writesInFlight + 4, scaled to maxWindowBytes). */
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

/** The process's receive pool (shared by every transfer this agent receives). */
export const receivePool = new ReceivePool();

/**
 * Turns one message's bytes into a value. `release` is set when `bytes` came from the pool: call it
 * (or arrange for it to be called) once nothing reads `bytes` any more; a decoder that does not keep
 * `bytes` simply leaves the buffer to the garbage collector.
 */
export type Decoder<T> = (bytes: Buffer, release: (() => void) | null) => T;

/** What a reader reads: a node:http2 stream or a socket (`aborted`/`rstCode`: HTTP/2 streams only). */
export interface ByteSource {
  on(event: "data", f: (d: Buffer) => void): unknown;
  on(event: "aborted" | "end", f: () => void): unknown;
  pause(): unknown;
  resume(): unknown;
  readonly aborted?: boolean;
  readonly rstCode?: number;
}

export interface ReaderOptions<T> {
  maxMessageBytes: number;
  /** A lower limit for the first message (a small opening message: BulkOpen, a unary request). */
  maxFirstMessageBytes?: number;
  decode: Decoder<T>;
  /** Without a pool every message gets a fresh buffer. */
  pool?: ReceivePool;
  /** On a socket: read into the reader's buffers (see above) when this Node allows it. */
  direct?: boolean;
}

/** Where a socket keeps its `onread` state (net.Socket's own symbols, found by their descriptions). */
interface UserBufferSlots {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

function userBufferSlots(stream: object): UserBufferSlots | null {
  const handle = (stream as { _handle?: { useUserBuffer?: unknown } })._handle;
  if (typeof handle?.useUserBuffer !== "function") return null;
  const syms = Object.getOwnPropertySymbols(stream);
  const find = (d: string) => syms.find((x) => x.description === d);
  const [buffer, callback, generator] = [find("kBuffer"), find("kBufferCb"), find("kBufferGen")];
  // All three exist (as null) on every net.Socket of the Node versions this was written for; a socket
  // already in onread mode, or a Node that named them otherwise, keeps its 'data' events.
  const rec = stream as Record<symbol, unknown>;
  if (!buffer || !callback || !generator || rec[buffer] != null || rec[callback] != null) return null;
  return { buffer, callback, generator };
}

/** Absorbs bytes that arrive after the reader failed (they are dropped). */
let scratch: Buffer | null = null;

export class MessageReader<T> implements AsyncIterable<T> {
  #queue: T[] = [];
  #wake: (() => void) | null = null;
  #ended = false;
  #error: unknown = null;
  #prefix = Buffer.alloc(5);
  #prefixHave = 0;
  #msg: Buffer | null = null;
  /** A message was started (the first one has its own limit). */
  #started = false;
  #msgHave = 0;
  #pooled = false;
  /** Bytes read so far (what the bulk channel's idle bound watches). */
  received = 0;
  /** Which message is under way (its prefix included): a number counted up at each one's first byte; 0: none. */
  partialSince = 0;
  #messagesBegun = 0;
  /** Messages read whole so far (what the opening's deadline watches: failUnlessOpened). */
  decoded = 0;
  /** Whether bytes go straight into the reader's buffers (see above). */
  readonly direct: boolean;

  constructor(
    readonly stream: ByteSource,
    readonly opts: ReaderOptions<T>,
  ) {
    this.direct = !!opts.direct && this.#readDirect();
    if (!this.direct) {
      stream.on("data", (d: Buffer) => {
        this.received += d.length;
        if (this.#error) return; // failed or answered: nothing more is assembled
        try {
          this.#consume(d);
        } catch (e) {
          this.fail(e);
        }
      });
    }
    // A client's reset (cancel) can also end the readable side: never mistake it for a clean end.
    stream.on("aborted", () => this.fail(abortError()));
    stream.on("end", () => {
      if (stream.aborted || (stream.rstCode ?? 0) !== 0) this.fail(abortError());
      if (this.#prefixHave > 0 || this.#msg)
        this.fail(new AppError(Status.INTERNAL, "the stream ended inside a message"));
      this.#ended = true;
      this.#poke();
    });
  }

  /** Whether the source ended cleanly (every message complete). */
  get ended(): boolean {
    return this.#ended && !this.#error;
  }

  /**
   * Whether the consumer waits for the next message and none is ready: only then is the source late
   * (a consumer busy elsewhere — preparing the image, draining writes, committing — is not waiting).
   */
  get waiting(): boolean {
    return this.#wake !== null;
  }

  /**
   * The answer went back: reads on, dropping what still arrives, so that the peer's close is seen (a
   * paused socket reads nothing, its FIN or reset included, and would stay open until destroyed).
   */
  discard(): void {
    this.#error ??= new AppError(Status.CANCELLED, "the transfer was already answered");
    this.stream.resume();
  }

  /** Stops reading: the consumer sees `e` once the messages already queued are taken. */
  fail(e: unknown): void {
    this.#error ??= e;
    this.stream.pause();
    this.#poke();
  }

  /**
   * Switches the socket to onread mode: what it already buffered is taken first, then every read lands
   * in #target() and is accounted by #advance. False when the socket cannot (it keeps 'data' events).
   */
  #readDirect(): boolean {
    const slots = userBufferSlots(this.stream);
    if (!slots) return false;
    const socket = this.stream as unknown as {
      read(): Buffer | null;
      _handle: { useUserBuffer(b: Uint8Array): void };
    } & Record<symbol, unknown>;
    try {
      for (let d = socket.read(); d !== null; d = socket.read()) {
        this.received += d.length;
        this.#consume(d);
      }
    } catch (e) {
      this.fail(e);
    }
    const first = this.#target();
    socket[slots.buffer] = first;
    socket[slots.callback] = (n: number) => {
      this.received += n;
      if (this.#error) return;
      try {
        this.#advance(n);
      } catch (e) {
        this.fail(e);
      }
    };
    socket[slots.generator] = () => this.#target();
    socket._handle.useUserBuffer(first);
    return true;
  }

  /** Where the next bytes go: the rest of the prefix, or of the message being assembled. */
  #target(): Buffer {
    if (this.#error) {
      scratch ??= Buffer.allocUnsafe(64 * 1024);
      return scratch;
    }
    if (!this.#msg) return this.#prefix.subarray(this.#prefixHave);
    return this.#msg.subarray(this.#msgHave);
  }

  /** Bytes of the message under way so far (its prefix included). */
  get partialBytes(): number {
    return this.#prefixHave + (this.#msg ? 5 + this.#msgHave : 0);
  }

  /** `n` bytes were read into #target(). */
  #advance(n: number): void {
    if (!this.#msg) {
      if (this.#prefixHave === 0) this.partialSince = ++this.#messagesBegun;
      this.#prefixHave += n;
      if (this.#prefixHave < 5) return;
      this.#prefixHave = 0;
      if (this.#startMessage() > 0) return;
    } else {
      this.#msgHave += n;
      if (this.#msgHave < this.#msg.length) return;
    }
    this.#complete();
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
        if (this.#prefixHave === 0) this.partialSince = ++this.#messagesBegun;
        const n = Math.min(5 - this.#prefixHave, d.length - p);
        d.copy(this.#prefix, this.#prefixHave, p, p + n);
        this.#prefixHave += n;
        p += n;
        if (this.#prefixHave < 5) return;
        this.#prefixHave = 0;
        if (this.#startMessage() > 0) continue;
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

  /** From the prefix just read: checks it, allocates the message's buffer; returns its length. */
  #startMessage(): number {
    if (this.#prefix[0] !== 0) {
      throw new AppError(Status.UNIMPLEMENTED, "compressed messages are not accepted (send grpc-encoding identity)");
    }
    const len = this.#prefix.readUInt32BE(1);
    const limit = this.#started
      ? this.opts.maxMessageBytes
      : (this.opts.maxFirstMessageBytes ?? this.opts.maxMessageBytes);
    this.#started = true;
    if (len > limit) {
      throw new AppError(Status.RESOURCE_EXHAUSTED, `a message of ${len} bytes exceeds the limit of ${limit} bytes`);
    }
    const pool = this.opts.pool;
    this.#pooled = !!pool && len >= POOLED_FROM;
    this.#msg = pool && this.#pooled ? pool.acquire(len) : Buffer.allocUnsafe(len);
    this.#msgHave = 0;
    return len;
  }

  #complete(): void {
    const buf = this.#msg as Buffer;
    const pool = this.#pooled ? this.opts.pool : undefined;
    this.#msg = null;
    this.partialSince = 0;
    let m: T;
    try {
      m = this.opts.decode(buf, pool ? () => pool.release(buf) : null);
    } catch (e) {
      // Nothing holds a message that did not decode: its pooled buffer goes back at once.
      pool?.release(buf);
      throw e;
    }
    this.#queue.push(m);
    this.decoded++;
    if (this.#queue.length >= QUEUE_MESSAGES) this.stream.pause();
    this.#poke();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      if (this.#queue.length > 0) {
        const m = this.#queue.shift() as T;
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

/**
 * Calls `onIdle` when the sink waited `ms` for the source's next message and no byte came (the bulk
 * channel's socket, or a Transfer call's HTTP/2 stream: a caller that opens a transfer and sends nothing
 * — not even its header — must not hold the transfer's slot). Time the
 * sink spends elsewhere does not count: preparing the image before it reads, writing with the socket
 * paused by backpressure, or draining, flushing and committing after the whole stream came in — each of
 * those is bounded by the cluster's op timeout, and a complete stream must not be failed because its
 * commit was slow. Polls the reader's byte count: nothing runs per read.
 *
 * Bytes alone do not keep it waiting: a message under way must gain at least MIN_PROGRESS_BYTES per
 * `ms` this side waits for it, counted from when it began waiting with that message under way (a source
 * writes each frame at once, so only the link's speed spreads one out: 4 KiB per 30 s is 136 bytes/s). A
 * source that trickles a byte now and then into a message it never finishes would otherwise hold the
 * transfer's slot, its image and a pooled buffer for good. Time this side does not wait (paused, busy)
 * starts that count again. (A source that sends a tiny whole message once per bound is not caught.)
 */
export function watchIdle(
  socket: { isPaused(): boolean },
  reader: {
    readonly received: number;
    readonly waiting: boolean;
    readonly partialSince: number;
    readonly partialBytes: number;
  },
  ms: number,
  /** `what`: "nothing for <ms> ms", or how little a message under way gained. */
  onIdle: (what: string) => void,
): { stop(): void } {
  let last = Date.now();
  let count = reader.received;
  /** The message under way the progress count follows (its partialSince), since when, from how many bytes. */
  let following = 0;
  let from = 0;
  let fromBytes = 0;
  let wasWaiting = false;
  const timer = setInterval(
    () => {
      const now = Date.now();
      const waiting = reader.waiting && !socket.isPaused();
      if (!waiting || !wasWaiting || reader.partialSince !== following) {
        following = reader.partialSince;
        from = now;
        fromBytes = reader.partialBytes;
      }
      wasWaiting = waiting;
      if (!waiting || reader.received !== count) {
        count = reader.received;
        last = now;
      } else if (now - last >= ms) {
        stop();
        onIdle(`nothing for ${ms} ms`);
        return;
      }
      if (!waiting || following === 0 || now - from < ms) return;
      const windows = Math.floor((now - from) / ms);
      const gained = reader.partialBytes - fromBytes;
      if (gained >= MIN_PROGRESS_BYTES * windows) return;
      stop();
      onIdle(`only ${gained} bytes of a message in ${now - from} ms (at least ${MIN_PROGRESS_BYTES} per ${ms} ms)`);
    },
    Math.max(10, Math.floor(ms / 4)),
  );
  timer.unref();
  const stop = () => clearInterval(timer);
  return { stop };
}

/** What a message under way must gain per idle bound while the destination waits for it (watchIdle). */
export const MIN_PROGRESS_BYTES = 4096;

/** What a source may ask for as its busy interval (BulkOpen.busy_interval_ms, the HTTP/2 header): clamped to this. */
export const BUSY_INTERVAL_MS = { min: 50, max: 60_000 };

/**
 * The destination's half of the source's idle bound: while this side does not read — the sink has not
 * asked for the next message (preparing the image, committing) or backpressure paused the socket (writes
 * hold the stream back) — `beat` tells the source it is busy, not gone, every `intervalMs` (the source's
 * ask, clamped to BUSY_INTERVAL_MS). While the sink waits for bytes, nothing is sent: then silence is
 * the source's. The watch ends by stop().
 */
export function beatWhileBusy(
  socket: { isPaused(): boolean },
  reader: { readonly waiting: boolean },
  intervalMs: number,
  beat: () => void,
): { stop(): void } {
  const every = Math.min(BUSY_INTERVAL_MS.max, Math.max(BUSY_INTERVAL_MS.min, Math.floor(intervalMs)));
  const timer = setInterval(() => {
    if (!reader.waiting || socket.isPaused()) beat();
  }, every);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

/**
 * Calls `onLate` unless the reader has read `count` whole messages within `ms` of now: the opening of a
 * stream (a unary request; a transfer's header — after the BulkOpen on the bulk channel). A source sends
 * it at once; the idle bound alone let a caller that trickles a byte now and then hold a transfer slot (or
 * a request buffer) for as long as it kept trickling.
 */
export function failUnlessOpened(
  reader: { readonly decoded: number; readonly received: number; readonly ended: boolean },
  count: number,
  ms: number,
  onLate: () => void,
): { stop(): void } {
  const timer = setTimeout(() => {
    // Nothing at all received: the idle bound says so (the more telling reason), at the same time.
    if (reader.decoded < count && reader.received > 0 && !reader.ended) onLate();
  }, ms);
  timer.unref();
  return { stop: () => clearTimeout(timer) };
}

/**
 * watchIdle for a server call's request stream: the reader fails with DEADLINE_EXCEEDED (`message`) when
 * nothing came for `ms` while it waited (or a message under way gained too little), or when its first message (a unary request, a transfer's
 * header) is not whole `ms` after the call began; the watch ends when the stream closes (or by stop()).
 */
export function failWhenIdle(
  stream: { isPaused(): boolean; once(event: "close", fn: () => void): unknown },
  reader: MessageReader<unknown>,
  ms: number,
  message: string,
): { stop(): void } {
  const idle = watchIdle(stream, reader, ms, (what) =>
    reader.fail(new AppError(Status.DEADLINE_EXCEEDED, `${message} (${what})`)),
  );
  // Its first message whole within the same bound, however the bytes trickle in.
  const opening = failUnlessOpened(reader, 1, ms, () =>
    reader.fail(
      new AppError(Status.DEADLINE_EXCEEDED, `the stream's first message did not arrive whole within ${ms} ms`),
    ),
  );
  const stop = () => {
    idle.stop();
    opening.stop();
  };
  stream.once("close", stop);
  return { stop };
}
