// Image: an open RBD image (head, or a snapshot when opened at one). Owns image-level calls: stat,
// resize, snapshots, flatten, image-meta, aio data I/O straight from/into caller-owned Buffers, and
// diff iteration (which yields a DiffIterator). The aio calls live in image-aio.cc.
#pragma once

#include "common.h"

namespace rbdb {

class Image : public Napi::ObjectWrap<Image>, public Releasable {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Image(const Napi::CallbackInfo& info);
  ~Image() override;

  void Attach(std::shared_ptr<ImageHandle> h, std::string name, std::string snap, bool readOnly);
  void ReleaseHandle() override { h_.reset(); }
  int ReleaseLevel() const override { return 1; }
  std::shared_ptr<ImageHandle> handle(Napi::Env env) const;

 private:
  Napi::Value Stat(const Napi::CallbackInfo& info);
  Napi::Value Resize(const Napi::CallbackInfo& info);
  Napi::Value SnapCreate(const Napi::CallbackInfo& info);
  Napi::Value SnapRemove(const Napi::CallbackInfo& info);
  Napi::Value SnapList(const Napi::CallbackInfo& info);
  Napi::Value SnapProtect(const Napi::CallbackInfo& info);
  Napi::Value SnapUnprotect(const Napi::CallbackInfo& info);
  Napi::Value SnapRollback(const Napi::CallbackInfo& info);
  Napi::Value SnapSet(const Napi::CallbackInfo& info);
  Napi::Value Flatten(const Napi::CallbackInfo& info);
  Napi::Value ListChildren(const Napi::CallbackInfo& info);
  Napi::Value MetaGet(const Napi::CallbackInfo& info);
  Napi::Value MetaSet(const Napi::CallbackInfo& info);
  Napi::Value MetaRemove(const Napi::CallbackInfo& info);
  Napi::Value MetaList(const Napi::CallbackInfo& info);
  Napi::Value Watchers(const Napi::CallbackInfo& info);
  Napi::Value AioRead(const Napi::CallbackInfo& info);
  Napi::Value AioWrite(const Napi::CallbackInfo& info);
  Napi::Value AioWriteZeroes(const Napi::CallbackInfo& info);
  Napi::Value AioDiscard(const Napi::CallbackInfo& info);
  Napi::Value AioFlush(const Napi::CallbackInfo& info);
  Napi::Value DiffIterate(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  Addon* addon_;
  std::shared_ptr<ImageHandle> h_;
  std::string name_;
  std::string snap_;
  bool readOnly_ = false;
};

}  // namespace rbdb
