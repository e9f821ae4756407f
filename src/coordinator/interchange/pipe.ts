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

  /** Who waits on something else until the pipe fails (orFailure): told the error once. */
  readonly #onFail = new Set<(e: unknown) => void>();

  constructor(readonly limitBytes: number) {}

  /**
   * `p`, or the pipe's error once it fails first. Not `Promise.race(p, <a promise of the failure>)`: every
   * such race leaves a reaction on the long-lived failure promise that holds its result — each message
   * an upload's pump waited for stayed in memory until the call ended (1 GiB uploaded, 1 GiB held). The
   * listener here goes when the wait ends.
   */
  orFailure<T>(p: Promise<T>): Promise<T> {
    if (this.#error) {
      p.catch(() => {}); // its rejection, after the pipe's error, is nobody's
      return Promise.reject(this.#error);
    }
    return new Promise<T>((resolve, reject) => {
      const failed = (e: unknown) => reject(e);
      this.#onFail.add(failed);
      p.then(
        (v) => {
          this.#onFail.delete(failed);
          resolve(v);
        },
        (e: unknown) => {
          this.#onFail.delete(failed);
          reject(e);
        },
      );
    });
  }

  /** Waits orFailure holds now (each ended wait removes its own: nothing piles up per message). */
  get waiters(): number {
    return this.#onFail.size;
  }

  get buffered(): number {
    return this.#buffered;
  }

  get done(): boolean {
    return this.#ended || this.#error !== null;
  }

  /** The stream is through: the writer ended it, and the reader took every byte (none failed it). */
  get through(): boolean {
    return this.#ended && this.#error === null && this.#chunks.length === 0;
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
    for (const f of [...this.#onFail]) f(error);
    this.#onFail.clear();
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
