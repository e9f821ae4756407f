// Module entry: per-environment state, the classes, and the functions the TypeScript facade
// (agents/ceph/) calls. JS never constructs the classes itself; it gets them from connect() and the
// methods that open things. Every function and method is wrapped by the exception boundary
// (boundary.h); node-addon-api's own catch-all covers Init itself.
#include "cluster.h"
#include "codec.h"
#include "common.h"
#include "crash-report.h"
#include "crc32c.h"
#include "diff-iterator.h"
#include "image.h"
#include "io-ctx.h"
#include "test-faults.h"

#include <malloc.h>

namespace rbdb {

static Napi::Value Versions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ma = 0, mi = 0, ex = 0;
  Napi::Object o = Napi::Object::New(env);
  rados_version(&ma, &mi, &ex);
  o.Set("librados", std::to_string(ma) + "." + std::to_string(mi) + "." + std::to_string(ex));
  rbd_version(&ma, &mi, &ex);
  o.Set("librbd", std::to_string(ma) + "." + std::to_string(mi) + "." + std::to_string(ex));
  return o;
}

// crc32c(buffer): CRC-32C of a Buffer or Uint8Array, synchronous.
static Napi::Value Crc32cFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    throw Napi::TypeError::New(env, "crc32c: data must be a Buffer or Uint8Array");
  }
  Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
  return Napi::Number::New(env, Crc32c(0, a.Data(), a.ByteLength()));
}

// crc32cPieces(data, first, blockSize, out: Uint32Array): CRC-32C of data, computed once as pieces (the
// first `first` bytes, then `blockSize` each); each piece's CRC goes to out, the whole's is returned
// (combined, not computed twice). Synchronous.
static Napi::Value Crc32cPiecesFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsNumber() || !info[2].IsNumber() ||
      !info[3].IsTypedArray()) {
    throw Napi::TypeError::New(env, "crc32cPieces(data, first, blockSize, out)");
  }
  Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
  Napi::TypedArray t = info[3].As<Napi::TypedArray>();
  if (t.TypedArrayType() != napi_uint32_array) throw Napi::TypeError::New(env, "crc32cPieces: out must be a Uint32Array");
  Napi::Uint32Array out = t.As<Napi::Uint32Array>();
  double first = info[1].As<Napi::Number>().DoubleValue();
  double block = info[2].As<Napi::Number>().DoubleValue();
  if (!(block >= 1 && block <= 1u << 30 && block == static_cast<double>(static_cast<size_t>(block))) ||
      !(first >= 1 && first <= block && first == static_cast<double>(static_cast<size_t>(first)))) {
    throw Napi::RangeError::New(env, "crc32cPieces: need 1 <= first <= blockSize <= 2^30, integers");
  }
  size_t len = a.ByteLength();
  size_t f = static_cast<size_t>(first);
  size_t b = static_cast<size_t>(block);
  size_t pieces = len == 0 ? 0 : 1 + (len > f ? (len - f + b - 1) / b : 0);
  if (out.ElementLength() < pieces) throw Napi::RangeError::New(env, "crc32cPieces: out is too short");
  return Napi::Number::New(env, Crc32cPieces(a.Data(), len, f, b, out.Data()));
}

// mallocTrim(): glibc's malloc_trim(0) on libuv's pool — gives the free memory of every arena back to
// the kernel (librados' read buffers and librbd's request state are freed into arenas glibc keeps).
// Resolves true when some memory was released. Called when the data plane goes quiet.
static Napi::Value MallocTrim(const Napi::CallbackInfo& info) {
  auto released = std::make_shared<int>(0);
  return RunAsync(
      info.Env(), "malloc_trim",
      [released]() {
        *released = malloc_trim(0);
        return 0;
      },
      [released](Napi::Env env) { return Napi::Boolean::New(env, *released != 0); });
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InstallCrashReport();
  auto* addon = new Addon(env);
  env.SetInstanceData<Addon>(addon);
  addon->clusterCtor = Napi::Persistent(Cluster::Init(env));
  addon->ioCtxCtor = Napi::Persistent(IoCtx::Init(env));
  addon->imageCtor = Napi::Persistent(Image::Init(env));
  addon->diffCtor = Napi::Persistent(DiffIterator::Init(env));
  exports.Set("connect", GuardedFunction<&Cluster::Connect>(env, "connect"));
  exports.Set("versions", GuardedFunction<Versions>(env, "versions"));
  exports.Set("crc32c", GuardedFunction<Crc32cFn>(env, "crc32c"));
  exports.Set("crc32cPieces", GuardedFunction<Crc32cPiecesFn>(env, "crc32cPieces"));
  exports.Set("crc32cHardware", Napi::Boolean::New(env, Crc32cHardware()));
  exports.Set("compress", GuardedFunction<CodecCompress>(env, "compress"));
  exports.Set("decompress", GuardedFunction<CodecDecompress>(env, "decompress"));
  exports.Set("codecVersions", GuardedFunction<CodecVersions>(env, "codecVersions"));
  exports.Set("mallocTrim", GuardedFunction<MallocTrim>(env, "mallocTrim"));
  InitTestFaults(env, exports);
  return exports;
}

}  // namespace rbdb

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return rbdb::Init(env, exports); }

NODE_API_MODULE(rbdbackup_native, InitModule)
