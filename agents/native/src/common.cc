#include "common.h"

#include <chrono>
#include <cmath>
#include <cstring>

namespace rbdb {

const napi_type_tag kClusterTag = {0x7a1c3e5b9d2f4a61ULL, 0x8e0b6c4d2a1f3e59ULL};
const napi_type_tag kIoCtxTag = {0x3b5d7f9e1c2a4b6dULL, 0x9f8e7d6c5b4a3921ULL};
const napi_type_tag kImageTag = {0x5c7e9a1b3d5f7a9cULL, 0x1e2d3c4b5a697887ULL};
const napi_type_tag kDiffTag = {0x6d8f0b2c4e6a8c0eULL, 0x2f3e4d5c6b7a8990ULL};

// Entry point from the thread-safe function: nothing thrown here may reach node-addon-api (which would
// make it an uncaught JS exception), so a failure rejects the task's promise instead. Deleting the task
// may drop a handle's last reference: handles.h moves that close off this thread.
void CallTask(Napi::Env env, Napi::Function, void*, Task* task) {
  if (task == nullptr) return;
  if (env == nullptr) return;  // teardown: leak on purpose (see Poster)
  std::unique_ptr<Task> owned(task);
  try {
    Addon::Get(env)->Unhold();
    FaultPoint(Fault::kTask);
    task->Run(env);
  } catch (...) {
    task->Fail(env, std::current_exception());
  }
}

void Poster::Post(Task* task) noexcept {
  try {
    std::lock_guard<std::mutex> lock(m_);
    if (!alive_) return;  // teardown: leak on purpose
    tsfn.NonBlockingCall(task);
  } catch (...) {
    // Only a failing mutex could land here; the task is leaked (its promise stays pending).
  }
}

void Poster::Dead() {
  std::lock_guard<std::mutex> lock(m_);
  alive_ = false;
}

namespace {
void PosterFinalize(Napi::Env, std::shared_ptr<Poster>* poster, void*) {
  (*poster)->Dead();
  delete poster;
}
}  // namespace

Addon::Addon(Napi::Env env) : env_(env), poster_(std::make_shared<Poster>()) {
  // Unlimited queue: Post() never blocks a librbd callback thread.
  poster_->tsfn = TaskTsfn::New(env, "rbdbackup-native", 0, 1, static_cast<void*>(nullptr),
                                PosterFinalize, new std::shared_ptr<Poster>(poster_));
  poster_->tsfn.Unref(env);
}

// Environment teardown (the instance data's finalizer): close what JS did not close, children before
// parents (the shared_ptr chain keeps that order too), then wait for the closer so that nothing is left
// open when the process exits. The wait is bounded: a cluster that stopped answering must not hold the
// exit forever (its watches then time out on the cluster side, as after a crash).
Addon::~Addon() {
  for (int level = 0; level <= 3; level++) {
    for (Releasable* r : live_) {
      if (r->ReleaseLevel() == level) r->ReleaseHandle();
    }
  }
  live_.clear();
  DrainCloser(std::chrono::seconds(30));
}

void Addon::Hold() {
  if (held_++ == 0) poster_->tsfn.Ref(env_);
}

void Addon::Unhold() {
  if (held_ > 0 && --held_ == 0) poster_->tsfn.Unref(env_);
}

Napi::Error CephError(Napi::Env env, int rc, const std::string& op) {
  int e = rc < 0 ? -rc : rc;
  char buf[256];
  const char* text = strerror_r(e, buf, sizeof buf);
  Napi::Error err = Napi::Error::New(env, op + ": " + text);
  err.Set("errno", Napi::Number::New(env, e));
  err.Set("op", Napi::String::New(env, op));
  return err;
}

Napi::Error ClosedError(Napi::Env env, const char* what) {
  Napi::Error err = Napi::Error::New(env, std::string(what) + " is closed");
  err.Set("code", Napi::String::New(env, "ERR_RBDBACKUP_CLOSED"));
  return err;
}

namespace {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, std::shared_ptr<std::string> op, std::function<int()> exec,
                std::function<Napi::Value(Napi::Env)> done)
      : Napi::AsyncWorker(env, "rbdbackup"),
        deferred_(Napi::Promise::Deferred::New(env)),
        op_(std::move(op)),
        exec_(std::move(exec)),
        done_(std::move(done)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  // libuv's pool. Any exception becomes a failed baton (error_), settled in OnOK.
  void Execute() override {
    MayBlockHere();
    try {
      FaultPoint(Fault::kExecute);
      rc_ = exec_();
    } catch (...) {
      error_ = std::current_exception();
    }
    // Let go of what exec captured here, off the JS thread: a last handle reference closes right here.
    exec_ = nullptr;
  }

  void OnOK() override {
    Napi::Env env = Env();
    try {
      Napi::HandleScope scope(env);
      if (error_) {
        deferred_.Reject(NativeError(env, error_, *op_).Value());
      } else if (rc_ < 0) {
        deferred_.Reject(CephError(env, rc_, *op_).Value());
      } else {
        deferred_.Resolve(done_ ? done_(env) : env.Undefined());
      }
    } catch (...) {
      RejectWith(env, deferred_, std::current_exception(), *op_);
    }
  }

  // Only reached if node-addon-api itself recorded an error (Execute catches everything).
  void OnError(const Napi::Error& e) override {
    try {
      deferred_.Reject(e.Value());
    } catch (...) {
      RejectWith(Env(), deferred_, std::current_exception(), *op_);
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<std::string> op_;
  std::function<int()> exec_;
  std::function<Napi::Value(Napi::Env)> done_;
  int rc_ = 0;
  std::exception_ptr error_;
};

}  // namespace

Napi::Value RunAsync(Napi::Env env, std::string op, std::function<int()> exec,
                     std::function<Napi::Value(Napi::Env)> done) {
  return RunAsync(env, std::make_shared<std::string>(std::move(op)), std::move(exec), std::move(done));
}

Napi::Value RunAsync(Napi::Env env, std::shared_ptr<std::string> op, std::function<int()> exec,
                     std::function<Napi::Value(Napi::Env)> done) {
  auto w = std::make_unique<PromiseWorker>(env, std::move(op), std::move(exec), std::move(done));
  Napi::Promise p = w->Promise();
  w->Queue();
  w.release();  // queued: the worker deletes itself once complete
  return p;
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a string");
  }
  return info[i].As<Napi::String>().Utf8Value();
}

static bool ToU64(Napi::Value v, uint64_t* out) {
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d) return false;
    *out = static_cast<uint64_t>(d);
    return true;
  }
  if (v.IsBigInt()) {
    bool lossless = false;
    *out = v.As<Napi::BigInt>().Uint64Value(&lossless);
    return lossless;
  }
  return false;
}

uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* name) {
  uint64_t v = 0;
  if (info.Length() <= i || !ToU64(info[i], &v)) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a non-negative integer");
  }
  return v;
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsBoolean()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a boolean");
  }
  return info[i].As<Napi::Boolean>().Value();
}

Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsBuffer()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer");
  }
  return info[i].As<Napi::Buffer<uint8_t>>();
}

Napi::Object ArgObject(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsObject()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an object");
  }
  return info[i].As<Napi::Object>();
}

bool OptString(Napi::Object o, const char* key, std::string* out) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return false;
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a string");
  *out = v.As<Napi::String>().Utf8Value();
  return true;
}

bool OptU64(Napi::Object o, const char* key, uint64_t* out) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return false;
  if (!ToU64(v, out)) {
    throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a non-negative integer");
  }
  return true;
}

bool OptBool(Napi::Object o, const char* key, bool* out) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return false;
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a boolean");
  *out = v.As<Napi::Boolean>().Value();
  return true;
}

}  // namespace rbdb
