// Image data I/O: librbd aio straight from/into caller-owned Buffers. Each op is an AioBaton that pins
// the image and the Buffer until librbd completes it; the completion comes back to the JS thread
// through the addon's thread-safe function (Addon::Post), where the promise settles.
#include <memory>

#include "image.h"

namespace rbdb {

namespace {

// One librbd aio op in flight. Holds the image (so it cannot close under the op) and the caller's
// Buffer (so its memory stays valid); both are let go of on the JS thread, the image's close (if this
// was its last holder) then running on the closer (handles.h).
struct AioBaton : Task {
  AioBaton(Napi::Env env, std::shared_ptr<ImageHandle> h, const char* op, std::shared_ptr<Poster> poster)
      : img(std::move(h)), deferred(Napi::Promise::Deferred::New(env)), op(op), poster(std::move(poster)) {}
  std::shared_ptr<ImageHandle> img;
  Napi::Promise::Deferred deferred;
  Napi::ObjectReference buffer;
  const char* op;
  std::shared_ptr<Poster> poster;
  ssize_t rc = 0;

  void Run(Napi::Env env) override {
    if (rc < 0) {
      deferred.Reject(CephError(env, static_cast<int>(rc), op).Value());
    } else {
      deferred.Resolve(Napi::Number::New(env, static_cast<double>(rc)));
    }
  }

  void Fail(Napi::Env env, std::exception_ptr error) noexcept override { RejectWith(env, deferred, error, op); }
};

// librbd's completion thread: nothing here may throw into librbd (copying a shared_ptr and posting don't).
void AioComplete(rbd_completion_t c, void* arg) noexcept {
  auto* b = static_cast<AioBaton*>(arg);
  b->rc = rbd_aio_get_return_value(c);
  rbd_aio_release(c);
  std::shared_ptr<Poster> poster = b->poster;  // b may be freed once posted
  poster->Post(b);
}

template <typename Submit>
Napi::Value SubmitAio(Napi::Env env, Addon* addon, std::shared_ptr<ImageHandle> h, const char* op,
                      Napi::Object keepAlive, Submit submit) {
  auto b = std::make_unique<AioBaton>(env, h, op, addon->poster());
  if (!keepAlive.IsEmpty()) b->buffer = Napi::Persistent(keepAlive);
  Napi::Promise p = b->deferred.Promise();
  rbd_completion_t c = nullptr;
  int rc = rbd_aio_create_completion(b.get(), AioComplete, &c);
  if (rc == 0) {
    addon->Hold();
    rc = submit(h->image, c);
    if (rc >= 0) {
      b.release();  // AioComplete posts it; CallTask deletes it
      return p;
    }
    addon->Unhold();
    rbd_aio_release(c);
  }
  b->deferred.Reject(CephError(env, rc, op).Value());
  return p;
}

}  // namespace

Napi::Value Image::AioRead(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  Napi::Buffer<uint8_t> buf = ArgBuffer(info, 0, "buffer");
  uint64_t off = ArgU64(info, 1, "offset");
  char* data = reinterpret_cast<char*>(buf.Data());
  size_t len = buf.Length();
  return SubmitAio(info.Env(), addon_, h, "rbd_aio_read2", buf, [=](rbd_image_t img, rbd_completion_t c) {
    return rbd_aio_read2(img, off, len, data, c, 0);
  });
}

Napi::Value Image::AioWrite(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  Napi::Buffer<uint8_t> buf = ArgBuffer(info, 0, "buffer");
  uint64_t off = ArgU64(info, 1, "offset");
  const char* data = reinterpret_cast<const char*>(buf.Data());
  size_t len = buf.Length();
  return SubmitAio(info.Env(), addon_, h, "rbd_aio_write2", buf, [=](rbd_image_t img, rbd_completion_t c) {
    return rbd_aio_write2(img, off, len, data, c, 0);
  });
}

Napi::Value Image::AioWriteZeroes(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  uint64_t off = ArgU64(info, 0, "offset");
  uint64_t len = ArgU64(info, 1, "length");
  return SubmitAio(info.Env(), addon_, h, "rbd_aio_write_zeroes", Napi::Object(),
                   [=](rbd_image_t img, rbd_completion_t c) {
                     return rbd_aio_write_zeroes(img, off, static_cast<size_t>(len), c, 0, 0);
                   });
}

Napi::Value Image::AioDiscard(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  uint64_t off = ArgU64(info, 0, "offset");
  uint64_t len = ArgU64(info, 1, "length");
  return SubmitAio(info.Env(), addon_, h, "rbd_aio_discard", Napi::Object(),
                   [=](rbd_image_t img, rbd_completion_t c) { return rbd_aio_discard(img, off, len, c); });
}

Napi::Value Image::AioFlush(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  return SubmitAio(info.Env(), addon_, h, "rbd_aio_flush", Napi::Object(),
                   [=](rbd_image_t img, rbd_completion_t c) { return rbd_aio_flush(img, c); });
}

}  // namespace rbdb
