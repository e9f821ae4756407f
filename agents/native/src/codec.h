// Wire-compression codecs (zstd and lz4, Debian's libzstd and liblz4) for a transfer's data chunks.
// Both run on libuv's pool; the caller passes the output Buffer, so memory stays bounded by what the
// caller allocated (the raw length for decompression).
#pragma once

#include <napi.h>

namespace rbdb {

// compress(algorithm, level, src, dst) -> Promise<number>: bytes written to dst, 0 when the compressed
// form does not fit in dst (the caller then sends src as it is). algorithm: 1 zstd, 2 lz4 (common.proto).
Napi::Value CodecCompress(const Napi::CallbackInfo& info);
// decompress(algorithm, src, dst) -> Promise<number>: dst.length; rejects (errno EBADMSG) when src is not
// valid data of that algorithm or does not decompress to exactly dst.length bytes.
Napi::Value CodecDecompress(const Napi::CallbackInfo& info);
// Versions of the codec libraries: { zstd, lz4 }.
Napi::Value CodecVersions(const Napi::CallbackInfo& info);

}  // namespace rbdb
