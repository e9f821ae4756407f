// Wire-compression codecs. Each call pins its two Buffers (JS references released on the JS thread,
// with the worker) and runs the library call on libuv's pool. zstd keeps one compression and one
// decompression context per pool thread (a context is ~1 MiB at low levels; making one per chunk would
// cost more than compressing); lz4 keeps one state per pool thread. One-shot decompression writes into
// the caller's buffer only, so a hostile frame can never make it allocate more than that.
#include "codec.h"

#include <lz4.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <cerrno>
#include <climits>
#include <memory>
#include <new>
#include <string>

#include "common.h"

namespace rbdb {

namespace {

constexpr uint32_t kZstd = 1;
constexpr uint32_t kLz4 = 2;

struct CCtxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxFree {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

ZSTD_CCtx* ThreadCCtx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxFree> c(ZSTD_createCCtx());
  if (!c) throw std::bad_alloc();
  return c.get();
}

ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxFree> d(ZSTD_createDCtx());
  if (!d) throw std::bad_alloc();
  return d.get();
}

void* ThreadLz4State() {
  thread_local std::unique_ptr<char[]> s(new char[LZ4_sizeofState()]);
  return s.get();
}

// The two Buffers a call reads and writes: referenced until the worker is done (JS thread).
struct Pinned {
  Napi::ObjectReference src;
  Napi::ObjectReference dst;
};

uint32_t ArgAlgorithm(const Napi::CallbackInfo& info, size_t i) {
  uint64_t a = ArgU64(info, i, "algorithm");
  if (a != kZstd && a != kLz4) throw Napi::RangeError::New(info.Env(), "algorithm must be 1 (zstd) or 2 (lz4)");
  return static_cast<uint32_t>(a);
}

}  // namespace

Napi::Value CodecCompress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t algorithm = ArgAlgorithm(info, 0);
  uint64_t level = ArgU64(info, 1, "level");
  Napi::Buffer<uint8_t> src = ArgBuffer(info, 2, "src");
  Napi::Buffer<uint8_t> dst = ArgBuffer(info, 3, "dst");
  if (level < 1 || level > static_cast<uint64_t>(ZSTD_maxCLevel())) {
    throw Napi::RangeError::New(env, "level must be 1.." + std::to_string(ZSTD_maxCLevel()));
  }
  if (src.Length() > LZ4_MAX_INPUT_SIZE || dst.Length() > INT_MAX) {
    throw Napi::RangeError::New(env, "src must be at most " + std::to_string(LZ4_MAX_INPUT_SIZE) + " bytes");
  }
  auto pins = std::make_shared<Pinned>();
  pins->src = Napi::Persistent(src.As<Napi::Object>());
  pins->dst = Napi::Persistent(dst.As<Napi::Object>());
  const uint8_t* in = src.Data();
  size_t inLen = src.Length();
  uint8_t* out = dst.Data();
  size_t cap = dst.Length();
  auto written = std::make_shared<size_t>(0);
  auto op = std::make_shared<std::string>(algorithm == kZstd ? "ZSTD_compressCCtx" : "LZ4_compress_fast_extState");
  return RunAsync(
      env, op,
      [=]() -> int {
        if (algorithm == kZstd) {
          size_t r = ZSTD_compressCCtx(ThreadCCtx(), out, cap, in, inLen, static_cast<int>(level));
          if (ZSTD_isError(r)) {
            if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall) return 0;  // did not shrink enough
            *op += std::string(" (") + ZSTD_getErrorName(r) + ")";
            return -EIO;
          }
          *written = r;
          return 0;
        }
        int r = LZ4_compress_fast_extState(ThreadLz4State(), reinterpret_cast<const char*>(in),
                                           reinterpret_cast<char*>(out), static_cast<int>(inLen),
                                           static_cast<int>(cap), 1);
        *written = r > 0 ? static_cast<size_t>(r) : 0;  // 0: does not fit in dst
        return 0;
      },
      [pins, written](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(*written)); });
}

Napi::Value CodecDecompress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t algorithm = ArgAlgorithm(info, 0);
  Napi::Buffer<uint8_t> src = ArgBuffer(info, 1, "src");
  Napi::Buffer<uint8_t> dst = ArgBuffer(info, 2, "dst");
  if (src.Length() > INT_MAX || dst.Length() > INT_MAX) {
    throw Napi::RangeError::New(env, "src and dst must be at most " + std::to_string(INT_MAX) + " bytes");
  }
  auto pins = std::make_shared<Pinned>();
  pins->src = Napi::Persistent(src.As<Napi::Object>());
  pins->dst = Napi::Persistent(dst.As<Napi::Object>());
  const uint8_t* in = src.Data();
  size_t inLen = src.Length();
  uint8_t* out = dst.Data();
  size_t raw = dst.Length();
  auto op = std::make_shared<std::string>(algorithm == kZstd ? "ZSTD_decompressDCtx" : "LZ4_decompress_safe");
  return RunAsync(
      env, op,
      [=]() -> int {
        size_t got = 0;
        if (algorithm == kZstd) {
          size_t r = ZSTD_decompressDCtx(ThreadDCtx(), out, raw, in, inLen);
          if (ZSTD_isError(r)) {
            *op += std::string(" (") + ZSTD_getErrorName(r) + ")";
            return -EBADMSG;
          }
          got = r;
        } else {
          int r = LZ4_decompress_safe(reinterpret_cast<const char*>(in), reinterpret_cast<char*>(out),
                                      static_cast<int>(inLen), static_cast<int>(raw));
          if (r < 0) {
            *op += " (malformed or longer than the expected length)";
            return -EBADMSG;
          }
          got = static_cast<size_t>(r);
        }
        if (got != raw) {
          *op += " (" + std::to_string(got) + " bytes, expected " + std::to_string(raw) + ")";
          return -EBADMSG;
        }
        return 0;
      },
      [pins, raw](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(raw)); });
}

Napi::Value CodecVersions(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("zstd", ZSTD_versionString());
  o.Set("lz4", LZ4_versionString());
  o.Set("zstdMaxLevel", Napi::Number::New(info.Env(), ZSTD_maxCLevel()));
  return o;
}

}  // namespace rbdb
