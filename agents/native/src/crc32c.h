#pragma once
#include <cstddef>
#include <cstdint>

namespace rbdb {
// CRC-32C of data, continuing from crc (0 to start).
uint32_t Crc32c(uint32_t crc, const uint8_t* data, size_t length);
// The operator that appends `length` bytes to a CRC (for Crc32cCombineOp): x^(8·length) mod P.
uint32_t Crc32cShiftOp(uint64_t length);
// CRC-32C of A||B from crc1 = CRC(A), crc2 = CRC(B) and op = Crc32cShiftOp(|B|) (zlib's crc32_combine_op).
uint32_t Crc32cCombineOp(uint32_t crc1, uint32_t crc2, uint32_t op);
// CRC-32C of data[0, length) computed in one pass as pieces: the first `first` bytes (1..blockSize), then
// blockSize bytes each, the last one shorter; each piece's CRC-32C goes to out[i] (room for
// 1 + ceil((length - first) / blockSize) values); returns the CRC-32C of the whole, combined from them.
uint32_t Crc32cPieces(const uint8_t* data, size_t length, size_t first, size_t blockSize, uint32_t* out);
// Whether the SSE4.2 instruction is used.
bool Crc32cHardware();
}  // namespace rbdb
