/**
 * Comparing an image's blocks with a digest map: the chosen blocks are read (a few reads in flight,
 * consecutive blocks in one read), each block's CRC-32C checked against the map — a block the map
 * leaves out must read as zeros. Counts what it read and checked; remembers the first bad block (lowest
 * offset) and why.
 */
import { blockLength, type Crc32c, type DigestMap, type ReadAt, readBlocks } from "../transfer/digests";

export interface BlockCheck {
  blocksChecked: number;
  bytesRead: number;
  badBlocks: number;
  /** The bad block with the lowest index (−1: none), and what differed. */
  firstBad: number;
  firstBadReason: string;
}

const hex = (c: number) => `0x${(c >>> 0).toString(16).padStart(8, "0")}`;

/** The map as dense arrays: block i's CRC, and whether the map holds it. */
function dense(map: DigestMap, count: number): { crc: Uint32Array; present: Uint8Array } {
  const crc = new Uint32Array(count);
  const present = new Uint8Array(count);
  for (let k = 0; k < map.indices.length; k++) {
    const i = map.indices[k] as number;
    crc[i] = map.crcs[k] as number;
    present[i] = 1;
  }
  return { crc, present };
}

/**
 * Reads `blocks` (ascending indices) of the image through `read` and checks them against `map`.
 * `onRead(bytes)`: progress. `what`: the image, for the reason ("the snapshot", "the source").
 */
export async function checkBlocks(
  map: DigestMap,
  blocks: Iterable<number>,
  read: ReadAt,
  o: { crc32c: Crc32c; what: string; inFlight?: number; signal?: AbortSignal; onRead?: (bytes: number) => void },
): Promise<BlockCheck> {
  const count = Math.ceil(map.imageSize / map.blockSize);
  const { crc, present } = dense(map, count);
  const r: BlockCheck = { blocksChecked: 0, bytesRead: 0, badBlocks: 0, firstBad: -1, firstBadReason: "" };
  const bad = (i: number, why: string) => {
    r.badBlocks++;
    if (r.firstBad < 0 || i < r.firstBad) {
      r.firstBad = i;
      r.firstBadReason = why;
    }
  };
  await readBlocks(
    map.blockSize,
    map.imageSize,
    blocks,
    read,
    o.crc32c,
    { inFlight: o.inFlight ?? 8, ...(o.signal ? { signal: o.signal } : {}) },
    (i, block) => {
      r.blocksChecked++;
      r.bytesRead += block.length;
      o.onRead?.(block.length);
      if (present[i]) {
        if (block.crc !== crc[i])
          bad(i, `CRC-32C ${hex(block.crc)} read from ${o.what}, ${hex(crc[i] as number)} in the digest map`);
      } else if (!block.zero) {
        bad(i, `${o.what} has data where the digest map has zeros (CRC-32C ${hex(block.crc)})`);
      }
    },
  );
  return r;
}

/** A random `percent` of the map's blocks (at least one when it has any), ascending. */
export function sampleBlocks(map: DigestMap, percent: number, random: () => number = Math.random): number[] {
  const all = Array.from(map.indices);
  if (percent >= 100) return all;
  const want = Math.max(all.length > 0 ? 1 : 0, Math.ceil((all.length * percent) / 100));
  // Partial Fisher–Yates: the first `want` places end up a uniform sample.
  for (let k = 0; k < want; k++) {
    const j = k + Math.floor(random() * (all.length - k));
    [all[k], all[j]] = [all[j] as number, all[k] as number];
  }
  return all.slice(0, want).sort((a, b) => a - b);
}

/** Every block of the image, ascending. */
export function* allBlocks(map: DigestMap): Generator<number> {
  const count = Math.ceil(map.imageSize / map.blockSize);
  for (let i = 0; i < count; i++) yield i;
}

/** Offset and length of block `i`. */
export function blockRange(map: DigestMap, i: number): { offset: number; length: number } {
  return { offset: i * map.blockSize, length: blockLength(map.blockSize, map.imageSize, i) };
}
