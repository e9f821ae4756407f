/**
 * The digest map of a backup: the RADOS object `backup.<id>.digests` beside `backup.<id>.meta`, one
 * CRC-32C per block of the image at the backup's snapshot, blocks of all zeros left out. Exact layout
 * (little endian): "RBDDMAP1" · u32 block_size · u32 0 · u64 image_size · u64 count · count × (u32
 * block_index, u32 crc32c), sorted by index, strictly ascending. Block i covers
 * [i·B, min((i+1)·B, image_size)). The block size is chosen at a chain's full backup
 * (`blockSizeFor`) and kept by its incrementals. A backup's `image_digest` is the lowercase hex
 * SHA-256 of the whole object (`mapDigest`).
 */
import { createHash } from "node:crypto";

export const MAGIC = "RBDDMAP1";
const HEADER_BYTES = 32;
const ENTRY_BYTES = 8;
/**
 * The smallest block: 64 KiB; images over 16 GiB get larger blocks, keeping at most 2^18 of them — a map
 * of at most 2 MiB, which fits one session message (SOURCE verification carries it in the lease).
 */
export const MIN_BLOCK_BYTES = 64 * 1024;
const MAX_BLOCKS_TARGET = 2 ** 18;

/** The RADOS object holding a backup's digest map. */
export function digestsObjectName(backupId: string): string {
  return `backup.${backupId}.digests`;
}

export interface DigestMap {
  blockSize: number;
  imageSize: number;
  /** Indices of the blocks that are not all zeros, strictly ascending, and their CRC-32C. */
  indices: Uint32Array;
  crcs: Uint32Array;
}

/** A malformed digest map object (what is wrong, and where). */
export class DigestMapError extends Error {
  override name = "DigestMapError";
}

/**
 * The largest image a digest map describes: its block size is a u32 (at most 2^31 here), and 2^18
 * blocks of that is 2^49 bytes (512 TiB). Backups of larger images are refused before anything is
 * written (a map that cannot be encoded failed the commit after all the data had been written).
 */
export const MAX_MAPPED_IMAGE_BYTES = 2 ** 49;

/** B = max(64 KiB, the smallest power of two ≥ image_size / 2^18). */
export function blockSizeFor(imageSize: number): number {
  let b = MIN_BLOCK_BYTES;
  while (b * MAX_BLOCKS_TARGET < imageSize) b *= 2;
  return b;
}

/** Blocks of an image of `imageSize` bytes (the last may be short). */
export function blockCount(blockSize: number, imageSize: number): number {
  return Math.ceil(imageSize / blockSize);
}

/** The length of block `i` (the last block is cut at the image size). */
export function blockLength(blockSize: number, imageSize: number, i: number): number {
  return Math.min(blockSize, imageSize - i * blockSize);
}

export function encodeDigestMap(m: DigestMap): Buffer {
  const n = m.indices.length;
  const out = Buffer.alloc(HEADER_BYTES + n * ENTRY_BYTES);
  out.write(MAGIC, 0, "latin1");
  out.writeUInt32LE(m.blockSize, 8);
  out.writeUInt32LE(0, 12);
  out.writeBigUInt64LE(BigInt(m.imageSize), 16);
  out.writeBigUInt64LE(BigInt(n), 24);
  for (let k = 0; k < n; k++) {
    out.writeUInt32LE(m.indices[k] as number, HEADER_BYTES + k * ENTRY_BYTES);
    out.writeUInt32LE(m.crcs[k] as number, HEADER_BYTES + k * ENTRY_BYTES + 4);
  }
  return out;
}

/** Parses and checks a digest map object; DigestMapError names what is wrong. */
export function decodeDigestMap(buf: Uint8Array): DigestMap {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < HEADER_BYTES) throw new DigestMapError(`digest map of ${b.length} bytes: shorter than its header`);
  if (b.toString("latin1", 0, 8) !== MAGIC) throw new DigestMapError("digest map without its RBDDMAP1 magic");
  const blockSize = b.readUInt32LE(8);
  if (blockSize < MIN_BLOCK_BYTES || (blockSize & (blockSize - 1)) !== 0) {
    throw new DigestMapError(`digest map block size ${blockSize} is not a power of two ≥ ${MIN_BLOCK_BYTES}`);
  }
  if (b.readUInt32LE(12) !== 0) throw new DigestMapError("digest map reserved field is not 0");
  const size = b.readBigUInt64LE(16);
  const count = b.readBigUInt64LE(24);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new DigestMapError(`digest map image size ${size} is too large`);
  const imageSize = Number(size);
  const expected = BigInt(HEADER_BYTES) + count * BigInt(ENTRY_BYTES);
  if (expected !== BigInt(b.length)) {
    throw new DigestMapError(`digest map of ${b.length} bytes holds ${count} entries: ${expected} bytes expected`);
  }
  const n = Number(count);
  const blocks = blockCount(blockSize, imageSize);
  const indices = new Uint32Array(n);
  const crcs = new Uint32Array(n);
  let prev = -1;
  for (let k = 0; k < n; k++) {
    const at = HEADER_BYTES + k * ENTRY_BYTES;
    const i = b.readUInt32LE(at);
    if (i <= prev) throw new DigestMapError(`digest map entry ${k} (block ${i}) is out of order`);
    if (i >= blocks) throw new DigestMapError(`digest map entry ${k} names block ${i} of ${blocks}`);
    indices[k] = i;
    crcs[k] = b.readUInt32LE(at + 4);
    prev = i;
  }
  return { blockSize, imageSize, indices, crcs };
}

/** `image_digest`: lowercase hex SHA-256 of the whole digest map object. */
export function mapDigest(encoded: Uint8Array): string {
  return createHash("sha256").update(encoded).digest("hex");
}
