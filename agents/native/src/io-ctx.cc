#include "io-ctx.h"

#include <algorithm>
#include <cerrno>
#include <vector>

#include "image.h"

namespace rbdb {

Napi::Function IoCtx::Init(Napi::Env env) {
  return DefineClass(env, "IoCtx",
                     {
                         GuardedMethod<IoCtx, &IoCtx::ObjCreateExclusive>("objCreateExclusive"),
                         GuardedMethod<IoCtx, &IoCtx::ObjWriteFull>("objWriteFull"),
                         GuardedMethod<IoCtx, &IoCtx::ObjRead>("objRead"),
                         GuardedMethod<IoCtx, &IoCtx::ObjStat>("objStat"),
                         GuardedMethod<IoCtx, &IoCtx::ObjRemove>("objRemove"),
                         GuardedMethod<IoCtx, &IoCtx::ObjList>("objList"),
                         GuardedMethod<IoCtx, &IoCtx::ObjListAllNamespaces>("objListAllNamespaces"),
                         GuardedMethod<IoCtx, &IoCtx::PoolStat>("poolStat"),
                         GuardedMethod<IoCtx, &IoCtx::ImageList>("imageList"),
                         GuardedMethod<IoCtx, &IoCtx::TrashList>("trashList"),
                         GuardedMethod<IoCtx, &IoCtx::NamespaceExists>("namespaceExists"),
                         GuardedMethod<IoCtx, &IoCtx::ImageCreate>("imageCreate"),
                         GuardedMethod<IoCtx, &IoCtx::ImageRemove>("imageRemove"),
                         GuardedMethod<IoCtx, &IoCtx::ImageOpen>("imageOpen"),
                         GuardedMethod<IoCtx, &IoCtx::ImageClone>("imageClone"),
                         GuardedMethod<IoCtx, &IoCtx::Close>("close"),
                     });
}

IoCtx::IoCtx(const Napi::CallbackInfo& info) : Napi::ObjectWrap<IoCtx>(info), addon_(Addon::Get(info.Env())) {
  Guard(info.Env(), "IoCtx", [&] {
    info.This().As<Napi::Object>().TypeTag(&kIoCtxTag);
    addon_->Register(this);
  });
}

IoCtx::~IoCtx() {
  if (addon_ != nullptr) addon_->Unregister(this);
}

void IoCtx::Attach(std::shared_ptr<IoCtxHandle> h, std::string pool, std::string ns) {
  h_ = std::move(h);
  pool_ = std::move(pool);
  ns_ = std::move(ns);
}

std::shared_ptr<IoCtxHandle> IoCtx::handle(Napi::Env env) const {
  if (!h_) throw ClosedError(env, "I/O context");
  return h_;
}

static std::string BufferBytes(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Buffer<uint8_t> b = ArgBuffer(info, i, name);
  return std::string(reinterpret_cast<const char*>(b.Data()), b.Length());
}

Napi::Value IoCtx::ObjCreateExclusive(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string oid = ArgString(info, 0, "oid");
  std::string data = BufferBytes(info, 1, "data");
  // One atomic op: create-exclusive + write_full, so the object never exists half-written.
  return RunAsync(info.Env(), "rados_write_op_operate(create exclusive)", [h, oid, data]() -> int {
    rados_write_op_t op = rados_create_write_op();
    if (op == nullptr) return -ENOMEM;
    rados_write_op_create(op, LIBRADOS_CREATE_EXCLUSIVE, nullptr);
    rados_write_op_write_full(op, data.data(), data.size());
    int rc = rados_write_op_operate(op, h->io, oid.c_str(), nullptr, 0);
    rados_release_write_op(op);
    return rc;
  });
}

Napi::Value IoCtx::ObjWriteFull(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string oid = ArgString(info, 0, "oid");
  std::string data = BufferBytes(info, 1, "data");
  return RunAsync(info.Env(), "rados_write_full", [h, oid, data]() -> int {
    return rados_write_full(h->io, oid.c_str(), data.data(), data.size());
  });
}

Napi::Value IoCtx::ObjRead(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string oid = ArgString(info, 0, "oid");
  // At most this many bytes (EFBIG beyond): what the caller expects such an object to hold, whatever
  // someone with write access to the pool put there.
  uint64_t maxBytes = ArgU64(info, 1, "maxBytes");
  // The reads below bound themselves by maxBytes + 1 (to see one byte too many): 2^64-1 would wrap to 0
  // and loop forever on an empty object. No object is that big; the JS side passes at most 2^53-1.
  if (maxBytes > (uint64_t{1} << 53)) {
    throw Napi::RangeError::New(info.Env(), "maxBytes must be at most 2^53");
  }
  auto out = std::make_shared<std::string>();
  return RunAsync(
      info.Env(), "rados_read",
      [h, oid, out, maxBytes]() -> int {
        uint64_t size = 0;
        time_t mtime = 0;
        int rc = rados_stat(h->io, oid.c_str(), &size, &mtime);
        if (rc < 0) return rc;
        if (size > maxBytes) return -EFBIG;
        // Read until a short read (the object may have grown since the stat), in pieces well under
        // INT_MAX: rados_read answers the count as an int.
        constexpr uint64_t kPiece = 16 << 20;
        size_t want = static_cast<size_t>(size > 0 ? std::min<uint64_t>(size, kPiece) : 4096);
        uint64_t off = 0;
        for (;;) {
          if (off + want > maxBytes + 1) want = static_cast<size_t>(maxBytes + 1 - off);
          out->resize(off + want);
          rc = rados_read(h->io, oid.c_str(), &(*out)[off], want, off);
          if (rc < 0) return rc;
          off += static_cast<uint64_t>(rc);
          if (off > maxBytes) return -EFBIG;
          if (static_cast<size_t>(rc) < want) break;
          want = static_cast<size_t>(kPiece);
        }
        out->resize(off);
        return 0;
      },
      [out](Napi::Env env) -> Napi::Value { return Napi::Buffer<char>::Copy(env, out->data(), out->size()); });
}

Napi::Value IoCtx::ObjStat(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string oid = ArgString(info, 0, "oid");
  auto size = std::make_shared<uint64_t>(0);
  auto mtime = std::make_shared<time_t>(0);
  return RunAsync(
      info.Env(), "rados_stat", [h, oid, size, mtime]() -> int { return rados_stat(h->io, oid.c_str(), size.get(), mtime.get()); },
      [size, mtime](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("size", Napi::Number::New(env, static_cast<double>(*size)));
        o.Set("mtime", Napi::Number::New(env, static_cast<double>(*mtime)));
        return o;
      });
}

Napi::Value IoCtx::ObjRemove(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string oid = ArgString(info, 0, "oid");
  return RunAsync(info.Env(), "rados_remove", [h, oid]() -> int { return rados_remove(h->io, oid.c_str()); });
}

Napi::Value IoCtx::ObjList(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  auto names = std::make_shared<std::vector<std::string>>();
  return RunAsync(
      info.Env(), "rados_nobjects_list",
      [h, names]() -> int {
        rados_list_ctx_t ctx = nullptr;
        int rc = rados_nobjects_list_open(h->io, &ctx);
        if (rc < 0) return rc;
        for (;;) {
          const char* entry = nullptr;
          size_t len = 0;
          rc = rados_nobjects_list_next2(ctx, &entry, nullptr, nullptr, &len, nullptr, nullptr);
          if (rc == -ENOENT) {
            rc = 0;
            break;
          }
          if (rc < 0) break;
          names->emplace_back(entry, len);
        }
        rados_nobjects_list_close(ctx);
        return rc;
      },
      [names](Napi::Env env) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, names->size());
        for (size_t i = 0; i < names->size(); i++) arr.Set(static_cast<uint32_t>(i), (*names)[i]);
        return arr;
      });
}

// objListAllNamespaces(prefix): [namespace, oid] of every object of the pool, in every RADOS namespace,
// whose name starts with `prefix`. Lists through a second I/O context on the same pool set to
// LIBRADOS_ALL_NSPACES, so this context's own namespace is left as it is.
Napi::Value IoCtx::ObjListAllNamespaces(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string prefix = ArgString(info, 0, "prefix");
  auto found = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  return RunAsync(
      info.Env(), "rados_nobjects_list",
      [h, prefix, found]() -> int {
        rados_ioctx_t all = nullptr;
        int rc = rados_ioctx_create2(h->cluster->cluster, rados_ioctx_get_id(h->io), &all);
        if (rc < 0) return rc;
        rados_ioctx_set_namespace(all, LIBRADOS_ALL_NSPACES);
        rados_list_ctx_t ctx = nullptr;
        rc = rados_nobjects_list_open(all, &ctx);
        if (rc < 0) {
          rados_ioctx_destroy(all);
          return rc;
        }
        for (;;) {
          const char* entry = nullptr;
          const char* nspace = nullptr;
          size_t len = 0;
          size_t nspace_len = 0;
          rc = rados_nobjects_list_next2(ctx, &entry, nullptr, &nspace, &len, nullptr, &nspace_len);
          if (rc == -ENOENT) {
            rc = 0;
            break;
          }
          if (rc < 0) break;
          if (len >= prefix.size() && std::string(entry, prefix.size()) == prefix) {
            found->emplace_back(std::string(nspace ? nspace : "", nspace ? nspace_len : 0), std::string(entry, len));
          }
        }
        rados_nobjects_list_close(ctx);
        rados_ioctx_destroy(all);
        return rc;
      },
      [found](Napi::Env env) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, found->size());
        for (size_t i = 0; i < found->size(); i++) {
          Napi::Array pair = Napi::Array::New(env, 2);
          pair.Set(0u, (*found)[i].first);
          pair.Set(1u, (*found)[i].second);
          arr.Set(static_cast<uint32_t>(i), pair);
        }
        return arr;
      });
}

Napi::Value IoCtx::PoolStat(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  auto st = std::make_shared<rados_pool_stat_t>();
  return RunAsync(
      info.Env(), "rados_ioctx_pool_stat", [h, st]() -> int { return rados_ioctx_pool_stat(h->io, st.get()); },
      [st](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("bytes", Napi::Number::New(env, static_cast<double>(st->num_bytes)));
        o.Set("objects", Napi::Number::New(env, static_cast<double>(st->num_objects)));
        return o;
      });
}

Napi::Value IoCtx::ImageList(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  auto names = std::make_shared<std::vector<std::string>>();
  return RunAsync(
      info.Env(), "rbd_list2",
      [h, names]() -> int {
        size_t max = 64;
        std::vector<rbd_image_spec_t> specs;
        int rc = CallWithRoom([&] {
          specs.assign(max, rbd_image_spec_t{});
          return rbd_list2(h->io, specs.data(), &max);  // max: the images listed, or the room needed
        });
        if (rc < 0) return rc;
        for (size_t i = 0; i < max; i++) names->emplace_back(specs[i].name);
        rbd_image_spec_list_cleanup(specs.data(), max);
        return 0;
      },
      [names](Napi::Env env) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, names->size());
        for (size_t i = 0; i < names->size(); i++) arr.Set(static_cast<uint32_t>(i), (*names)[i]);
        return arr;
      });
}

// trashList(): the names of the images in this pool's (and namespace's) RBD trash — an image moved there
// (`rbd trash mv`, deferred deletes of ceph-csi and Cinder) keeps its snapshots and may be restored.
Napi::Value IoCtx::TrashList(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  auto names = std::make_shared<std::vector<std::string>>();
  return RunAsync(
      info.Env(), "rbd_trash_list",
      [h, names]() -> int {
        size_t room = 64;
        std::vector<rbd_trash_image_info_t> entries;
        int rc = CallWithRoom([&] {
          entries.assign(room, rbd_trash_image_info_t{});
          size_t n = room;
          int r = rbd_trash_list(h->io, entries.data(), &n);
          // ERANGE: n is the room needed now; some more, for a trash that fills while it is listed.
          if (r == -ERANGE) room = n + 32;
          return r;
        });
        if (rc < 0) return rc;
        // rc: the entries filled in (their strings librbd's, freed by the cleanup whatever happens here).
        struct Cleanup {
          rbd_trash_image_info_t* e;
          size_t n;
          ~Cleanup() { rbd_trash_list_cleanup(e, n); }
        } cleanup{entries.data(), static_cast<size_t>(rc)};
        for (int i = 0; i < rc; i++) names->emplace_back(entries[i].name);
        return 0;
      },
      [names](Napi::Env env) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, names->size());
        for (size_t i = 0; i < names->size(); i++) arr.Set(static_cast<uint32_t>(i), (*names)[i]);
        return arr;
      });
}

// namespaceExists(name): whether an RBD namespace exists in this pool (librbd's rbd_namespace_exists,
// which needs the I/O context on the default namespace).
Napi::Value IoCtx::NamespaceExists(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string name = ArgString(info, 0, "name");
  auto exists = std::make_shared<bool>(false);
  return RunAsync(
      info.Env(), "rbd_namespace_exists",
      [h, name, exists]() -> int { return rbd_namespace_exists(h->io, name.c_str(), exists.get()); },
      [exists](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *exists); });
}

namespace {
struct CreateOpts {
  bool hasFeatures = false, hasOrder = false, hasStripeUnit = false, hasStripeCount = false, hasDataPool = false;
  bool hasCloneFormat = false;
  uint64_t features = 0, order = 0, stripeUnit = 0, stripeCount = 0, cloneFormat = 0;
  std::string dataPool;

  void Read(Napi::Object o) {
    hasFeatures = OptU64(o, "features", &features);
    hasOrder = OptU64(o, "order", &order);
    hasStripeUnit = OptU64(o, "stripeUnit", &stripeUnit);
    hasStripeCount = OptU64(o, "stripeCount", &stripeCount);
    hasDataPool = OptString(o, "dataPool", &dataPool);
    hasCloneFormat = OptU64(o, "cloneFormat", &cloneFormat);
  }
  // Returns an owned rbd_image_options_t (caller destroys) or sets *rc.
  rbd_image_options_t Make(int* rc) const {
    rbd_image_options_t opts;
    rbd_image_options_create(&opts);
    *rc = 0;
    if (hasFeatures && *rc == 0) *rc = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FEATURES, features);
    if (hasOrder && *rc == 0) *rc = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_ORDER, order);
    if (hasStripeUnit && *rc == 0) *rc = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_STRIPE_UNIT, stripeUnit);
    if (hasStripeCount && *rc == 0) *rc = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_STRIPE_COUNT, stripeCount);
    if (hasDataPool && *rc == 0) *rc = rbd_image_options_set_string(opts, RBD_IMAGE_OPTION_DATA_POOL, dataPool.c_str());
    // Clone only: 2 = a clone of an unprotected snapshot (needs no require-min-compat-client mimic).
    if (hasCloneFormat && *rc == 0) *rc = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_CLONE_FORMAT, cloneFormat);
    return opts;
  }
};
}  // namespace

Napi::Value IoCtx::ImageCreate(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string name = ArgString(info, 0, "name");
  uint64_t size = ArgU64(info, 1, "size");
  CreateOpts co;
  if (info.Length() > 2 && info[2].IsObject()) co.Read(info[2].As<Napi::Object>());
  return RunAsync(info.Env(), "rbd_create4", [h, name, size, co]() -> int {
    int rc = 0;
    rbd_image_options_t opts = co.Make(&rc);
    if (rc == 0) rc = rbd_create4(h->io, name.c_str(), size, opts);
    rbd_image_options_destroy(opts);
    return rc;
  });
}

Napi::Value IoCtx::ImageRemove(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string name = ArgString(info, 0, "name");
  return RunAsync(info.Env(), "rbd_remove", [h, name]() -> int { return rbd_remove(h->io, name.c_str()); });
}

Napi::Value IoCtx::ImageOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = handle(env);
  std::string name = ArgString(info, 0, "name");
  std::string snap;
  bool readOnly = false;
  bool hasSnap = false;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    OptBool(o, "readOnly", &readOnly);
    hasSnap = OptString(o, "snapshot", &snap);
  }
  auto img = NewHandle<ImageHandle>();
  img->ioctx = h;
  Addon* addon = addon_;
  return RunAsync(
      env, readOnly ? "rbd_open_read_only" : "rbd_open",
      [img, name, snap, hasSnap, readOnly]() -> int {
        const char* s = hasSnap ? snap.c_str() : nullptr;
        int rc = readOnly ? rbd_open_read_only(img->ioctx->io, name.c_str(), &img->image, s)
                          : rbd_open(img->ioctx->io, name.c_str(), &img->image, s);
        if (rc < 0) img->image = nullptr;
        return rc;
      },
      [img, addon, name, snap, readOnly](Napi::Env env) -> Napi::Value {
        Napi::Object obj = addon->imageCtor.New({});
        Image::Unwrap(obj)->Attach(img, name, snap, readOnly);
        return obj;
      });
}

Napi::Value IoCtx::ImageClone(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = handle(env);
  std::string parent = ArgString(info, 0, "parentName");
  std::string parentSnap = ArgString(info, 1, "parentSnapshot");
  Napi::Object destObj = ArgObject(info, 2, "destIoCtx");
  if (!destObj.CheckTypeTag(&kIoCtxTag)) throw Napi::TypeError::New(env, "destIoCtx must be an IoCtx");
  auto dest = IoCtx::Unwrap(destObj)->handle(env);
  std::string destName = ArgString(info, 3, "destName");
  CreateOpts co;
  if (info.Length() > 4 && info[4].IsObject()) co.Read(info[4].As<Napi::Object>());
  return RunAsync(env, "rbd_clone3", [h, dest, parent, parentSnap, destName, co]() -> int {
    int rc = 0;
    rbd_image_options_t opts = co.Make(&rc);
    if (rc == 0) rc = rbd_clone3(h->io, parent.c_str(), parentSnap.c_str(), dest->io, destName.c_str(), opts);
    rbd_image_options_destroy(opts);
    return rc;
  });
}

Napi::Value IoCtx::Close(const Napi::CallbackInfo& info) {
  return RunAsync(info.Env(), "rados_ioctx_destroy", [h = std::move(h_)]() mutable -> int {
    h.reset();
    return 0;
  });
}

}  // namespace rbdb
