#include "cluster.h"

#include <vector>

#include "io-ctx.h"

namespace rbdb {

Napi::Function Cluster::Init(Napi::Env env) {
  return DefineClass(env, "Cluster",
                     {
                         GuardedMethod<Cluster, &Cluster::Fsid>("fsid"),
                         GuardedMethod<Cluster, &Cluster::PoolList>("poolList"),
                         GuardedMethod<Cluster, &Cluster::PoolExists>("poolExists"),
                         GuardedMethod<Cluster, &Cluster::ClusterStat>("clusterStat"),
                         GuardedMethod<Cluster, &Cluster::OpenIoCtx>("openIoCtx"),
                         GuardedMethod<Cluster, &Cluster::MonCommand>("monCommand"),
                         GuardedMethod<Cluster, &Cluster::Addrs>("addrs"),
                         GuardedMethod<Cluster, &Cluster::InstanceId>("instanceId"),
                         GuardedMethod<Cluster, &Cluster::BlocklistAdd>("blocklistAdd"),
                         GuardedMethod<Cluster, &Cluster::Close>("close"),
                     });
}

Cluster::Cluster(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Cluster>(info), addon_(Addon::Get(info.Env())) {
  Guard(info.Env(), "Cluster", [&] {
    info.This().As<Napi::Object>().TypeTag(&kClusterTag);
    addon_->Register(this);
  });
}

Cluster::~Cluster() {
  if (addon_ != nullptr) addon_->Unregister(this);
}

std::shared_ptr<ClusterHandle> Cluster::handle(Napi::Env env) const {
  if (!h_) throw ClosedError(env, "cluster connection");
  return h_;
}

Napi::Value Cluster::Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object opts = ArgObject(info, 0, "options");
  std::string conf, clientId, keyring;
  if (!OptString(opts, "conf", &conf)) throw Napi::TypeError::New(env, "conf must be a string");
  if (!OptString(opts, "clientId", &clientId)) throw Napi::TypeError::New(env, "clientId must be a string");
  bool hasKeyring = OptString(opts, "keyring", &keyring);
  std::vector<std::pair<std::string, std::string>> config;
  Napi::Value cfg = opts.Get("config");
  if (cfg.IsObject()) {
    Napi::Object o = cfg.As<Napi::Object>();
    Napi::Array keys = o.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      Napi::Value k = keys.Get(i);
      Napi::Value v = o.Get(k);
      if (!v.IsString()) throw Napi::TypeError::New(env, "config values must be strings");
      config.emplace_back(k.ToString().Utf8Value(), v.As<Napi::String>().Utf8Value());
    }
  }
  auto h = NewHandle<ClusterHandle>();
  auto failedOp = std::make_shared<std::string>("rados_create2");
  auto exec = [=]() -> int {
    std::string name = "client." + clientId;
    int rc = rados_create2(&h->cluster, "ceph", name.c_str(), 0);
    if (rc < 0) {
      h->cluster = nullptr;
      return rc;
    }
    *failedOp = "rados_conf_read_file";
    rc = rados_conf_read_file(h->cluster, conf.c_str());
    if (rc < 0) return rc;
    if (hasKeyring) {
      *failedOp = "rados_conf_set(keyring)";
      rc = rados_conf_set(h->cluster, "keyring", keyring.c_str());
      if (rc < 0) return rc;
    }
    for (const auto& kv : config) {
      *failedOp = "rados_conf_set(" + kv.first + ")";
      rc = rados_conf_set(h->cluster, kv.first.c_str(), kv.second.c_str());
      if (rc < 0) return rc;
    }
    *failedOp = "rados_connect";
    return rados_connect(h->cluster);
  };
  auto* addon = Addon::Get(env);
  return RunAsync(env, failedOp, exec, [h, addon](Napi::Env) -> Napi::Value {
    Napi::Object obj = addon->clusterCtor.New({});
    Cluster::Unwrap(obj)->h_ = h;
    return obj;
  });
}

Napi::Value Cluster::Fsid(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  char buf[64] = {0};
  int rc = rados_cluster_fsid(h->cluster, buf, sizeof buf);
  if (rc < 0) throw CephError(info.Env(), rc, "rados_cluster_fsid");
  return Napi::String::New(info.Env(), buf);
}

Napi::Value Cluster::PoolList(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  auto out = std::make_shared<std::vector<char>>();
  return RunAsync(
      info.Env(), "rados_pool_list",
      [h, out]() -> int {
        size_t len = 4096;
        for (;;) {
          out->assign(len, 0);
          int rc = rados_pool_list(h->cluster, out->data(), out->size());
          if (rc < 0) return rc;
          if (static_cast<size_t>(rc) <= out->size()) return 0;
          len = static_cast<size_t>(rc);
        }
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env);
        const char* p = out->data();
        const char* end = out->data() + out->size();
        uint32_t i = 0;
        while (p < end && *p != '\0') {
          std::string name(p);
          arr.Set(i++, name);
          p += name.size() + 1;
        }
        return arr;
      });
}

Napi::Value Cluster::PoolExists(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string pool = ArgString(info, 0, "pool");
  auto exists = std::make_shared<bool>(false);
  return RunAsync(
      info.Env(), "rados_pool_lookup",
      [h, pool, exists]() -> int {
        int64_t id = rados_pool_lookup(h->cluster, pool.c_str());
        if (id == -ENOENT) return 0;
        if (id < 0) return static_cast<int>(id);
        *exists = true;
        return 0;
      },
      [exists](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *exists); });
}

Napi::Value Cluster::ClusterStat(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  auto st = std::make_shared<rados_cluster_stat_t>();
  return RunAsync(
      info.Env(), "rados_cluster_stat", [h, st]() -> int { return rados_cluster_stat(h->cluster, st.get()); },
      [st](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("bytes", Napi::Number::New(env, static_cast<double>(st->kb) * 1024));
        o.Set("bytesUsed", Napi::Number::New(env, static_cast<double>(st->kb_used) * 1024));
        o.Set("bytesAvailable", Napi::Number::New(env, static_cast<double>(st->kb_avail) * 1024));
        o.Set("objects", Napi::Number::New(env, static_cast<double>(st->num_objects)));
        return o;
      });
}

Napi::Value Cluster::OpenIoCtx(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = handle(env);
  std::string pool = ArgString(info, 0, "pool");
  std::string ns;
  bool fullTry = false;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    OptString(o, "namespace", &ns);
    OptBool(o, "poolFullTry", &fullTry);
  }
  auto io = NewHandle<IoCtxHandle>();
  io->cluster = h;
  Addon* addon = addon_;
  return RunAsync(
      env, "rados_ioctx_create",
      [io, pool, ns, fullTry]() -> int {
        int rc = rados_ioctx_create(io->cluster->cluster, pool.c_str(), &io->io);
        if (rc < 0) {
          io->io = nullptr;
          return rc;
        }
        rados_ioctx_set_namespace(io->io, ns.c_str());
        if (fullTry) rados_set_pool_full_try(io->io);
        return 0;
      },
      [io, addon, pool, ns](Napi::Env env) -> Napi::Value {
        Napi::Object obj = addon->ioCtxCtor.New({});
        IoCtx::Unwrap(obj)->Attach(io, pool, ns);
        return obj;
      });
}

Napi::Value Cluster::MonCommand(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string cmd = ArgString(info, 0, "command");
  struct Out {
    std::string out, status;
  };
  auto out = std::make_shared<Out>();
  return RunAsync(
      info.Env(), "rados_mon_command",
      [h, cmd, out]() -> int {
        const char* cmds[1] = {cmd.c_str()};
        char* outbuf = nullptr;
        char* outs = nullptr;
        size_t outbuflen = 0, outslen = 0;
        int rc = rados_mon_command(h->cluster, cmds, 1, "", 0, &outbuf, &outbuflen, &outs, &outslen);
        if (outbuf != nullptr) {
          out->out.assign(outbuf, outbuflen);
          rados_buffer_free(outbuf);
        }
        if (outs != nullptr) {
          out->status.assign(outs, outslen);
          rados_buffer_free(outs);
        }
        return rc;
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("output", out->out);
        o.Set("status", out->status);
        return o;
      });
}

Napi::Value Cluster::Addrs(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  char* addrs = nullptr;
  int rc = rados_getaddrs(h->cluster, &addrs);
  if (rc < 0) throw CephError(info.Env(), rc, "rados_getaddrs");
  std::string s(addrs != nullptr ? addrs : "");
  if (addrs != nullptr) rados_buffer_free(addrs);
  return Napi::String::New(info.Env(), s);
}

Napi::Value Cluster::InstanceId(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  // The client's global id (client.<id>): what rbd_watchers_list reports as a watcher's id.
  return Napi::Number::New(info.Env(), static_cast<double>(rados_get_instance_id(h->cluster)));
}

Napi::Value Cluster::BlocklistAdd(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string addr = ArgString(info, 0, "address");
  uint64_t expire = ArgU64(info, 1, "expireSeconds");
  return RunAsync(info.Env(), "rados_blocklist_add", [h, addr, expire]() -> int {
    return rados_blocklist_add(h->cluster, const_cast<char*>(addr.c_str()), static_cast<uint32_t>(expire));
  });
}

Napi::Value Cluster::Close(const Napi::CallbackInfo& info) {
  // The last holder shuts the connection down, off the JS thread when that is us.
  return RunAsync(info.Env(), "rados_shutdown", [h = std::move(h_)]() mutable -> int {
    h.reset();
    return 0;
  });
}

}  // namespace rbdb
