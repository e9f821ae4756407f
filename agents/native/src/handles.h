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

// Closes the image (rbd_close), after librados' finish strand has run every handler it held. Ceph 16's
// librbd ends a read-write open (and a snapshot open of an image with an object map) inside a librados
// completion handler on that strand: ImageState::complete_action_unlock wakes the opener, then relocks
// the image's state. An opener that read and closed at once could have librbd free that state before
// the relock. Diagnosed (from the thrower's frames) as the rare abort with std::system_error(EINVAL) on
// an io_context_pool thread, in the agents and in leak.test.js. The barrier is a librados aio flush with
// nothing to flush, whose completion librados defers onto the same strand; it waits at most 10 s, then
// closes regardless (counted in HandleStats::barrierTimeouts). Not covered: opens and closes librbd makes
// inside one call of its own (rbd_remove, rbd_clone3). Returns rbd_close's result; sets h.image to null.
int CloseImage(ImageHandle& h) noexcept;

// Test-only (test-faults.cc): CloseImage's wait on the strand, 10 s unless set.
void SetCloseBarrierTimeout(std::chrono::milliseconds timeout) noexcept;

// The barrier CloseImage uses: true once a completion deferred onto `io`'s cluster's finish strand ran
// (so every handler queued there before it had returned), false on timeout or failure to queue it.
bool FinishStrandBarrier(rados_ioctx_t io, std::chrono::milliseconds timeout) noexcept;

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
  uint64_t barrierTimeouts;  // image closes that went ahead after CloseImage's strand wait timed out
};
HandleStats GetHandleStats() noexcept;

}  // namespace rbdb
