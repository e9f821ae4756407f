#include "image.h"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <vector>

#include "diff-iterator.h"

namespace rbdb {

Napi::Function Image::Init(Napi::Env env) {
  return DefineClass(env, "Image",
                     {
                         GuardedMethod<Image, &Image::Stat>("stat"),
                         GuardedMethod<Image, &Image::Resize>("resize"),
                         GuardedMethod<Image, &Image::SnapCreate>("snapCreate"),
                         GuardedMethod<Image, &Image::SnapRemove>("snapRemove"),
                         GuardedMethod<Image, &Image::SnapList>("snapList"),
                         GuardedMethod<Image, &Image::SnapProtect>("snapProtect"),
                         GuardedMethod<Image, &Image::SnapUnprotect>("snapUnprotect"),
                         GuardedMethod<Image, &Image::SnapRollback>("snapRollback"),
                         GuardedMethod<Image, &Image::SnapSet>("snapSet"),
                         GuardedMethod<Image, &Image::Flatten>("flatten"),
                         GuardedMethod<Image, &Image::ListChildren>("listChildren"),
                         GuardedMethod<Image, &Image::MetaGet>("metaGet"),
                         GuardedMethod<Image, &Image::MetaSet>("metaSet"),
                         GuardedMethod<Image, &Image::MetaRemove>("metaRemove"),
                         GuardedMethod<Image, &Image::MetaList>("metaList"),
                         GuardedMethod<Image, &Image::Watchers>("watchers"),
                         GuardedMethod<Image, &Image::AioRead>("read"),
                         GuardedMethod<Image, &Image::AioWrite>("write"),
                         GuardedMethod<Image, &Image::AioWriteZeroes>("writeZeroes"),
                         GuardedMethod<Image, &Image::AioDiscard>("discard"),
                         GuardedMethod<Image, &Image::AioFlush>("flush"),
                         GuardedMethod<Image, &Image::DiffIterate>("diffIterate"),
                         GuardedMethod<Image, &Image::Close>("close"),
                     });
}

Image::Image(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Image>(info), addon_(Addon::Get(info.Env())) {
  Guard(info.Env(), "Image", [&] {
    info.This().As<Napi::Object>().TypeTag(&kImageTag);
    addon_->Register(this);
  });
}

Image::~Image() {
  if (addon_ != nullptr) addon_->Unregister(this);
}

void Image::Attach(std::shared_ptr<ImageHandle> h, std::string name, std::string snap, bool readOnly) {
  h_ = std::move(h);
  name_ = std::move(name);
  snap_ = std::move(snap);
  readOnly_ = readOnly;
}

std::shared_ptr<ImageHandle> Image::handle(Napi::Env env) const {
  if (!h_) throw ClosedError(env, "image");
  return h_;
}

Napi::Value Image::Stat(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  struct Out {
    rbd_image_info_t info{};
    uint64_t features = 0, flags = 0, stripeUnit = 0, stripeCount = 0, overlap = 0;
  };
  auto out = std::make_shared<Out>();
  return RunAsync(
      info.Env(), "rbd_stat",
      [h, out]() -> int {
        int rc = rbd_stat(h->image, &out->info, sizeof out->info);
        if (rc == 0) rc = rbd_get_features(h->image, &out->features);
        if (rc == 0) rc = rbd_get_flags(h->image, &out->flags);
        if (rc == 0) rc = rbd_get_stripe_unit(h->image, &out->stripeUnit);
        if (rc == 0) rc = rbd_get_stripe_count(h->image, &out->stripeCount);
        if (rc == 0) {
          // A clone's parent overlap (lowered for good when the clone is shrunk); 0 without a parent.
          rc = rbd_get_overlap(h->image, &out->overlap);
          if (rc == -ENOENT) {
            out->overlap = 0;
            rc = 0;
          }
        }
        return rc;
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("size", Napi::Number::New(env, static_cast<double>(out->info.size)));
        o.Set("objectSize", Napi::Number::New(env, static_cast<double>(out->info.obj_size)));
        o.Set("numObjects", Napi::Number::New(env, static_cast<double>(out->info.num_objs)));
        o.Set("order", Napi::Number::New(env, out->info.order));
        o.Set("features", Napi::BigInt::New(env, out->features));
        o.Set("flags", Napi::Number::New(env, static_cast<double>(out->flags)));
        o.Set("stripeUnit", Napi::Number::New(env, static_cast<double>(out->stripeUnit)));
        o.Set("stripeCount", Napi::Number::New(env, static_cast<double>(out->stripeCount)));
        o.Set("parentOverlap", Napi::Number::New(env, static_cast<double>(out->overlap)));
        return o;
      });
}

Napi::Value Image::Resize(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  uint64_t size = ArgU64(info, 0, "size");
  return RunAsync(info.Env(), "rbd_resize", [h, size]() -> int { return rbd_resize(h->image, size); });
}

#define SNAP_OP(Method, fn)                                                                     \
  Napi::Value Image::Method(const Napi::CallbackInfo& info) {                                   \
    auto h = handle(info.Env());                                                                \
    std::string snap = ArgString(info, 0, "snapshot");                                          \
    return RunAsync(info.Env(), #fn, [h, snap]() -> int { return fn(h->image, snap.c_str()); }); \
  }
SNAP_OP(SnapRemove, rbd_snap_remove)
SNAP_OP(SnapProtect, rbd_snap_protect)
SNAP_OP(SnapUnprotect, rbd_snap_unprotect)
SNAP_OP(SnapRollback, rbd_snap_rollback)
#undef SNAP_OP

namespace {
int NoProgress(uint64_t, uint64_t, void*) { return 0; }
}  // namespace

// Creates a snapshot: rbd_snap_create (the client's rbd_default_snapshot_quiesce_mode applies, so a
// volume's quiesce hooks run), or with skipQuiesce (an image no other client maps: the backup pool's
// base images) rbd_snap_create2 with RBD_SNAP_CREATE_SKIP_QUIESCE — two fewer notify round trips.
Napi::Value Image::SnapCreate(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string snap = ArgString(info, 0, "snapshot");
  bool skip = info.Length() > 1 && !info[1].IsUndefined() && ArgBool(info, 1, "skipQuiesce");
  if (!skip)
    return RunAsync(info.Env(), "rbd_snap_create",
                    [h, snap]() -> int { return rbd_snap_create(h->image, snap.c_str()); });
  return RunAsync(info.Env(), "rbd_snap_create2", [h, snap]() -> int {
    return rbd_snap_create2(h->image, snap.c_str(), RBD_SNAP_CREATE_SKIP_QUIESCE, NoProgress, nullptr);
  });
}

// Moves this handle to a snapshot (reads see it, writes fail), or back to the head with null. The
// caller lets the I/O in flight drain first (agents/ceph/image.ts).
Napi::Value Image::SnapSet(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  bool head = info.Length() < 1 || info[0].IsNull() || info[0].IsUndefined();
  std::string snap = head ? std::string() : ArgString(info, 0, "snapshot");
  return RunAsync(info.Env(), "rbd_snap_set",
                  [h, snap, head]() -> int { return rbd_snap_set(h->image, head ? nullptr : snap.c_str()); });
}

Napi::Value Image::SnapList(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  struct Snap {
    uint64_t id, size;
    std::string name;
    double timestamp;
    bool isProtected;
  };
  auto snaps = std::make_shared<std::vector<Snap>>();
  return RunAsync(
      info.Env(), "rbd_snap_list",
      [h, snaps]() -> int {
        int max = 16;
        std::vector<rbd_snap_info_t> buf;
        int n = CallWithRoom([&] {
          buf.assign(static_cast<size_t>(max), rbd_snap_info_t{});
          return rbd_snap_list(h->image, buf.data(), &max);
        });
        if (n < 0) return n;
        int rc = 0;
        for (int i = 0; i < n && rc == 0; i++) {
          Snap s{buf[i].id, buf[i].size, buf[i].name, 0, false};
          struct timespec ts {};
          int prot = 0;
          int r1 = rbd_snap_get_timestamp(h->image, s.id, &ts);
          int r2 = r1 == 0 ? rbd_snap_is_protected(h->image, buf[i].name, &prot) : r1;
          // A snapshot removed by another client since the listing: leave it out.
          if (r2 == -ENOENT) continue;
          rc = r2;
          s.timestamp = static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
          s.isProtected = prot != 0;
          snaps->push_back(std::move(s));
        }
        rbd_snap_list_end(buf.data());
        return rc;
      },
      [snaps](Napi::Env env) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, snaps->size());
        for (size_t i = 0; i < snaps->size(); i++) {
          const Snap& s = (*snaps)[i];
          Napi::Object o = Napi::Object::New(env);
          o.Set("id", Napi::Number::New(env, static_cast<double>(s.id)));
          o.Set("name", s.name);
          o.Set("size", Napi::Number::New(env, static_cast<double>(s.size)));
          o.Set("timestamp", Napi::Number::New(env, s.timestamp));
          o.Set("protected", Napi::Boolean::New(env, s.isProtected));
          arr.Set(static_cast<uint32_t>(i), o);
        }
        return arr;
      });
}

namespace {

// Shared with JS through a BigInt64Array of 3 (agents/ceph/image.ts flatten): [0] set non-zero by JS to
// cancel, [1] and [2] the objects librbd started so far and their total, stored here. JS and this
// thread touch it only atomically (Atomics.load/store there).
int FlattenProgress(uint64_t done, uint64_t total, void* arg) {
  auto* ctl = static_cast<int64_t*>(arg);
  // librbd names the object it just started (0-based): started = that + 1.
  __atomic_store_n(&ctl[1], static_cast<int64_t>(done < total ? done + 1 : total), __ATOMIC_RELAXED);
  __atomic_store_n(&ctl[2], static_cast<int64_t>(total), __ATOMIC_RELAXED);
  // librbd starts no further object copy once this is negative (the copies in flight finish), and
  // rbd_flatten_with_progress returns it: the clone stays a clone, a later flatten copies the rest.
  return __atomic_load_n(&ctl[0], __ATOMIC_RELAXED) != 0 ? -ECANCELED : 0;
}

}  // namespace

// flatten(ctl?: BigInt64Array(3)): with ctl, cancellable and observable (FlattenProgress).
Napi::Value Image::Flatten(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  if (info.Length() == 0 || info[0].IsUndefined()) {
    return RunAsync(info.Env(), "rbd_flatten", [h]() -> int { return rbd_flatten(h->image); });
  }
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_bigint64_array ||
      info[0].As<Napi::TypedArray>().ElementLength() < 3) {
    throw Napi::TypeError::New(info.Env(), "ctl must be a BigInt64Array of at least 3");
  }
  auto arr = info[0].As<Napi::TypedArrayOf<int64_t>>();
  // Only shared memory stays where it is: an ArrayBuffer can be transferred away (detached) while
  // librbd's thread still writes through `ctl`. (V8's IsArrayBuffer is false for a SharedArrayBuffer.)
  if (arr.ArrayBuffer().IsArrayBuffer()) {
    throw Napi::TypeError::New(info.Env(), "ctl must be backed by a SharedArrayBuffer");
  }
  int64_t* ctl = arr.Data();
  // The array's memory stays valid while the worker runs: `done` holds a reference to it, and the worker
  // lets go of `done` on the JS thread once it completed (exec is let go of on libuv's pool: it holds none).
  auto keep = std::make_shared<Napi::ObjectReference>(Napi::Persistent(arr.As<Napi::Object>()));
  return RunAsync(
      info.Env(), "rbd_flatten_with_progress",
      [h, ctl]() -> int { return rbd_flatten_with_progress(h->image, FlattenProgress, ctl); },
      [keep](Napi::Env env) -> Napi::Value { return env.Undefined(); });
}

// Clones of the snapshot this image is open at (rbd_list_children3), in any pool of the cluster the
// client can see; `trash` marks a child that was moved to the trash (it still depends on the snapshot).
Napi::Value Image::ListChildren(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  struct Child {
    std::string pool, ns, image, id;
    bool trash;
  };
  auto children = std::make_shared<std::vector<Child>>();
  return RunAsync(
      info.Env(), "rbd_list_children3",
      [h, children]() -> int {
        size_t max = 16, n = 0;
        std::vector<rbd_linked_image_spec_t> specs;
        int rc = CallWithRoom([&] {
          if (n > max) max = n;  // ERANGE put the room needed in n
          specs.assign(max, rbd_linked_image_spec_t{});
          n = max;
          return rbd_list_children3(h->image, specs.data(), &n);
        });
        if (rc < 0) return rc;
        for (size_t i = 0; i < n; i++) {
          children->push_back(
              {specs[i].pool_name, specs[i].pool_namespace, specs[i].image_name, specs[i].image_id, specs[i].trash});
        }
        rbd_linked_image_spec_list_cleanup(specs.data(), n);
        return 0;
      },
      [children](Napi::Env env) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, children->size());
        for (size_t i = 0; i < children->size(); i++) {
          const Child& c = (*children)[i];
          Napi::Object o = Napi::Object::New(env);
          o.Set("pool", c.pool);
          o.Set("namespace", c.ns);
          o.Set("image", c.image);
          o.Set("id", c.id);
          o.Set("trash", Napi::Boolean::New(env, c.trash));
          arr.Set(static_cast<uint32_t>(i), o);
        }
        return arr;
      });
}

Napi::Value Image::MetaGet(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string key = ArgString(info, 0, "key");
  auto val = std::make_shared<std::string>();
  auto found = std::make_shared<bool>(false);
  return RunAsync(
      info.Env(), "rbd_metadata_get",
      [h, key, val, found]() -> int {
        size_t len = 256;
        int rc = CallWithRoom([&] {
          val->assign(len, '\0');
          return rbd_metadata_get(h->image, key.c_str(), &(*val)[0], &len);
        });
        if (rc == -ENOENT) return 0;
        if (rc < 0) return rc;
        val->resize(std::strlen(val->c_str()));
        *found = true;
        return 0;
      },
      [val, found](Napi::Env env) -> Napi::Value {
        if (!*found) return env.Null();
        return Napi::String::New(env, *val);
      });
}

Napi::Value Image::MetaSet(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string key = ArgString(info, 0, "key");
  std::string value = ArgString(info, 1, "value");
  return RunAsync(info.Env(), "rbd_metadata_set",
                  [h, key, value]() -> int { return rbd_metadata_set(h->image, key.c_str(), value.c_str()); });
}

Napi::Value Image::MetaRemove(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  std::string key = ArgString(info, 0, "key");
  return RunAsync(info.Env(), "rbd_metadata_remove",
                  [h, key]() -> int { return rbd_metadata_remove(h->image, key.c_str()); });
}

Napi::Value Image::MetaList(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  auto kv = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  return RunAsync(
      info.Env(), "rbd_metadata_list",
      [h, kv]() -> int {
        size_t klen = 4096, vlen = 4096;
        std::vector<char> keys, vals;
        int rc = CallWithRoom([&] {
          keys.assign(klen, 0);
          vals.assign(vlen, 0);
          return rbd_metadata_list(h->image, "", 0, keys.data(), &klen, vals.data(), &vlen);
        });
        if (rc < 0) return rc;
        // keys and values: NUL-separated lists of the same length.
        size_t ki = 0, vi = 0;
        while (ki < klen && keys[ki] != '\0') {
          std::string k(&keys[ki]);
          std::string v(vi < vlen ? &vals[vi] : "");
          ki += k.size() + 1;
          vi += v.size() + 1;
          kv->emplace_back(std::move(k), std::move(v));
        }
        return 0;
      },
      [kv](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        for (const auto& p : *kv) o.Set(p.first, p.second);
        return o;
      });
}

Napi::Value Image::Watchers(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  auto out = std::make_shared<std::vector<std::pair<std::string, int64_t>>>();
  return RunAsync(
      info.Env(), "rbd_watchers_list",
      [h, out]() -> int {
        size_t max = 8, n = 0;
        std::vector<rbd_image_watcher_t> w;
        int rc = CallWithRoom([&] {
          if (n > max) max = n;  // ERANGE put the room needed in n
          w.assign(max, rbd_image_watcher_t{});
          n = max;
          return rbd_watchers_list(h->image, w.data(), &n);
        });
        if (rc < 0) return rc;
        for (size_t i = 0; i < n; i++) out->emplace_back(w[i].addr != nullptr ? w[i].addr : "", w[i].id);
        rbd_watchers_list_cleanup(w.data(), n);
        return 0;
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, out->size());
        for (size_t i = 0; i < out->size(); i++) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("addr", (*out)[i].first);
          o.Set("id", Napi::Number::New(env, static_cast<double>((*out)[i].second)));
          a.Set(static_cast<uint32_t>(i), o);
        }
        return a;
      });
}

Napi::Value Image::DiffIterate(const Napi::CallbackInfo& info) {
  auto h = handle(info.Env());
  Napi::Object opts = ArgObject(info, 0, "options");
  DiffParams p;
  p.hasFrom = OptString(opts, "fromSnapshot", &p.fromSnapshot);
  OptU64(opts, "offset", &p.offset);
  p.hasLength = OptU64(opts, "length", &p.length);
  OptBool(opts, "wholeObject", &p.wholeObject);
  OptBool(opts, "includeParent", &p.includeParent);
  uint64_t batch = 0;
  if (OptU64(opts, "batchSize", &batch) && batch > 0) p.batchSize = static_cast<size_t>(batch);
  Napi::Object obj = addon_->diffCtor.New({});
  DiffIterator::Unwrap(obj)->Start(h, p);
  return obj;
}

Napi::Value Image::Close(const Napi::CallbackInfo& info) {
  return RunAsync(info.Env(), "rbd_close", [h = std::move(h_)]() mutable -> int {
    int rc = 0;
    // Close explicitly (reporting its error) when nothing else holds the image; otherwise the last
    // in-flight op closes it.
    if (h && h.use_count() == 1 && h->image != nullptr) rc = CloseImage(*h);
    h.reset();
    return rc;
  });
}

}  // namespace rbdb
