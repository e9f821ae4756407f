// throw-trace: an LD_PRELOAD library for the test run (test/run.sh builds it and preloads it into
// `node --test`, so the test processes and every daemon and tool they start inherit it). It interposes
// __cxa_throw and, when a std::system_error is thrown on a thread not named "node" (that is, on one of
// librados/librbd's own threads: io_context_pool, msgr-worker-N, ...), writes the exception and the
// stack *at the throw* to stderr, then throws as usual. Why: an exception leaving such a thread ends in
// std::terminate after the stack was unwound, so the addon's crash report (crash-report.cc) sees only
// the thread's entry; this sees the thrower. Nothing else changes: every throw goes on to libstdc++.
#include <dlfcn.h>
#include <execinfo.h>
#include <pthread.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <typeinfo>

namespace {

using ThrowFn = void (*)(void*, std::type_info*, void (*)(void*));

ThrowFn RealThrow() {
  static ThrowFn real = reinterpret_cast<ThrowFn>(dlsym(RTLD_NEXT, "__cxa_throw"));
  return real;
}

void Report(void* obj) {
  char name[32] = "?";
  pthread_getname_np(pthread_self(), name, sizeof name);
  if (std::strcmp(name, "node") == 0) return;  // Node's own threads: the addon reports those itself
  const auto* e = static_cast<const std::system_error*>(obj);
  char line[512];
  int n = std::snprintf(line, sizeof line, "rbdbackup throw-trace: std::system_error (%s %d): %s on thread %s; stack:\n",
                        e->code().category().name(), e->code().value(), e->what(), name);
  if (n > 0) (void)!write(2, line, static_cast<size_t>(n) < sizeof line ? n : sizeof line - 1);
  void* frames[48];
  int k = backtrace(frames, 48);
  backtrace_symbols_fd(frames, k, 2);
}

}  // namespace

extern "C" [[noreturn]] void __cxa_throw(void* obj, std::type_info* type, void (*dest)(void*)) {
  if (type != nullptr && std::strstr(type->name(), "system_error") != nullptr) Report(obj);
  ThrowFn real = RealThrow();
  if (real == nullptr) {
    static const char msg[] = "rbdbackup throw-trace: __cxa_throw not found\n";
    (void)!write(2, msg, sizeof msg - 1);
    std::abort();
  }
  real(obj, type, dest);
  __builtin_unreachable();
}
