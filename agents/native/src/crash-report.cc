// A native crash leaves its account in the agent's log: when C++ ends the process through
// std::terminate (an exception escaping a noexcept function or a thread — ours, librados' or
// librbd's), the exception and the stack of the thread that threw are written to stderr before the
// standard handler (which prints "terminate called after throwing ..." and aborts) runs. The stack is
// still the thrower's then: nothing was unwound. Symbols are the exported ones (addr2line or gdb with
// Ceph's debug symbols turns the offsets into lines).
//
// A fault (SIGSEGV, SIGBUS, SIGILL, SIGFPE: ours, librados' or librbd's) leaves the same account: the
// signal, the faulting address and the stack of the thread that faulted, then the process dies of that
// signal as it would have. SIGSEGV goes through node::RegisterSignalHandler, which runs our handler only
// after V8's WebAssembly trap handler declined the fault (an out-of-bounds wasm access stays a JS
// RuntimeError, not a report). Writing a report from a crashing process is best effort: backtrace() was
// loaded at install time, so the handler does not allocate. Not covered: a thread's stack overflow (the
// handler has no alternate stack to run on), and a Node built without the trap handler (there Node
// installs ours without SA_SIGINFO; Linux on x86-64 passes the siginfo all the same).
#include "crash-report.h"

#include <execinfo.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>

#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <system_error>

// node.h's (exported by the node binary since Node 10); declared here rather than included, as node.h
// brings V8's headers and its own NAPI_VERSION into an addon built against Node-API alone.
namespace node {
void RegisterSignalHandler(int signal, void (*handler)(int signal, siginfo_t* info, void* ucontext),
                           bool reset_handler);
}  // namespace node

namespace rbdb {

namespace {

std::terminate_handler gPrevious = nullptr;
// The actions SIGBUS, SIGILL and SIGFPE had before ours (SIG_DFL unless someone else set one): what the
// signal does after the report. SIGSEGV's goes through Node, whose own fallback is SIG_DFL.
struct sigaction gPreviousAction[NSIG];

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

const char* SignalName(int sig) noexcept {
  switch (sig) {
    case SIGSEGV:
      return "SIGSEGV";
    case SIGBUS:
      return "SIGBUS";
    case SIGILL:
      return "SIGILL";
    case SIGFPE:
      return "SIGFPE";
    default:
      return "a fatal signal";
  }
}

void OnFatalSignal(int sig, siginfo_t* info, void*) {
  char line[256];
  std::snprintf(line, sizeof line, "rbdbackup native: %s (address %p) on thread %ld; its stack:\n", SignalName(sig),
                info != nullptr ? info->si_addr : nullptr, static_cast<long>(::syscall(SYS_gettid)));
  Write(line);
  void* frames[64];
  int n = ::backtrace(frames, 64);
  ::backtrace_symbols_fd(frames, n, 2);
  // Then what the signal did before us (for SIGSEGV, and unless another handler was set: the default
  // action, the process dies of it), raised again — delivered once this returns.
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  ::sigaction(sig, sig == SIGSEGV ? &sa : &gPreviousAction[sig], nullptr);
  ::raise(sig);
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
      node::RegisterSignalHandler(SIGSEGV, OnFatalSignal, false);
      for (int sig : {SIGBUS, SIGILL, SIGFPE}) {
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = OnFatalSignal;
        sa.sa_flags = SA_SIGINFO;
        sigfillset(&sa.sa_mask);
        ::sigaction(sig, &sa, &gPreviousAction[sig]);
      }
    });
  } catch (...) {
    // No report then; the standard handler still prints the exception.
  }
}

}  // namespace rbdb
