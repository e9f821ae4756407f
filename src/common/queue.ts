/**
 * An unbounded-by-design async queue for control messages (a session's outgoing messages): push
 * never blocks; the consumer iterates until close(). Control traffic is small and rate-limited by its
 * producers (heartbeats, leases, progress a few times a second); bulk data never goes through it.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #waiter: (() => void) | null = null;
  #closed = false;
  #error: unknown = null;

  push(item: T): boolean {
    if (this.#closed) return false;
    this.#items.push(item);
    this.#wake();
    return true;
  }

  /** Ends the iteration after the queued items (or at once with `error`). */
  close(error?: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    if (error !== undefined) {
      this.#error = error;
      this.#items = [];
    }
    this.#wake();
  }

  get closed(): boolean {
    return this.#closed;
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      while (this.#items.length > 0) yield this.#items.shift() as T;
      if (this.#closed) {
        if (this.#error) throw this.#error;
        return;
      }
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
      });
    }
  }
}
