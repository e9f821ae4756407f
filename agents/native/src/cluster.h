// Cluster: one connection to a Ceph cluster (a rados_t). Created by the module's connect(); gives I/O
// contexts on pools. close() drops this wrapper's hold; the connection shuts down once every I/O context
// and image opened through it is closed too.
#pragma once

#include "common.h"

namespace rbdb {

class Cluster : public Napi::ObjectWrap<Cluster>, public Releasable {
 public:
  static Napi::Function Init(Napi::Env env);
  // connect({ conf, clientId, keyring?, config?: {key: value} }) -> Promise<Cluster>
  static Napi::Value Connect(const Napi::CallbackInfo& info);

  explicit Cluster(const Napi::CallbackInfo& info);
  ~Cluster() override;

  void ReleaseHandle() override { h_.reset(); }
  int ReleaseLevel() const override { return 3; }

  std::shared_ptr<ClusterHandle> handle(Napi::Env env) const;

 private:
  Napi::Value Fsid(const Napi::CallbackInfo& info);
  Napi::Value PoolList(const Napi::CallbackInfo& info);
  Napi::Value PoolExists(const Napi::CallbackInfo& info);
  Napi::Value ClusterStat(const Napi::CallbackInfo& info);
  Napi::Value OpenIoCtx(const Napi::CallbackInfo& info);
  Napi::Value MonCommand(const Napi::CallbackInfo& info);
  Napi::Value Addrs(const Napi::CallbackInfo& info);
  Napi::Value InstanceId(const Napi::CallbackInfo& info);
  Napi::Value BlocklistAdd(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  Addon* addon_;
  std::shared_ptr<ClusterHandle> h_;
};

}  // namespace rbdb
