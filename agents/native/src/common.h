// Shared machinery of the rbdbackup native addon.
//
// Ownership: every librados/librbd handle lives in a small RAII struct (handles.h) held by
// std::shared_ptr. A child holds its parent (image -> ioctx -> cluster), and every piece of in-flight
// work (an AsyncWorker, an aio baton, a diff thread) holds the handle it uses, so a handle is really
// closed only when nothing can touch it any more, child before parent, and never on a JS thread.
//
// Threads: blocking calls run in PromiseWorker::Execute on libuv's pool; librbd aio completions and the
// diff producer thread hand results back to the JS thread through the addon's one thread-safe function
// (Addon::Post). Nothing but the JS thread touches JS values.
//
// Errors: a negative errno becomes a JS Error with `errno` (positive) and `op`; the TypeScript facade
// names the code (ENOENT...) and re-throws with the caller's stack. A C++ exception never escapes an
// entry point (boundary.h).
#pragma once

#include <napi.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "boundary.h"
#include "handles.h"

namespace rbdb {

// Work finished on another thread, to be completed on the JS thread; each answers one Addon::Hold().
// At teardown the task is leaked instead (see Poster).
struct Task {
  virtual ~Task() = default;
  // JS thread: settle the promise. May throw: CallTask then calls Fail instead.
  virtual void Run(Napi::Env env) = 0;
  // JS thread, after Run threw (or before it, when it cannot run): reject the promise. Never throws.
  virtual void Fail(Napi::Env env, std::exception_ptr error) noexcept = 0;
};

// A JS wrapper that owns a handle and must let go of it when the environment goes away.
class Releasable {
 public:
  virtual ~Releasable() = default;
  // Drop the native handle (closing it if this was the last holder). Idempotent.
  virtual void ReleaseHandle() = 0;
  // Lower levels are released first at teardown: diff iterators, images, I/O contexts, clusters.
  virtual int ReleaseLevel() const = 0;
};

void CallTask(Napi::Env env, Napi::Function, void*, Task* task);
using TaskTsfn = Napi::TypedThreadSafeFunction<void, Task, CallTask>;

// The one way back to the JS thread, shared with librbd callback threads and diff threads. Once the
// environment tears the thread-safe function down, Post() leaks the task instead of touching freed
// memory (the process is exiting; nobody awaits the result).
class Poster {
 public:
  void Post(Task* task) noexcept;
  void Dead();  // called by the thread-safe function's finalizer
  TaskTsfn tsfn;

 private:
  std::mutex m_;
  bool alive_ = true;
};

// Per-environment state (worker threads, Node.js workers each get their own).
class Addon {
 public:
  explicit Addon(Napi::Env env);
  ~Addon();

  // JS thread: note that a result will come back through Post(); keeps the event loop alive meanwhile.
  void Hold();
  // JS thread: the awaited result arrived.
  void Unhold();
  // Any thread: complete `task` on the JS thread.
  void Post(Task* task) noexcept { poster_->Post(task); }
  // For code that outlives a call into the addon (aio completions, diff threads).
  std::shared_ptr<Poster> poster() const { return poster_; }

  void Register(Releasable* r) { live_.insert(r); }
  void Unregister(Releasable* r) { live_.erase(r); }

  Napi::FunctionReference clusterCtor;
  Napi::FunctionReference ioCtxCtor;
  Napi::FunctionReference imageCtor;
  Napi::FunctionReference diffCtor;

  static Addon* Get(Napi::Env env) { return env.GetInstanceData<Addon>(); }

 private:
  Napi::Env env_;
  std::shared_ptr<Poster> poster_;
  int held_ = 0;
  std::set<Releasable*> live_;
};

// A JS Error for a failed librados/librbd call: message "<op>: <strerror>", errno (positive), op.
Napi::Error CephError(Napi::Env env, int rc, const std::string& op);
// A JS Error for a call on a closed handle; code ERR_RBDBACKUP_CLOSED.
Napi::Error ClosedError(Napi::Env env, const char* what);

// Runs `exec` on libuv's pool and settles a promise on the JS thread: rejected with CephError(op) when
// exec returns a negative errno, else resolved with done(env) (undefined when done is empty).
// exec must not touch JS values.
Napi::Value RunAsync(Napi::Env env, std::string op, std::function<int()> exec,
                     std::function<Napi::Value(Napi::Env)> done = nullptr);
// The same, for work made of several steps: exec sets *op to the step it is on, so the error names it.
Napi::Value RunAsync(Napi::Env env, std::shared_ptr<std::string> op, std::function<int()> exec,
                     std::function<Napi::Value(Napi::Env)> done);

// librbd's listing calls answer -ERANGE, with the room needed now, when the caller's buffer is too small.
// CallWithRoom calls `call` (which sizes its buffer from that answer) again while it says so, kRoomAttempts
// times at most: a listing that grows between every two calls ends in -ERANGE, an error the caller can
// retry, instead of a pool thread spinning for as long as it grows.
constexpr int kRoomAttempts = 8;
template <typename Call>
int CallWithRoom(Call call) {
  int rc = -ERANGE;
  for (int attempt = 0; attempt < kRoomAttempts && rc == -ERANGE; attempt++) rc = call();
  return rc;
}

// Argument helpers: re-check only what could crash C++ (the facade validates properly first).
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name);
uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* name);
bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name);
Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* name);
Napi::Object ArgObject(const Napi::CallbackInfo& info, size_t i, const char* name);
// Optional fields of an options object.
bool OptString(Napi::Object o, const char* key, std::string* out);
bool OptU64(Napi::Object o, const char* key, uint64_t* out);
bool OptBool(Napi::Object o, const char* key, bool* out);

// Type tags: an object passed back from JS is unwrapped only if it carries the expected tag.
extern const napi_type_tag kClusterTag;
extern const napi_type_tag kIoCtxTag;
extern const napi_type_tag kImageTag;
extern const napi_type_tag kDiffTag;

}  // namespace rbdb
