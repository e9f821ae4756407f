/**
 * A bounded byte pipe between two gRPC streams in one process (the API caller's and the agent's): the
 * writer's `write` resolves only while fewer than `limitBytes` are buffered, so a fast side waits for a
 * slow one instead of the coordinator buffering a whole stream; HTTP/2 flow control carries the wait
 * back to the writer's peer. Either side may fail the pipe (the other side's next read or write throws
 * that error); `end` is the writer's clean end. Each chunk is charged at least MIN_CHARGE bytes against
 * the limit: a caller sending 1-byte messages would otherwise queue millions of them (~100 bytes of heap
 * each, and a reader's shift that grows with the queue) within the byte limit.
 */

import { Status } from "nice-grpc-common";
import { AppError } from "../../common/errors";

/** The least a chunk counts against the pipe's limit, bytes. */
export const MIN_CHARGE = 4096;
const charge = (c: Uint8Array): number => Math.max(c.length, MIN_CHARGE);

export class BytePipe {
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  /** What the buffered chunks are charged against limitBytes (each at least MIN_CHARGE). */
  #charged = 0;
  #ended = false;
  #error: unknown = null;
  /** Wakes the reader (data, end, error) and the writer (room, error). */
  #readerWake: (() => void) | null = null;
  #writerWake: (() => void) | null = null;
  /** Bytes written so far. */
  written = 0;
  /** Bytes the reader took so far. */
  taken = 0;

  /** Rejects with the pipe's error once it fails; never settles otherwise (for a wait on something else to race). */
  readonly failure: Promise<never>;
  #rejectFailure: (e: unknown) => void = () => {};

  constructor(readonly limitBytes: number) {
    this.failure = new Promise<never>((_, reject) => {
      this.#rejectFailure = reject;
    });
    this.failure.catch(() => {}); // nobody racing it is no unhandled rejection
  }

  get buffered(): number {
    return this.#buffered;
  }

  get done(): boolean {
    return this.#ended || this.#error !== null;
  }

  /** Appends a chunk; resolves once the buffer is below the limit again. Throws the pipe's error. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.#error) throw this.#error;
    if (this.#ended) throw new AppError(Status.INTERNAL, "write after the end of the stream");
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    this.#charged += charge(chunk);
    this.written += chunk.length;
    this.#wakeReader();
    while (this.#charged >= this.limitBytes && !this.#error) {
      await new Promise<void>((resolve) => {
        this.#writerWake = resolve;
      });
    }
    if (this.#error) throw this.#error;
  }

  /** The writer is done: the reader gets what is buffered, then the end. */
  end(): void {
    if (this.done) return;
    this.#ended = true;
    this.#wakeReader();
  }

  /** Fails both sides with `error` (the first error wins; buffered data is dropped). */
  fail(error: unknown): void {
    if (this.#error) return;
    this.#error = error;
    this.#chunks = [];
    this.#buffered = 0;
    this.#charged = 0;
    this.#wakeReader();
    this.#wakeWriter();
    this.#rejectFailure(error);
  }

  /** The chunks in order until the end; throws the pipe's error. One reader at a time. */
  async *read(): AsyncGenerator<Uint8Array> {
    for (;;) {
      if (this.#error) throw this.#error;
      const c = this.#chunks.shift();
      if (c) {
        this.#buffered -= c.length;
        this.#charged -= charge(c);
        this.taken += c.length;
        this.#wakeWriter();
        yield c;
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => {
        this.#readerWake = resolve;
      });
    }
  }

  #wakeReader(): void {
    const w = this.#readerWake;
    this.#readerWake = null;
    w?.();
  }

  #wakeWriter(): void {
    const w = this.#writerWake;
    this.#writerWake = null;
    w?.();
  }
}
