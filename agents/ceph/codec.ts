/**
 * Wire-compression codecs from the addon (Debian's libzstd and liblz4), run on libuv's pool so a
 * chunk's compression never blocks the JS thread. The caller's buffers are used as they are: the
 * compressed form goes into a buffer no larger than the caller allows (so "does not shrink" costs
 * nothing extra), and decompression writes into a buffer of exactly the expected raw length and
 * refuses data that would not fill it exactly — a hostile chunk cannot make this allocate more.
 *
 * Failure: data that is not valid, or not of the expected length, rejects with a CephError whose code
 * is EBADMSG (`isCorruptData`); bad arguments throw TypeError/RangeError before the addon runs.
 */
import { isCephError, nativeCall, nativeCallSync } from "./errors";
import { native } from "./native";
import * as v from "./validate";

export type CodecAlgorithm = "zstd" | "lz4";

/** The addon's numbers (the same as common.proto's Compression). */
const ALGORITHM: Record<CodecAlgorithm, number> = { zstd: 1, lz4: 2 };
/** zstd's highest level (ZSTD_maxCLevel of Debian 12's libzstd). */
export const ZSTD_MAX_LEVEL = 22;

/** Compression and decompression of one buffer (the addon's; tests inject their own). */
export interface Codec {
  /**
   * The compressed form of `src`, or null when it does not fit in `maxLength` bytes (default: always
   * fits). With `into` (at least that long), it is written there and the result is `into`'s first bytes.
   */
  compress(
    algorithm: CodecAlgorithm,
    level: number,
    src: Buffer,
    maxLength?: number,
    into?: Buffer,
  ): Promise<Buffer | null>;
  /** Exactly `rawLength` bytes from `src` (into `into` when given: its length must be rawLength). */
  decompress(algorithm: CodecAlgorithm, src: Buffer, rawLength: number, into?: Buffer): Promise<Buffer>;
}

function algorithmOf(value: unknown): number {
  if (value !== "zstd" && value !== "lz4")
    throw new RangeError(`algorithm must be "zstd" or "lz4", got ${String(value)}`);
  return ALGORITHM[value];
}

/** The largest compressed size of `n` bytes (zstd's ZSTD_COMPRESSBOUND, lz4's LZ4_COMPRESSBOUND). */
export function compressBound(algorithm: CodecAlgorithm, n: number): number {
  if (algorithm === "lz4") return n + Math.floor(n / 255) + 16;
  const small = n < 128 * 1024 ? (128 * 1024 - n) >> 11 : 0;
  return n + (n >> 8) + small;
}

export async function compress(
  algorithm: CodecAlgorithm,
  level: number,
  src: Buffer,
  maxLength?: number,
  into?: Buffer,
): Promise<Buffer | null> {
  const a = algorithmOf(algorithm);
  const l = algorithm === "zstd" ? v.positiveInt(level, "level", ZSTD_MAX_LEVEL) : 1;
  v.buffer(src, "src");
  const cap = maxLength === undefined ? compressBound(algorithm, src.length) : v.uint(maxLength, "maxLength");
  if (into !== undefined && (!Buffer.isBuffer(into) || into.length < cap))
    throw new RangeError(`into must be a Buffer of at least ${cap} bytes (maxLength, or the compress bound)`);
  if (cap === 0) return null;
  const dst = into ? into.subarray(0, cap) : Buffer.allocUnsafe(cap);
  const n = await nativeCall(`compress ${algorithm}`, () => native().compress(a, l, src, dst));
  return n === 0 ? null : dst.subarray(0, n);
}

export async function decompress(
  algorithm: CodecAlgorithm,
  src: Buffer,
  rawLength: number,
  into?: Buffer,
): Promise<Buffer> {
  const a = algorithmOf(algorithm);
  v.buffer(src, "src");
  v.positiveInt(rawLength, "rawLength", 0x7fffffff);
  if (into !== undefined && (!Buffer.isBuffer(into) || into.length !== rawLength))
    throw new RangeError(`into must be a Buffer of exactly rawLength (${rawLength}) bytes`);
  const dst = into ?? Buffer.allocUnsafe(rawLength);
  await nativeCall(`decompress ${algorithm}`, () => native().decompress(a, src, dst));
  return dst;
}

/** The codec library versions the addon was linked with (loads the addon). */
export function codecVersions(): { zstd: string; lz4: string; zstdMaxLevel: number } {
  return nativeCallSync("codec versions", () => native().codecVersions());
}

/** The addon's codecs. */
export const nativeCodec: Codec = { compress, decompress };

/** True for data that did not decompress (not valid, or not to the expected length). */
export function isCorruptData(e: unknown): boolean {
  return isCephError(e, "EBADMSG") || (e as { code?: unknown } | null)?.code === "EBADMSG";
}
