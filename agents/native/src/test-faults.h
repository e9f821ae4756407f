// Test-only fault injection. When RBDBACKUP_NATIVE_TEST_FAULTS=1 at load time, the module exports
// `testing`: arm(point, kind[, count]) makes the next `count` passes through a point throw the C++
// exception a real failure would (kind: "system_error" = EAGAIN as from std::thread, "bad_alloc",
// "runtime_error", "unknown" = a non-std exception), so tests can show each becomes a JS error and the
// process lives on; disarm(); handleStats() reports where final closes ran (handles.h) and how many
// image closes went ahead after their finish-strand wait timed out; holdFinishStrand(ioctx) parks a
// handler on librados' finish strand until releaseFinishStrand() (finishStrandHeld() while it runs),
// and setCloseBarrierTimeout(ms) shortens an image close's wait for that strand;
// terminateOnThread() ends the process through std::terminate on another thread, segfaultOnThread()
// through a null read on another thread (both reported by crash-report.cc). Points:
//   method  - inside a method or module function, before it runs (GuardedMethod/GuardedFunction)
//   execute - in AsyncWorker::Execute on libuv's pool, before the librados/librbd call
//   task    - in a thread-safe-function task on the JS thread (aio completion, diff batch), before it settles
//   thread  - where the diff iterator starts its producer thread
// Without the variable FaultPoint is one relaxed atomic load and `testing` does not exist.
#pragma once

#include <napi.h>

namespace rbdb {

enum class Fault { kMethod, kExecute, kTask, kThread, kCount };

// Throws the armed exception when `where` is armed; otherwise nothing.
void FaultPoint(Fault where);

// Adds `testing` to the module's exports when RBDBACKUP_NATIVE_TEST_FAULTS=1.
void InitTestFaults(Napi::Env env, Napi::Object exports);

}  // namespace rbdb
