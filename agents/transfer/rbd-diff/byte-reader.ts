/**
 * Reads a byte stream that arrives as pieces of any size (gRPC messages, file reads) with bounded
 * memory: small fixed-size fields are gathered across piece boundaries; bulk data is handed out as
 * it arrives, never gathered beyond what the caller asks for. `offset` is the absolute position of
 * the next byte in the stream (errors name it).
 */

export class ByteReader {
  readonly #it: AsyncIterator<Uint8Array>;
  /** Unread pieces; the first one from #head on. */
  #pieces: Buffer[] = [];
  #head = 0;
  #available = 0;
  #eof = false;
  /** Absolute position of the next unread byte. */
  offset = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.#it = source[Symbol.asyncIterator]();
  }

  /** Makes `n` bytes available; false when the stream ends first. */
  async #fill(n: number): Promise<boolean> {
    while (this.#available < n) {
      if (this.#eof) return false;
      const r = await this.#it.next();
      if (r.done) {
        this.#eof = true;
        return false;
      }
      if (r.value.length === 0) continue;
      this.#pieces.push(Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength));
      this.#available += r.value.length;
    }
    return true;
  }

  /** Exactly `n` bytes (copied when they span pieces); null when the stream ends first. */
  async exact(n: number): Promise<Buffer | null> {
    if (n === 0) return Buffer.alloc(0); // whatever the pieces are: none may be buffered at all
    if (!(await this.#fill(n))) return null;
    const first = this.#pieces[0] as Buffer;
    if (first.length - this.#head >= n) {
      const b = first.subarray(this.#head, this.#head + n);
      this.#consume(n);
      return b;
    }
    const b = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const p = this.#pieces[0] as Buffer;
      const take = Math.min(n - got, p.length - this.#head);
      p.copy(b, got, this.#head, this.#head + take);
      got += take;
      this.#consume(take);
    }
    return b;
  }

  /** Between 1 and `max` bytes, as they arrived (no copy); null when the stream has ended. */
  async some(max: number): Promise<Buffer | null> {
    if (!(await this.#fill(1))) return null;
    const first = this.#pieces[0] as Buffer;
    const take = Math.min(max, first.length - this.#head);
    const b = first.subarray(this.#head, this.#head + take);
    this.#consume(take);
    return b;
  }

  /** True when no byte is left (waits for the next piece, or the end). */
  async atEnd(): Promise<boolean> {
    return !(await this.#fill(1));
  }

  /** Bytes seen but not consumed plus `offset`: where the stream is known to end, once it has. */
  get received(): number {
    return this.offset + this.#available;
  }

  #consume(n: number): void {
    this.#head += n;
    this.#available -= n;
    this.offset += n;
    while (this.#pieces.length > 0 && this.#head >= (this.#pieces[0] as Buffer).length) {
      this.#pieces.shift();
      this.#head = 0;
    }
  }
}
