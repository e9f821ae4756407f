// Native handles (rados_t, rados_ioctx_t, rbd_image_t) and the thread their final close runs on.
//
// Each handle lives in a small RAII struct held by std::shared_ptr, created by NewHandle<T>(). A child
// holds its parent (image -> ioctx -> cluster), and every piece of in-flight work holds the handle it
// uses, so a handle is closed only when nothing can touch it any more, child before parent.
//
// The last reference can be dropped anywhere: an ObjectWrap finalizer when JS lets go of a wrapper, an
// aio baton or AsyncWorker destroyed on the JS thread... and rbd_close / rados_ioctx_destroy /
// rados_shutdown can block for seconds. So the shared_ptr's deleter (Dispose) closes inline only on a
// thread that may block — libuv's pool running our work, the diff producer, the closer — and otherwise
// hands the handle to the closer: one detached thread that closes handles in arrival order (a parent
// arrives only after its last child closed, so child-before-parent holds). An explicit close() runs on
// the pool and so still resolves after the close happened. If the closer cannot take a handle (no
// thread, no memory) it is closed inline — blocking, but never leaked — and counted as a fallback.
// At environment teardown the addon waits, bounded, for the closer to drain (DrainCloser).
#pragma once

#include <rados/librados.h>
#include <rbd/librbd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace rbdb {

struct Handle {
  virtual ~Handle() = default;
  Handle* nextToClose = nullptr;  // the closer's queue links through the handles: queueing never allocates
};

struct ClusterHandle final : Handle {
  rados_t cluster = nullptr;
  ~ClusterHandle() override;
};

struct IoCtxHandle final : Handle {
  std::shared_ptr<ClusterHandle> cluster;
  rados_ioctx_t io = nullptr;
  ~IoCtxHandle() override;
};

struct ImageHandle final : Handle {
  std::shared_ptr<IoCtxHandle> ioctx;
  rbd_image_t image = nullptr;
  ~ImageHandle() override;
};

// The deleter of every handle: closes it here when this thread may block, else on the closer thread.
void Dispose(Handle* h) noexcept;

// The only way to make a handle (so every one gets Dispose as its deleter).
template <typename T>
std::shared_ptr<T> NewHandle() {
  return std::shared_ptr<T>(new T(), &Dispose);
}

// Marks the calling thread as one where a close may block (libuv's pool in Execute, the diff thread).
void MayBlockHere() noexcept;

// Waits until the closer has closed everything handed to it, at most `timeout`; false on timeout.
bool DrainCloser(std::chrono::milliseconds timeout) noexcept;

// Where final closes ran since the process started (exposed to tests).
struct HandleStats {
  uint64_t worker;    // inline on a thread that may block (explicit close(), end of a diff)
  uint64_t closer;    // on the closer thread (the last reference was dropped on a JS thread)
  uint64_t fallback;  // inline on a thread that may not block, because the closer could not take it
  size_t queued;      // waiting for the closer now
};
HandleStats GetHandleStats() noexcept;

}  // namespace rbdb
