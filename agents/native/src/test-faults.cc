#include "test-faults.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include "handles.h"
#include "io-ctx.h"

namespace rbdb {

namespace {

enum class Kind { kSystemError, kBadAlloc, kRuntimeError, kUnknown };

std::atomic<bool> gEnabled{false};
std::atomic<int> gArmed[static_cast<int>(Fault::kCount)];
std::atomic<int> gKind[static_cast<int>(Fault::kCount)];

[[noreturn]] void Raise(Kind kind) {
  switch (kind) {
    case Kind::kSystemError:
      // What std::thread's constructor throws when the system has no thread to give.
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again));
    case Kind::kBadAlloc:
      throw std::bad_alloc();
    case Kind::kRuntimeError:
      throw std::runtime_error("injected test fault");
    case Kind::kUnknown:
      break;
  }
  throw 42;  // not a std::exception
}

Fault PointNamed(Napi::Env env, const std::string& s) {
  if (s == "method") return Fault::kMethod;
  if (s == "execute") return Fault::kExecute;
  if (s == "task") return Fault::kTask;
  if (s == "thread") return Fault::kThread;
  throw Napi::TypeError::New(env, "unknown fault point: " + s);
}

Kind KindNamed(Napi::Env env, const std::string& s) {
  if (s == "system_error") return Kind::kSystemError;
  if (s == "bad_alloc") return Kind::kBadAlloc;
  if (s == "runtime_error") return Kind::kRuntimeError;
  if (s == "unknown") return Kind::kUnknown;
  throw Napi::TypeError::New(env, "unknown fault kind: " + s);
}

// arm(point, kind, count = 1)
Napi::Value Arm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) {
    throw Napi::TypeError::New(env, "arm(point, kind[, count])");
  }
  int i = static_cast<int>(PointNamed(env, info[0].As<Napi::String>().Utf8Value()));
  Kind kind = KindNamed(env, info[1].As<Napi::String>().Utf8Value());
  int count = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : 1;
  gKind[i].store(static_cast<int>(kind));
  gArmed[i].store(count);
  return env.Undefined();
}

Napi::Value Disarm(const Napi::CallbackInfo& info) {
  for (auto& a : gArmed) a.store(0);
  return info.Env().Undefined();
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HandleStats s = GetHandleStats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("worker", Napi::Number::New(env, static_cast<double>(s.worker)));
  o.Set("closer", Napi::Number::New(env, static_cast<double>(s.closer)));
  o.Set("fallback", Napi::Number::New(env, static_cast<double>(s.fallback)));
  o.Set("queued", Napi::Number::New(env, static_cast<double>(s.queued)));
  o.Set("barrierTimeouts", Napi::Number::New(env, static_cast<double>(s.barrierTimeouts)));
  return o;
}

// holdFinishStrand(ioctx): a completion handler on librados' finish strand of ioctx's cluster that
// stays there (as a librbd handler preempted on that strand would) until releaseFinishStrand(), at
// most 60 s. finishStrandHeld() is true while it runs.
struct StrandHold {
  std::mutex m;
  std::condition_variable cv;
  bool running = false;
  bool released = false;
};
StrandHold gHold;

void HoldOnStrand(rados_completion_t c, void*) noexcept {
  try {
    std::unique_lock<std::mutex> lock(gHold.m);
    gHold.running = true;
    gHold.cv.wait_for(lock, std::chrono::seconds(60), [] { return gHold.released; });
    gHold.running = false;
  } catch (...) {
  }
  (void)c;  // the hook never releases its reference: a test-only leak of one completion per hold
}

Napi::Value HoldFinishStrand(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().CheckTypeTag(&kIoCtxTag)) {
    throw Napi::TypeError::New(env, "holdFinishStrand(ioctx)");
  }
  std::shared_ptr<IoCtxHandle> h = IoCtx::Unwrap(info[0].As<Napi::Object>())->handle(env);
  {
    std::lock_guard<std::mutex> lock(gHold.m);
    gHold.released = false;
  }
  rados_completion_t c = nullptr;
  int rc = rados_aio_create_completion2(nullptr, HoldOnStrand, &c);
  if (rc == 0) rc = rados_aio_flush_async(h->io, c);
  if (rc != 0) throw Napi::Error::New(env, "holdFinishStrand: " + std::to_string(rc));
  return env.Undefined();
}

Napi::Value FinishStrandHeld(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(gHold.m);
  return Napi::Boolean::New(info.Env(), gHold.running);
}

Napi::Value ReleaseFinishStrand(const Napi::CallbackInfo& info) {
  {
    std::lock_guard<std::mutex> lock(gHold.m);
    gHold.released = true;
  }
  gHold.cv.notify_all();
  return info.Env().Undefined();
}

// setCloseBarrierTimeout(ms): how long an image close waits for the finish strand (handles.h).
Napi::Value SetBarrierTimeout(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "setCloseBarrierTimeout(ms)");
  SetCloseBarrierTimeout(std::chrono::milliseconds(info[0].As<Napi::Number>().Int64Value()));
  return info.Env().Undefined();
}

// terminateOnThread(): a thread whose exception nobody catches, as a crash inside librbd would be
// (std::terminate; crash-report.cc writes the stack). The process ends; the call never returns.
Napi::Value TerminateOnThread(const Napi::CallbackInfo& info) {
  std::thread([] { throw std::system_error(std::make_error_code(std::errc::invalid_argument)); }).join();
  return info.Env().Undefined();
}

// Null, but the compiler cannot know it (a read through a literal null may compile to a trap instead).
int* volatile gNowhere = nullptr;

// segfaultOnThread(): a thread that reads through a null pointer, as a bug in native code would
// (SIGSEGV; crash-report.cc writes the stack). The process ends; the call never returns.
Napi::Value SegfaultOnThread(const Napi::CallbackInfo& info) {
  std::thread([] {
    volatile int x = *gNowhere;
    (void)x;
  }).join();
  return info.Env().Undefined();
}

}  // namespace

void FaultPoint(Fault where) {
  if (!gEnabled.load(std::memory_order_relaxed)) return;
  std::atomic<int>& armed = gArmed[static_cast<int>(where)];
  int n = armed.load();
  while (n > 0 && !armed.compare_exchange_weak(n, n - 1)) {
  }
  if (n > 0) Raise(static_cast<Kind>(gKind[static_cast<int>(where)].load()));
}

void InitTestFaults(Napi::Env env, Napi::Object exports) {
  const char* v = std::getenv("RBDBACKUP_NATIVE_TEST_FAULTS");
  if (v == nullptr || std::strcmp(v, "1") != 0) return;
  gEnabled.store(true);
  Napi::Object t = Napi::Object::New(env);
  t.Set("arm", Napi::Function::New(env, Arm, "arm"));
  t.Set("disarm", Napi::Function::New(env, Disarm, "disarm"));
  t.Set("handleStats", Napi::Function::New(env, Stats, "handleStats"));
  t.Set("holdFinishStrand", Napi::Function::New(env, HoldFinishStrand, "holdFinishStrand"));
  t.Set("finishStrandHeld", Napi::Function::New(env, FinishStrandHeld, "finishStrandHeld"));
  t.Set("releaseFinishStrand", Napi::Function::New(env, ReleaseFinishStrand, "releaseFinishStrand"));
  t.Set("setCloseBarrierTimeout", Napi::Function::New(env, SetBarrierTimeout, "setCloseBarrierTimeout"));
  t.Set("terminateOnThread", Napi::Function::New(env, TerminateOnThread, "terminateOnThread"));
  t.Set("segfaultOnThread", Napi::Function::New(env, SegfaultOnThread, "segfaultOnThread"));
  exports.Set("testing", t);
}

}  // namespace rbdb
