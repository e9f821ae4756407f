/**
 * A streaming parser of `rbd export-diff` streams (v1 and v2): bytes in, records out, memory bounded
 * by `maxPiece` plus one incoming piece whatever the stream's size ('w' data is handed out in pieces
 * of at most `maxPiece`, cut at multiples of it in image offsets). Every record is validated as it
 * arrives, and the first fault throws INVALID_ARGUMENT naming its byte offset in the stream: a wrong
 * banner, an unknown tag (v1: records carry no length, so it cannot be skipped; v2 skips unknown tags
 * by their length), a v2 length that does not fit its record, a snapshot name over 4096 bytes,
 * metadata after data, a repeated record, data before the size, an extent that is empty, overlaps
 * or precedes the previous one or lies beyond the size, bytes after 'e', and a stream that ends
 * before its 'e' (truncated).
 */
import { invalidArgument } from "../../../src/common/errors";
import { ByteReader } from "./byte-reader";
import {
  BANNER_BYTES,
  bannerOf,
  type DiffVersion,
  MAX_SNAP_NAME_BYTES,
  PROTECT_DECLARED_LENGTH,
  TAG,
  tagName,
} from "./format";

export type DiffRecord =
  | { type: "banner"; version: DiffVersion; at: number }
  | { type: "from" | "to"; name: string; at: number }
  | { type: "size"; size: number; at: number }
  | { type: "protect"; value: boolean; at: number }
  /** One piece of a 'w' record (`at`: where the record starts in the stream). */
  | { type: "data"; offset: number; data: Buffer; at: number }
  | { type: "zero"; offset: number; length: number; at: number }
  | { type: "end"; at: number };

export interface ParseOptions {
  /** The version the caller expects (undefined: whichever the banner says). */
  version?: DiffVersion;
  /** Largest data piece handed out, bytes. */
  maxPiece: number;
}

/** Snapshot names: UTF-8, strictly. */
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** INVALID_ARGUMENT naming the byte offset in the stream. */
export function streamError(at: number, message: string) {
  return invalidArgument(`invalid rbd-diff stream at byte offset ${at}: ${message}`);
}

export async function* parseRbdDiff(source: AsyncIterable<Uint8Array>, opts: ParseOptions): AsyncGenerator<DiffRecord> {
  const r = new ByteReader(source);
  const version = await readBanner(r, opts.version);
  yield { type: "banner", version, at: 0 };
  const p = new RecordParser(r, version, opts.maxPiece);
  yield* p.records();
}

async function readBanner(r: ByteReader, expected: DiffVersion | undefined): Promise<DiffVersion> {
  const b = await r.exact(BANNER_BYTES);
  if (!b) {
    const got = r.received;
    throw streamError(got, `the stream ends after ${got} bytes, before its ${BANNER_BYTES}-byte banner`);
  }
  const version: DiffVersion | null = b.equals(bannerOf(1)) ? 1 : b.equals(bannerOf(2)) ? 2 : null;
  if (!version) {
    throw streamError(
      0,
      `not an rbd diff stream (the banner is ${JSON.stringify(b.toString("latin1"))}, expected "rbd diff v1\\n" or "rbd diff v2\\n")`,
    );
  }
  if (expected && version !== expected) {
    throw streamError(0, `the stream is format v${version}, but v${expected} was asked for`);
  }
  return version;
}

class RecordParser {
  #seen = new Set<number>();
  #size: number | null = null;
  #inData = false;
  #dataEnd = 0;

  constructor(
    readonly r: ByteReader,
    readonly version: DiffVersion,
    readonly maxPiece: number,
  ) {}

  async *records(): AsyncGenerator<DiffRecord> {
    for (;;) {
      const at = this.r.offset;
      const tagByte = await this.r.exact(1);
      if (!tagByte) throw streamError(at, `the stream ends at byte ${at} without its 'e' record (truncated)`);
      const tag = tagByte[0] as number;
      if (tag === TAG.end) {
        if (this.#size === null) throw streamError(at, "'e' before any 's' (image size) record");
        if (!(await this.r.atEnd())) throw streamError(this.r.offset, "bytes follow the 'e' record");
        yield { type: "end", at };
        return;
      }
      const len = this.version === 2 ? await this.#u64(at, tag) : null;
      switch (tag) {
        case TAG.from:
        case TAG.to: {
          this.#meta(at, tag);
          const n = await this.#u32(at, tag);
          // rbd import-diff refuses an empty name too (EINVAL); an empty from-name would read as a full diff.
          if (n === 0) throw streamError(at, `${tagName(tag)} snapshot name is empty`);
          if (n > MAX_SNAP_NAME_BYTES)
            throw streamError(at, `${tagName(tag)} snapshot name of ${n} bytes (limit ${MAX_SNAP_NAME_BYTES})`);
          this.#length(at, tag, len, 4 + n);
          const name = await this.#bytes(at, tag, n);
          // Names are compared ('f' against the parent's snapshot) and kept: bytes that are not UTF-8 would
          // all read as U+FFFD, so different names would compare equal.
          let text: string;
          try {
            text = UTF8.decode(name);
          } catch {
            throw streamError(at, `${tagName(tag)} snapshot name is not valid UTF-8`);
          }
          yield { type: tag === TAG.from ? "from" : "to", name: text, at };
          break;
        }
        case TAG.size: {
          this.#meta(at, tag);
          this.#length(at, tag, len, 8);
          const size = await this.#u64(at, tag);
          if (size === 0) throw streamError(at, "the image size is 0");
          this.#size = size;
          yield { type: "size", size, at };
          break;
        }
        case TAG.write:
        case TAG.zero: {
          const { offset, length } = await this.#extent(at, tag, len);
          if (tag === TAG.zero) yield { type: "zero", offset, length, at };
          else yield* this.#data(at, offset, length);
          break;
        }
        default: {
          if (tag === TAG.protect && this.version === 2) {
            this.#meta(at, tag);
            // Ceph declares 8 and writes 1 byte (format.ts); a writer that follows the rule declares 1.
            if (len !== PROTECT_DECLARED_LENGTH) this.#length(at, tag, len, 1);
            const v = (await this.#bytes(at, tag, 1))[0];
            if (v !== 0 && v !== 1) throw streamError(at, `'p' record with value ${v} (0 or 1)`);
            yield { type: "protect", value: v === 1, at };
            break;
          }
          if (len === null) throw streamError(at, `unknown record tag ${tagName(tag)} (a v1 stream cannot skip it)`);
          await this.#skip(at, tag, len);
        }
      }
    }
  }

  /** A metadata record: before any data, at most once. */
  #meta(at: number, tag: number): void {
    if (this.#inData) throw streamError(at, `${tagName(tag)} record after data records (metadata comes first)`);
    if (this.#seen.has(tag)) throw streamError(at, `a second ${tagName(tag)} record`);
    this.#seen.add(tag);
  }

  async #extent(at: number, tag: number, len: number | null): Promise<{ offset: number; length: number }> {
    if (this.#size === null) throw streamError(at, `${tagName(tag)} record before the 's' (image size) record`);
    this.#inData = true;
    const offset = await this.#u64(at, tag);
    const length = await this.#u64(at, tag);
    if (len !== null) this.#length(at, tag, len, tag === TAG.write ? 16 + length : 16);
    if (length === 0) throw streamError(at, `empty ${tagName(tag)} record at image offset ${offset}`);
    if (offset < this.#dataEnd) {
      throw streamError(
        at,
        `${tagName(tag)} extent ${offset}+${length} overlaps or precedes the previous one (ending at ${this.#dataEnd})`,
      );
    }
    if (offset + length > this.#size) {
      throw streamError(at, `${tagName(tag)} extent ${offset}+${length} lies beyond the image size ${this.#size}`);
    }
    this.#dataEnd = offset + length;
    return { offset, length };
  }

  /** A 'w' record's data, in pieces of at most maxPiece cut at multiples of it. */
  async *#data(at: number, offset: number, length: number): AsyncGenerator<DiffRecord> {
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const next = Math.min(end, (Math.floor(pos / this.maxPiece) + 1) * this.maxPiece);
      const want = next - pos;
      const parts: Buffer[] = [];
      for (let got = 0; got < want; ) {
        const b = await this.r.some(want - got);
        if (!b) throw this.#truncated(at, TAG.write, end - pos - got);
        parts.push(b);
        got += b.length;
      }
      yield {
        type: "data",
        offset: pos,
        data: parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, want),
        at,
      };
      pos = next;
    }
  }

  async #skip(at: number, tag: number, len: number): Promise<void> {
    for (let left = len; left > 0; ) {
      const b = await this.r.some(Math.min(left, this.maxPiece));
      if (!b) throw this.#truncated(at, tag, left);
      left -= b.length;
    }
  }

  #length(at: number, tag: number, len: number | null, expected: number): void {
    if (len !== null && len !== expected) {
      throw streamError(at, `${tagName(tag)} record says its payload is ${len} bytes, its fields make ${expected}`);
    }
  }

  async #bytes(at: number, tag: number, n: number): Promise<Buffer> {
    const b = await this.r.exact(n);
    if (!b) throw this.#truncated(at, tag, n - (this.r.received - this.r.offset));
    return b;
  }

  async #u32(at: number, tag: number): Promise<number> {
    return (await this.#bytes(at, tag, 4)).readUInt32LE(0);
  }

  async #u64(at: number, tag: number): Promise<number> {
    const where = this.r.offset;
    const v = (await this.#bytes(at, tag, 8)).readBigUInt64LE(0);
    if (v > BigInt(Number.MAX_SAFE_INTEGER))
      throw streamError(where, `${tagName(tag)} record: value ${v} is beyond 2^53`);
    return Number(v);
  }

  #truncated(at: number, tag: number, missing: number) {
    const end = this.r.received;
    return streamError(
      end,
      `the stream is truncated: it ends at byte ${end} inside the ${tagName(tag)} record that starts at byte ${at} (${missing} more bytes expected)`,
    );
  }
}
