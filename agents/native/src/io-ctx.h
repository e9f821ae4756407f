// IoCtx: an I/O context on one pool (+ RADOS namespace) of a cluster. Owns RADOS object calls (the
// backup.<id>.meta objects) and image-level calls that need no open image: list, create, remove, clone,
// and open (which yields an Image).
#pragma once

#include "common.h"

namespace rbdb {

class IoCtx : public Napi::ObjectWrap<IoCtx>, public Releasable {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit IoCtx(const Napi::CallbackInfo& info);
  ~IoCtx() override;

  void Attach(std::shared_ptr<IoCtxHandle> h, std::string pool, std::string ns);
  void ReleaseHandle() override { h_.reset(); }
  int ReleaseLevel() const override { return 2; }
  std::shared_ptr<IoCtxHandle> handle(Napi::Env env) const;

 private:
  Napi::Value ObjCreateExclusive(const Napi::CallbackInfo& info);
  Napi::Value ObjWriteFull(const Napi::CallbackInfo& info);
  Napi::Value ObjRead(const Napi::CallbackInfo& info);
  Napi::Value ObjStat(const Napi::CallbackInfo& info);
  Napi::Value ObjRemove(const Napi::CallbackInfo& info);
  Napi::Value ObjList(const Napi::CallbackInfo& info);
  Napi::Value ObjListAllNamespaces(const Napi::CallbackInfo& info);
  Napi::Value PoolStat(const Napi::CallbackInfo& info);
  Napi::Value ImageList(const Napi::CallbackInfo& info);
  Napi::Value TrashList(const Napi::CallbackInfo& info);
  Napi::Value NamespaceExists(const Napi::CallbackInfo& info);
  Napi::Value ImageCreate(const Napi::CallbackInfo& info);
  Napi::Value ImageRemove(const Napi::CallbackInfo& info);
  Napi::Value ImageOpen(const Napi::CallbackInfo& info);
  Napi::Value ImageClone(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  Addon* addon_;
  std::shared_ptr<IoCtxHandle> h_;
  std::string pool_;
  std::string ns_;
};

}  // namespace rbdb
