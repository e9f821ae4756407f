// CRC-32C (Castagnoli) of a buffer, for the transfer protocol's per-chunk checksums: the SSE4.2
// crc32 instruction where the CPU has it, three streams interleaved (zlib's CRC-32 in Node.js 20 does
// about 2 GB/s and ran on the hot path of both agents), a table otherwise.
// Synchronous: a 4 MiB chunk takes well under a millisecond.
#include "crc32c.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace rbdb {
namespace {

uint32_t table[8][256];

void InitTable() {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

uint32_t Software(uint32_t crc, const uint8_t* p, size_t n) {
  crc = ~crc;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    w ^= crc;
    crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
          table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
          table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
  return ~crc;
}

#if defined(__x86_64__)
// Three independent crc32 streams over three adjacent blocks, combined by "shifting" the first ones
// over the following blocks' length (multiplying by x^(8·len) mod P, four table lookups with tables
// precomputed for the two block lengths) — Mark Adler's scheme for the SSE4.2 instruction, whose
// 3-cycle latency otherwise leaves two thirds of its throughput unused. About 3× the single stream.
constexpr size_t kLong = 8192;
constexpr size_t kShort = 256;
uint32_t zerosLong[4][256];
uint32_t zerosShort[4][256];

uint32_t Gf2Times(const uint32_t* mat, uint32_t vec) {
  uint32_t sum = 0;
  while (vec) {
    if (vec & 1) sum ^= *mat;
    vec >>= 1;
    mat++;
  }
  return sum;
}

void Gf2Square(uint32_t* square, const uint32_t* mat) {
  for (int n = 0; n < 32; n++) square[n] = Gf2Times(mat, mat[n]);
}

// The operator appending `len` zero bytes to a (raw) CRC register; len must be a power of two.
void ZerosOp(uint32_t* even, size_t len) {
  uint32_t odd[32];
  odd[0] = 0x82F63B78u;  // one zero bit
  uint32_t row = 1;
  for (int n = 1; n < 32; n++) {
    odd[n] = row;
    row <<= 1;
  }
  Gf2Square(even, odd);  // two zero bits
  Gf2Square(odd, even);  // four zero bits
  do {
    Gf2Square(even, odd);
    len >>= 1;
    if (len == 0) return;
    Gf2Square(odd, even);
    len >>= 1;
  } while (len);
  for (int n = 0; n < 32; n++) even[n] = odd[n];
}

void ZerosTables(uint32_t zeros[4][256], size_t len) {
  uint32_t op[32];
  ZerosOp(op, len);
  for (uint32_t n = 0; n < 256; n++) {
    zeros[0][n] = Gf2Times(op, n);
    zeros[1][n] = Gf2Times(op, n << 8);
    zeros[2][n] = Gf2Times(op, n << 16);
    zeros[3][n] = Gf2Times(op, n << 24);
  }
}

inline uint32_t Shift(const uint32_t zeros[4][256], uint32_t crc) {
  return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^ zeros[2][(crc >> 16) & 0xff] ^ zeros[3][crc >> 24];
}

inline uint64_t Load(const uint8_t* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}

template <size_t kBlock>
__attribute__((target("sse4.2"))) inline void Interleaved(uint64_t& c0, const uint8_t*& p, size_t& n,
                                                          const uint32_t zeros[4][256]) {
  while (n >= 3 * kBlock) {
    uint64_t c1 = 0;
    uint64_t c2 = 0;
    const uint8_t* end = p + kBlock;
    do {
      c0 = _mm_crc32_u64(c0, Load(p));
      c1 = _mm_crc32_u64(c1, Load(p + kBlock));
      c2 = _mm_crc32_u64(c2, Load(p + 2 * kBlock));
      p += 8;
    } while (p < end);
    c0 = Shift(zeros, static_cast<uint32_t>(c0)) ^ c1;
    c0 = Shift(zeros, static_cast<uint32_t>(c0)) ^ c2;
    p += 2 * kBlock;
    n -= 3 * kBlock;
  }
}

__attribute__((target("sse4.2"))) uint32_t Hardware(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = static_cast<uint32_t>(~crc);
  Interleaved<kLong>(c, p, n, zerosLong);
  Interleaved<kShort>(c, p, n, zerosShort);
  while (n >= 8) {
    c = _mm_crc32_u64(c, Load(p));
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return ~c32;
}
#endif

using Fn = uint32_t (*)(uint32_t, const uint8_t*, size_t);

Fn Pick() {
  InitTable();
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) {
    ZerosTables(zerosLong, kLong);
    ZerosTables(zerosShort, kShort);
    return Hardware;
  }
#endif
  return Software;
}

const Fn impl = Pick();

}  // namespace

uint32_t Crc32c(uint32_t crc, const uint8_t* data, size_t length) { return impl(crc, data, length); }

namespace {
constexpr uint32_t kPoly = 0x82F63B78u;

// a·b modulo the polynomial (reflected, bit 31 is x^0): zlib's multmodp.
uint32_t MultModP(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31;
  uint32_t p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return p;
}

// x^(2^n) modulo the polynomial, n = 0..63.
struct X2n {
  uint32_t t[64];
  X2n() {
    uint32_t p = 1u << 30;  // x^1
    t[0] = p;
    for (int n = 1; n < 64; n++) t[n] = p = MultModP(p, p);
  }
};
const X2n x2n;

}  // namespace

uint32_t Crc32cShiftOp(uint64_t length) {
  uint32_t p = 1u << 31;  // x^0
  unsigned k = 3;         // 8 bits per byte
  for (; length; length >>= 1, k++)
    if (length & 1) p = MultModP(x2n.t[k & 63], p);
  return p;
}

uint32_t Crc32cCombineOp(uint32_t crc1, uint32_t crc2, uint32_t op) { return MultModP(op, crc1) ^ crc2; }

uint32_t Crc32cPieces(const uint8_t* data, size_t length, size_t first, size_t blockSize, uint32_t* out) {
  if (length == 0) return 0;
  size_t n = first < length ? first : length;
  uint32_t whole = Crc32c(0, data, n);
  *out++ = whole;
  size_t pos = n;
  uint32_t blockOp = 0;
  bool haveOp = false;
  while (pos < length) {
    n = length - pos < blockSize ? length - pos : blockSize;
    uint32_t c = Crc32c(0, data + pos, n);
    *out++ = c;
    if (n == blockSize) {
      if (!haveOp) {
        blockOp = Crc32cShiftOp(blockSize);
        haveOp = true;
      }
      whole = Crc32cCombineOp(whole, c, blockOp);
    } else {
      whole = Crc32cCombineOp(whole, c, Crc32cShiftOp(n));
    }
    pos += n;
  }
  return whole;
}

bool Crc32cHardware() {
#if defined(__x86_64__)
  return impl == Hardware;
#else
  return false;
#endif
}

}  // namespace rbdb
