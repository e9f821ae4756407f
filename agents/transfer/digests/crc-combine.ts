/**
 * CRC-32C of a concatenation from the CRCs of its parts (zlib's crc32_combine_op, for the Castagnoli
 * polynomial): a chunk's CRC from its blocks' (protocol.ts checksumPieces), a large block's from the
 * pieces it is read in (read-blocks.ts).
 */

const POLY = 0x82f63b78;

/** a·b modulo the CRC-32C polynomial (reflected: bit 31 is x^0) — zlib's multmodp. */
function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}

/** x^(2^n) modulo the polynomial, n = 0..63. */
const X2N = (() => {
  const t = new Uint32Array(64);
  let p = 0x40000000; // x^1
  t[0] = p;
  for (let n = 1; n < 64; n++) t[n] = p = multModP(p, p);
  return t;
})();

/** The operator that appends `length` bytes to a CRC-32C (for `crc32cCombine`): x^(8·length) mod P. */
export function crc32cShiftOp(length: number): number {
  let p = 0x80000000; // x^0
  let k = 3; // 8 bits per byte
  for (let n = length; n > 0; n = Math.floor(n / 2), k++) if (n % 2 === 1) p = multModP(X2N[k & 63] as number, p);
  return p;
}

/** CRC-32C of A‖B from CRC(A), CRC(B) and `crc32cShiftOp(|B|)` (zlib's crc32_combine_op). */
export function crc32cCombine(crc1: number, crc2: number, op: number): number {
  return (multModP(op, crc1 >>> 0) ^ crc2) >>> 0;
}

/** CRC-32C (init and final XOR 0xFFFFFFFF) of one zero byte. */
const ONE_ZERO = (() => {
  let c = 0xffffffff;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
  return ~c >>> 0;
})();

/** CRC-32C of 2^k zero bytes, k = 0..52. */
const ZERO_POW = (() => {
  const t = new Uint32Array(53);
  t[0] = ONE_ZERO;
  for (let k = 1; k < 53; k++)
    t[k] = crc32cCombine(t[k - 1] as number, t[k - 1] as number, crc32cShiftOp(2 ** (k - 1)));
  return t;
})();

/**
 * The CRC-32C of `length` zero bytes, by arithmetic (no buffer of zeros, whatever the length): a zero
 * run's checksum for the digest map, and the test of a block being all zeros (a CRC match first).
 */
export function zeroCrc32c(length: number): number {
  const known = zeroCrcs.get(length);
  if (known !== undefined) return known;
  const crc = zeroCrcOf(length);
  // A transfer asks for a few lengths (its block size, its chunk's) again and again: measured at ~3 % of
  // a destination's JS thread before (53 powers and combines per call, per 64 KiB block written).
  if (zeroCrcs.size >= ZERO_CRCS_KEPT) zeroCrcs.clear();
  zeroCrcs.set(length, crc);
  return crc;
}

/** zeroCrc32c's answers by length (bounded: cleared when full). */
const zeroCrcs = new Map<number, number>();
const ZERO_CRCS_KEPT = 64;

function zeroCrcOf(length: number): number {
  let crc = 0;
  let n = 0;
  for (let k = 52; k >= 0; k--) {
    const p = 2 ** k;
    if (length - n >= p) {
      crc = n === 0 ? (ZERO_POW[k] as number) : crc32cCombine(crc, ZERO_POW[k] as number, crc32cShiftOp(p));
      n += p;
    }
  }
  return crc >>> 0;
}
