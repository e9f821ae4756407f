/**
 * Builds a backup's digest map as the transfer's records arrive, without reading the image back
 * where it can: a record covering a whole block gives that block's CRC (or its absence, when zero);
 * a block a record covers only in part is assembled in one open block buffer (records arrive in
 * ascending offsets) and closes with a CRC when what it lacks is known to be zero (a new image, or the
 * parent's block was absent) or when records covered all of it. Otherwise — the rest of the block is the
 * parent's data, a block touched again after it closed, a resized last block, a resumed prefix
 * (`readBackRange`) — it is marked for read-back: after the flush, `readBack` reads those blocks
 * from the image head. An incremental starts from its parent's map (`overlay`); a full from nothing.
 * A data record may come with its blocks' CRCs already computed (`data`'s `pieces`: the sink's chunk
 * check computes them in the same pass as the chunk's CRC, protocol.ts checksumPieces), so whole
 * blocks cost no second pass over their bytes.
 */
import { crc32cCombine, crc32cShiftOp, zeroCrc32c } from "./crc-combine";
import { blockCount, blockLength, blockSizeFor, type DigestMap } from "./format";
import { type ReadBlocksOptions, readBlocks } from "./read-blocks";

export type Crc32c = (data: Uint8Array) => number;
/** Reads `buf.length` bytes at `offset` of the image (librbd's read). */
export type ReadAt = (buf: Buffer, offset: number) => Promise<number>;

const PRESENT = 1; // crc[i] holds the block's CRC (else: all zeros)
const READBACK = 2; // the content is known only from the image: read it back after the flush
const TOUCHED = 4; // a record of this transfer wrote into the block
const BASE_PRESENT = 8; // the block held data before this transfer (the parent's map had it)

export class DigestMapBuilder {
  readonly count: number;
  readonly #crc: Uint32Array;
  readonly #state: Uint8Array;
  /**
   * The open block (−1: none) as a running digest of its bytes [0, #reach): their CRC-32C, whether all
   * are zero, and how many of them records covered (the rest were gaps, zeros until the block closes).
   * No copy of the block is kept, whatever its size (a 16 TiB image has 64 MiB blocks).
   */
  #open = -1;
  #reach = 0;
  #openCrc = 0;
  #openZero = true;
  #covered = 0;

  private constructor(
    readonly blockSize: number,
    readonly imageSize: number,
    readonly crc32c: Crc32c,
  ) {
    this.count = blockCount(blockSize, imageSize);
    this.#crc = new Uint32Array(this.count);
    this.#state = new Uint8Array(this.count);
  }

  /** A full backup into a new image: every block not written reads as zeros. */
  static fresh(blockSize: number, imageSize: number, crc32c: Crc32c): DigestMapBuilder {
    return new DigestMapBuilder(blockSize, imageSize, crc32c);
  }

  /**
   * An incremental: the parent's map, at the new image size. A block whose length changed with the
   * size (the parent's last block when the image grew or shrank) and that held data is read back.
   * The parent's block size is kept unless the image grew past what it keeps under 2^18 blocks
   * (blockSizeFor): then the blocks are coarsened to that size — each new block's CRC combined from
   * its parent blocks' (crc32cCombine; an absent one counts as zeros) — so that a header's image size
   * cannot make the map, and the work over it, as large as it likes (2^48 bytes over 64 KiB blocks
   * were 2^32 entries), and the map stays small enough for a session message (SOURCE verification).
   * `blockSize` (tests): another target, a power-of-two multiple of the parent's.
   */
  static overlay(
    parent: DigestMap,
    imageSize: number,
    crc32c: Crc32c,
    blockSize = Math.max(parent.blockSize, blockSizeFor(imageSize)),
  ): DigestMapBuilder {
    const f = blockSize / parent.blockSize;
    if (!Number.isInteger(f) || (f & (f - 1)) !== 0) {
      throw new Error(`digest map: block size ${blockSize} is not a power-of-two multiple of ${parent.blockSize}`);
    }
    const b = new DigestMapBuilder(blockSize, imageSize, crc32c);
    const parentCount = blockCount(parent.blockSize, parent.imageSize);
    const fullOp = crc32cShiftOp(parent.blockSize);
    for (let k = 0; k < parent.indices.length; ) {
      const i = Math.floor((parent.indices[k] as number) / f); // the new block holding this parent block
      if (i >= b.count) break;
      // Its parent blocks in order, the absent ones as zeros: their combined CRC and length.
      let crc = 0;
      let len = 0;
      for (let j = i * f; j < Math.min((i + 1) * f, parentCount); j++) {
        const lj = blockLength(parent.blockSize, parent.imageSize, j);
        const present = k < parent.indices.length && parent.indices[k] === j;
        const cj = present ? (parent.crcs[k++] as number) : zeroCrc32c(lj);
        crc = f === 1 ? cj : crc32cCombine(crc, cj, lj === parent.blockSize ? fullOp : crc32cShiftOp(lj));
        len += lj;
      }
      b.#crc[i] = crc >>> 0;
      b.#state[i] = PRESENT | BASE_PRESENT;
      // The parent had this block's bytes only in part (its last block, the image grown or shrunk).
      if (len !== b.#len(i)) b.#state[i] |= READBACK;
    }
    return b;
  }

  /**
   * A data record: `data` now lies at `offset`. Copies what it keeps (the caller may reuse `data`).
   * `pieces`, when given: the CRC-32C of each piece of `data` cut at multiples of the block size
   * (pieces[0] is the one starting at `offset`), as protocol.ts checksumPieces gives them.
   */
  data(offset: number, data: Uint8Array, pieces?: Uint32Array): void {
    this.#record(offset, data.length, data, pieces);
  }

  /** A zero record: [offset, offset+length) now reads as zeros. */
  zero(offset: number, length: number): void {
    this.#record(offset, length, null);
  }

  /**
   * Marks every block meeting [start, end) to be read back from the image after the flush: for a
   * transfer that resumed at `end`, whose earlier attempt wrote [0, end) (h3's resume).
   */
  readBackRange(start: number, end: number): void {
    if (end <= start) return;
    const last = Math.min(this.count - 1, Math.floor((end - 1) / this.blockSize));
    for (let i = Math.floor(start / this.blockSize); i <= last; i++) {
      if (i === this.#open) this.#open = -1;
      this.#state[i] = (this.#state[i] as number) | READBACK | TOUCHED;
    }
  }

  /** The blocks still to read back (closes the open block first). */
  readBackList(): number[] {
    this.#closeOpen();
    const out: number[] = [];
    for (let i = 0; i < this.count; i++) if ((this.#state[i] as number) & READBACK) out.push(i);
    return out;
  }

  /** Reads the blocks marked for read-back from the image (after the flush), a few reads in flight. */
  async readBack(read: ReadAt, opts: ReadBlocksOptions = {}): Promise<number> {
    const list = this.readBackList();
    await readBlocks(this.blockSize, this.imageSize, list, read, this.crc32c, opts, (i, b) =>
      this.#store(i, b.zero, b.crc),
    );
    return list.length;
  }

  /** The map; every read-back must be done. */
  finish(): DigestMap {
    const list = this.readBackList();
    if (list.length > 0) throw new Error(`digest map: ${list.length} block(s) still to read back`);
    let n = 0;
    for (let i = 0; i < this.count; i++) if ((this.#state[i] as number) & PRESENT) n++;
    const indices = new Uint32Array(n);
    const crcs = new Uint32Array(n);
    let k = 0;
    for (let i = 0; i < this.count; i++) {
      if ((this.#state[i] as number) & PRESENT) {
        indices[k] = i;
        crcs[k++] = this.#crc[i] as number;
      }
    }
    return { blockSize: this.blockSize, imageSize: this.imageSize, indices, crcs };
  }

  #len(i: number): number {
    return blockLength(this.blockSize, this.imageSize, i);
  }

  /** Block i holds bytes whose CRC-32C is `crc` (all zeros when `zero`): PRESENT with its CRC unless zero. */
  #store(i: number, zero: boolean, crc: number): void {
    const keep = ((this.#state[i] as number) & (TOUCHED | BASE_PRESENT)) | TOUCHED;
    if (zero) {
      this.#state[i] = keep;
      return;
    }
    this.#crc[i] = crc;
    this.#state[i] = keep | PRESENT;
  }

  /** The block's content is `block` (or all zeros when null), its CRC `crc` when already known. */
  #set(i: number, block: Uint8Array | null, crc?: number): void {
    const c = block === null ? 0 : (crc ?? this.crc32c(block) >>> 0);
    this.#store(i, block === null || isZeroData(block, c), c);
  }

  #record(offset: number, length: number, data: Uint8Array | null, pieces?: Uint32Array): void {
    if (length <= 0) return;
    const B = this.blockSize;
    const end = offset + length;
    const last = Math.floor((end - 1) / B);
    const firstBlock = Math.floor(offset / B);
    for (let i = firstBlock; i <= last && i < this.count; i++) {
      const bs = i * B;
      const be = bs + this.#len(i);
      const s = Math.max(offset, bs);
      const e = Math.min(end, be);
      if (s === bs && e === be) {
        // The whole block: its content is this record's.
        if (i === this.#open) this.#open = -1;
        this.#set(i, data ? data.subarray(s - offset, e - offset) : null, pieces?.[i - firstBlock]);
      } else {
        this.#partial(i, s - bs, e - bs, data ? data.subarray(s - offset, e - offset) : null, pieces?.[i - firstBlock]);
      }
    }
  }

  /**
   * A record covers [s, e) of block i (relative), not all of it; `pieceCrc`: its bytes' CRC-32C, when
   * the chunk check computed it. Records arrive in ascending offsets: a gap before one reads as zeros
   * (for now: a block that held data before needs it covered, else it is read back), and one that
   * reaches back into what the block already has (not sent that way) has the block read back.
   */
  #partial(i: number, s: number, e: number, piece: Uint8Array | null, pieceCrc?: number): void {
    if (i !== this.#open) {
      this.#closeOpen();
      const st = this.#state[i] as number;
      if (st & TOUCHED) {
        // Written before in this transfer and closed already: only the image knows it now.
        this.#state[i] = st | READBACK;
        return;
      }
      this.#open = i;
      this.#reach = 0;
      this.#openCrc = 0;
      this.#openZero = true;
      this.#covered = 0;
      this.#state[i] = st | TOUCHED;
    }
    if (s < this.#reach) {
      this.#open = -1;
      this.#state[i] = (this.#state[i] as number) | READBACK;
      return;
    }
    this.#extend(s - this.#reach, zeroCrc32c(s - this.#reach), true);
    const n = e - s;
    if (piece) {
      const c = pieceCrc ?? this.crc32c(piece) >>> 0;
      this.#extend(n, c, isZeroData(piece, c));
    } else {
      this.#extend(n, zeroCrc32c(n), true);
    }
    this.#covered += n;
  }

  /** The open block's bytes go on by `n` bytes whose CRC-32C is `crc`. */
  #extend(n: number, crc: number, zero: boolean): void {
    if (n <= 0) return;
    this.#openCrc = this.#reach === 0 ? crc : crc32cCombine(this.#openCrc, crc, crc32cShiftOp(n));
    this.#openZero &&= zero;
    this.#reach += n;
  }

  #closeOpen(): void {
    const i = this.#open;
    if (i < 0) return;
    this.#open = -1;
    const len = this.#len(i);
    const st = this.#state[i] as number;
    if (st & READBACK) return;
    if (st & BASE_PRESENT && this.#covered < len) {
      this.#state[i] = st | READBACK;
      return;
    }
    this.#extend(len - this.#reach, zeroCrc32c(len - this.#reach), true);
    this.#store(i, this.#openZero, this.#openCrc);
  }
}

const ZEROS = Buffer.alloc(64 * 1024);

/** Whether `data`, whose CRC-32C is `crc`, is all zeros (the CRC rules most data out without a scan). */
export function isZeroData(data: Uint8Array, crc: number): boolean {
  return crc === zeroCrc32c(data.length) && isZero(data);
}

/** Whether every byte is zero. */
export function isZero(b: Uint8Array): boolean {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  for (let off = 0; off < buf.length; off += ZEROS.length) {
    const n = Math.min(ZEROS.length, buf.length - off);
    if (buf.compare(ZEROS, 0, n, off, off + n) !== 0) return false;
  }
  return true;
}
