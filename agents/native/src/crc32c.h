#pragma once
#include <cstddef>
#include <cstdint>

namespace rbdb {
// CRC-32C of data, continuing from crc (0 to start).
uint32_t Crc32c(uint32_t crc, const uint8_t* data, size_t length);
// Whether the SSE4.2 instruction is used.
bool Crc32cHardware();
}  // namespace rbdb
