// A native crash leaves its account in the agent's log: when C++ ends the process through
// std::terminate (an exception escaping a noexcept function or a thread — ours, librados' or
// librbd's), the exception and the stack of the thread that threw are written to stderr before the
// standard handler (which prints "terminate called after throwing ..." and aborts) runs. The stack is
// still the thrower's then: nothing was unwound. Symbols are the exported ones (addr2line or gdb with
// Ceph's debug symbols turns the offsets into lines).
#include "crash-report.h"

#include <execinfo.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <system_error>

namespace rbdb {

namespace {

std::terminate_handler gPrevious = nullptr;

void Write(const char* s) noexcept {
  size_t n = std::strlen(s);
  while (n > 0) {
    ssize_t w = ::write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

[[noreturn]] void OnTerminate() noexcept {
  char line[512];
  const char* what = "no exception in flight";
  char detail[384] = "";
  if (std::exception_ptr e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::system_error& x) {
      std::snprintf(detail, sizeof detail, "std::system_error (%s %d): %s", x.code().category().name(),
                    x.code().value(), x.what());
      what = detail;
    } catch (const std::exception& x) {
      std::snprintf(detail, sizeof detail, "std::exception: %s", x.what());
      what = detail;
    } catch (...) {
      what = "an exception of a type not derived from std::exception";
    }
  }
  std::snprintf(line, sizeof line, "rbdbackup native: std::terminate on thread %ld: %s; the thrower's stack:\n",
                static_cast<long>(::syscall(SYS_gettid)), what);
  Write(line);
  void* frames[64];
  int n = ::backtrace(frames, 64);
  ::backtrace_symbols_fd(frames, n, 2);
  if (gPrevious != nullptr && gPrevious != OnTerminate) gPrevious();
  std::abort();
}

}  // namespace

void InstallCrashReport() noexcept {
  static std::once_flag once;
  try {
    std::call_once(once, [] {
      // backtrace() loads libgcc's unwinder on first use: done now, not inside a dying process.
      void* warm[1];
      ::backtrace(warm, 1);
      gPrevious = std::set_terminate(OnTerminate);
    });
  } catch (...) {
    // No report then; the standard handler still prints the exception.
  }
}

}  // namespace rbdb
