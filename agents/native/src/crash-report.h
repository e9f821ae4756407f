#pragma once

namespace rbdb {

// Installs (once per process) a std::terminate handler that writes the exception and the throwing
// thread's stack to stderr, then runs the previous handler; and handlers of SIGSEGV, SIGBUS, SIGILL and
// SIGFPE that write the signal, the address and the faulting thread's stack, then let it kill the
// process. See crash-report.cc.
void InstallCrashReport() noexcept;

}  // namespace rbdb
