/**
 * Idle buffers kept by capacity and handed out again instead of allocating: the data plane's chunk
 * buffers (the source's frames, wire.ts; the destination's receive buffers, transfer-server.ts). A
 * transfer of any size then reuses a few dozen buffers instead of allocating — and garbage-collecting —
 * its own size again. At most `maxIdle` buffers wait (the agent sets it from its windows); a buffer
 * that is never given back is simply garbage-collected. When the data plane goes quiet the agent drops
 * the idle ones (`trim`, see quiet-release.ts): one role's buffers are not carried into the next.
 */
export class BufferPool {
  #idle = new Map<number, Buffer[]>();
  #count = 0;
  allocated = 0;
  reused = 0;
  /** Takes and gives so far: whether the pool was used since a moment (quiet-release.ts; no clock read per buffer). */
  uses = 0;
  /** Called when a take finds no idle buffer and allocates (quiet-release.ts: another role may be starting). */
  onAllocate: (() => void) | null = null;
  #idleBytes = 0;
  #out = 0;

  constructor(public maxIdle: number) {}

  /** A buffer of exactly `capacity` bytes, contents undefined. */
  protected take(capacity: number): Buffer {
    this.uses++;
    this.#out++;
    const b = this.#idle.get(capacity)?.pop();
    if (b) {
      this.#count--;
      this.#idleBytes -= capacity;
      this.reused++;
      return b;
    }
    this.allocated++;
    this.onAllocate?.();
    return Buffer.allocUnsafeSlow(capacity);
  }

  /** Back to the pool: nothing may read or write `b` afterwards. */
  protected give(b: Buffer): void {
    this.uses++;
    if (this.#out > 0) this.#out--;
    if (this.#count >= this.maxIdle) return;
    let list = this.#idle.get(b.length);
    if (!list) {
      list = [];
      this.#idle.set(b.length, list);
    }
    list.push(b);
    this.#count++;
    this.#idleBytes += b.length;
  }

  /** Drops every idle buffer (they are garbage-collected); returns how many bytes they held. */
  trim(): number {
    const bytes = this.#idleBytes;
    this.#idle.clear();
    this.#count = 0;
    this.#idleBytes = 0;
    return bytes;
  }

  /** Bytes the idle buffers hold. */
  get idleBytes(): number {
    return this.#idleBytes;
  }

  /**
   * Buffers taken and not given back: a transfer is using the pool. It over-counts a buffer a failed
   * transfer dropped instead of giving back (left to the garbage collector): quiet-release.ts treats a
   * pool that did not move for a whole check period as unused whatever this says.
   */
  get out(): number {
    return this.#out;
  }

  get idle(): number {
    return this.#count;
  }
}
