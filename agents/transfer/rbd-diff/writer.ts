/**
 * Writes an `rbd export-diff` stream (v1 or v2) from records: metadata first (from/to snapshot,
 * size), then data and zero records in ascending, non-overlapping, non-empty order, then 'e'. Each
 * call returns the bytes to append (a record's header and, for 'w', the caller's data buffer as is: no
 * copy). The writer refuses what Ceph's importer or `merge-diff` would: records out of order, past the
 * size, empty, or after the end — so every stream it writes is one `rbd import-diff` applies.
 */
import { bannerOf, type DiffVersion, MAX_SNAP_NAME_BYTES, PROTECT_DECLARED_LENGTH, TAG } from "./format";

export class RbdDiffWriter {
  #size: number | null = null;
  #dataEnd = 0;
  #ended = false;
  /** Bytes of the stream produced so far. */
  bytes = 0;

  constructor(readonly version: DiffVersion) {}

  /** The banner, then the metadata records: 'f' (when set), 't' (when set), 'p' (v2, with a to-snapshot; its length field as Ceph writes it, see format.ts), 's'. */
  begin(m: { fromSnapshot?: string; toSnapshot?: string; size: number; isProtected?: boolean }): Buffer[] {
    if (this.#size !== null) throw new Error("rbd-diff writer: begin() called twice");
    if (!Number.isSafeInteger(m.size) || m.size < 0) throw new Error(`rbd-diff writer: bad image size ${m.size}`);
    const out = [bannerOf(this.version)];
    if (m.fromSnapshot) out.push(this.#name(TAG.from, m.fromSnapshot));
    if (m.toSnapshot) out.push(this.#name(TAG.to, m.toSnapshot));
    if (this.version === 2 && m.toSnapshot) {
      const p = this.#head(TAG.protect, PROTECT_DECLARED_LENGTH, 1);
      p.writeUInt8(m.isProtected ? 1 : 0, 9);
      out.push(p);
    }
    const s = this.#head(TAG.size, 8, 8);
    s.writeBigUInt64LE(BigInt(m.size), this.#headBytes());
    out.push(s);
    this.#size = m.size;
    return this.#count(out);
  }

  /** A 'w' record: its header, then `data` itself. */
  data(offset: number, data: Uint8Array): Buffer[] {
    this.#range(offset, data.length);
    const h = this.#head(TAG.write, 16 + data.length, 16);
    const at = this.#headBytes();
    h.writeBigUInt64LE(BigInt(offset), at);
    h.writeBigUInt64LE(BigInt(data.length), at + 8);
    return this.#count([h, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
  }

  /** A 'z' record: the range reads as zeros. */
  zero(offset: number, length: number): Buffer[] {
    this.#range(offset, length);
    const h = this.#head(TAG.zero, 16, 16);
    const at = this.#headBytes();
    h.writeBigUInt64LE(BigInt(offset), at);
    h.writeBigUInt64LE(BigInt(length), at + 8);
    return this.#count([h]);
  }

  /** The 'e' record (it has no length field in either version). */
  end(): Buffer[] {
    if (this.#size === null) throw new Error("rbd-diff writer: end() before begin()");
    if (this.#ended) throw new Error("rbd-diff writer: end() called twice");
    this.#ended = true;
    return this.#count([Buffer.from([TAG.end])]);
  }

  get ended(): boolean {
    return this.#ended;
  }

  #range(offset: number, length: number): void {
    if (this.#size === null) throw new Error("rbd-diff writer: a data record before begin()");
    if (this.#ended) throw new Error("rbd-diff writer: a data record after end()");
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || length <= 0)
      throw new Error(`rbd-diff writer: bad extent ${offset}+${length}`);
    if (offset < this.#dataEnd)
      throw new Error(`rbd-diff writer: extent ${offset} overlaps or precedes ${this.#dataEnd}`);
    if (offset + length > this.#size)
      throw new Error(`rbd-diff writer: extent ${offset}+${length} lies beyond the size ${this.#size}`);
    this.#dataEnd = offset + length;
  }

  /** Tag (+ le64 payload length in v2), with room for `fixed` bytes of payload after it. */
  #head(tag: number, payloadLength: number, fixed: number): Buffer {
    const b = Buffer.alloc(this.#headBytes() + fixed);
    b[0] = tag;
    if (this.version === 2) b.writeBigUInt64LE(BigInt(payloadLength), 1);
    return b;
  }

  #headBytes(): number {
    return this.version === 2 ? 9 : 1;
  }

  #name(tag: number, name: string): Buffer {
    const raw = Buffer.from(name, "utf8");
    if (raw.length > MAX_SNAP_NAME_BYTES)
      throw new Error(`rbd-diff writer: snapshot name longer than ${MAX_SNAP_NAME_BYTES}`);
    const b = this.#head(tag, 4 + raw.length, 4 + raw.length);
    const at = this.#headBytes();
    b.writeUInt32LE(raw.length, at);
    raw.copy(b, at + 4);
    return b;
  }

  #count(out: Buffer[]): Buffer[] {
    for (const b of out) this.bytes += b.length;
    return out;
  }
}
