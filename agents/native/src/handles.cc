#include "handles.h"

#include <atomic>
#include <condition_variable>
#include <new>
#include <mutex>
#include <thread>

namespace rbdb {

ClusterHandle::~ClusterHandle() {
  if (cluster != nullptr) rados_shutdown(cluster);
}

IoCtxHandle::~IoCtxHandle() {
  if (io != nullptr) rados_ioctx_destroy(io);
}  // then `cluster` lets go of the parent (Dispose again, on this same thread)

ImageHandle::~ImageHandle() {
  if (image != nullptr) CloseImage(*this);
}

namespace {

std::atomic<int64_t> gBarrierTimeoutMs{10'000};  // CloseImage's wait (test hooks may shorten it)
std::atomic<uint64_t> gBarrierTimeouts{0};

// The barrier's state, shared by the waiting thread and librados' callback (either may finish last).
struct StrandBarrier {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
};

void OnStrandBarrier(rados_completion_t, void* arg) noexcept {
  auto* held = static_cast<std::shared_ptr<StrandBarrier>*>(arg);
  try {
    std::lock_guard<std::mutex> lock((*held)->m);
    (*held)->done = true;
  } catch (...) {
  }
  (*held)->cv.notify_all();
  delete held;
}

}  // namespace

bool FinishStrandBarrier(rados_ioctx_t io, std::chrono::milliseconds timeout) noexcept {
  try {
    auto b = std::make_shared<StrandBarrier>();
    auto* arg = new std::shared_ptr<StrandBarrier>(b);
    rados_completion_t c = nullptr;
    if (rados_aio_create_completion2(arg, OnStrandBarrier, &c) != 0) {
      delete arg;
      return false;
    }
    // With no librados aio writes pending on `io` (the addon issues none), librados defers the
    // completion straight onto the finish strand, where it runs after every handler already there.
    if (rados_aio_flush_async(io, c) != 0) {
      rados_aio_release(c);
      delete arg;
      return false;
    }
    bool done;
    {
      std::unique_lock<std::mutex> lock(b->m);
      done = b->cv.wait_for(lock, timeout, [&] { return b->done; });
    }
    // Released even on a timeout: the handler librados deferred holds its own reference to the
    // completion, and its callback frees `arg` whenever it runs.
    rados_aio_release(c);
    return done;
  } catch (...) {
    return false;  // no memory: close without the barrier
  }
}

void SetCloseBarrierTimeout(std::chrono::milliseconds timeout) noexcept { gBarrierTimeoutMs = timeout.count(); }

int CloseImage(ImageHandle& h) noexcept {
  if (h.image == nullptr) return 0;
  if (h.ioctx && h.ioctx->io != nullptr &&
      !FinishStrandBarrier(h.ioctx->io, std::chrono::milliseconds(gBarrierTimeoutMs.load()))) {
    gBarrierTimeouts++;
  }
  int rc = rbd_close(h.image);
  h.image = nullptr;
  return rc;
}

namespace {

enum class Role { kUnknown, kWorker, kCloser };
thread_local Role tRole = Role::kUnknown;

std::atomic<uint64_t> gWorker{0};
std::atomic<uint64_t> gCloser{0};
std::atomic<uint64_t> gFallback{0};

class Closer {
 public:
  // Queues `h` for the closer thread (started on first use); false when it cannot (then close inline).
  bool Take(Handle* h) noexcept {
    try {
      std::lock_guard<std::mutex> lock(m_);
      if (!started_) {
        std::thread(&Closer::Run, this).detach();
        started_ = true;
      }
      h->nextToClose = nullptr;
      (tail_ != nullptr ? tail_->nextToClose : head_) = h;
      tail_ = h;
      queued_++;
    } catch (...) {
      return false;  // std::system_error: no thread (a later call tries again)
    }
    work_.notify_one();
    return true;
  }

  bool Drain(std::chrono::milliseconds timeout) noexcept {
    try {
      std::unique_lock<std::mutex> lock(m_);
      return idle_.wait_for(lock, timeout, [&] { return queued_ == 0; });
    } catch (...) {
      return false;
    }
  }

  size_t Queued() noexcept {
    try {
      std::lock_guard<std::mutex> lock(m_);
      return queued_;
    } catch (...) {
      return 0;
    }
  }

 private:
  void Run() noexcept {
    tRole = Role::kCloser;
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      work_.wait(lock, [&] { return head_ != nullptr; });
      Handle* h = head_;
      head_ = h->nextToClose;
      if (head_ == nullptr) tail_ = nullptr;
      lock.unlock();
      delete h;  // closes; a parent this releases is closed right here too (Dispose sees kCloser)
      gCloser++;
      lock.lock();
      if (--queued_ == 0) idle_.notify_all();
    }
  }

  std::mutex m_;
  std::condition_variable work_;
  std::condition_variable idle_;
  Handle* head_ = nullptr;
  Handle* tail_ = nullptr;
  size_t queued_ = 0;  // in the queue or being closed
  bool started_ = false;
};

// Never destroyed (its detached thread may still be waiting when static destructors run at exit) and
// never allocated (so getting it cannot throw).
Closer& TheCloser() noexcept {
  alignas(Closer) static unsigned char storage[sizeof(Closer)];
  static Closer* closer = new (storage) Closer();
  return *closer;
}

}  // namespace

void Dispose(Handle* h) noexcept {
  if (h == nullptr) return;
  switch (tRole) {
    case Role::kWorker:
      delete h;
      gWorker++;
      return;
    case Role::kCloser:
      delete h;
      gCloser++;
      return;
    case Role::kUnknown:
      if (TheCloser().Take(h)) return;
      delete h;
      gFallback++;
      return;
  }
}

void MayBlockHere() noexcept {
  if (tRole == Role::kUnknown) tRole = Role::kWorker;
}

bool DrainCloser(std::chrono::milliseconds timeout) noexcept { return TheCloser().Drain(timeout); }

HandleStats GetHandleStats() noexcept {
  return HandleStats{gWorker.load(), gCloser.load(), gFallback.load(), TheCloser().Queued(), gBarrierTimeouts.load()};
}

}  // namespace rbdb
