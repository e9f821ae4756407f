#pragma once

namespace rbdb {

// Installs (once per process) a std::terminate handler that writes the exception and the throwing
// thread's stack to stderr, then runs the previous handler. See crash-report.cc.
void InstallCrashReport() noexcept;

}  // namespace rbdb
