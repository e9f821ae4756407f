#include "diff-iterator.h"

#include <memory>
#include <system_error>

namespace rbdb {

struct DiffState;

namespace {

// One batch of extents (or the end, or a failure) on its way to the JS thread.
struct BatchTask : Task {
  std::shared_ptr<DiffState> s;
  std::vector<double> triples;
  bool done = false;
  int rc = 0;
  std::exception_ptr error;  // a C++ exception on the producer thread
  std::unique_ptr<Napi::Promise::Deferred> d;

  void Run(Napi::Env env) override;
  void Fail(Napi::Env env, std::exception_ptr e) noexcept override;
};

}  // namespace

struct DiffState {
  // A producer whose close() work never ran (dropped before it could: a failed queue at teardown) must
  // not take the process down: a joinable std::thread destroyed is std::terminate. It ends on its own
  // (cancel is set, or the walk finishes) and holds what it uses.
  ~DiffState() {
    if (thread.joinable()) thread.detach();
  }

  // Set once on the JS thread before the producer starts.
  std::shared_ptr<ImageHandle> image;
  DiffParams params;
  std::shared_ptr<Poster> poster;
  // The final delivery, allocated before the producer starts so that delivering it cannot fail.
  std::unique_ptr<BatchTask> last;

  // Shared with the producer thread, under m.
  std::mutex m;
  std::condition_variable cv;
  bool want = false;
  bool cancel = false;
  std::vector<double> batch;  // (offset, length, exists) triples
  std::exception_ptr error;
  std::thread thread;

  // JS thread only.
  bool started = false;
  bool finished = false;  // the final batch was delivered, or closed
  bool failed = false;    // a batch was rejected: its extents are lost, so no later batch may follow
  std::unique_ptr<Napi::Promise::Deferred> pending;
};

namespace {

// JS thread: stop the producer after a failed batch; later next() calls reject.
void MarkFailed(DiffState& s) noexcept {
  s.failed = true;
  try {
    std::lock_guard<std::mutex> lock(s.m);
    s.cancel = true;
  } catch (...) {
  }
  s.cv.notify_all();
}

// next()'s answer: {extents: Float64Array of (offset, length, exists) triples, done}.
Napi::Object BatchObject(Napi::Env env, const std::vector<double>& triples, bool done) {
  Napi::Float64Array arr = Napi::Float64Array::New(env, triples.size());
  for (size_t i = 0; i < triples.size(); i++) arr[i] = triples[i];
  Napi::Object o = Napi::Object::New(env);
  o.Set("extents", arr);
  o.Set("done", Napi::Boolean::New(env, done));
  return o;
}

void BatchTask::Run(Napi::Env env) {
  d = std::move(s->pending);
  if (done) s->finished = true;
  if (!d) return;
  if (error) {
    MarkFailed(*s);
    d->Reject(NativeError(env, error, "rbd_diff_iterate2").Value());
    return;
  }
  if (rc < 0) {
    MarkFailed(*s);
    d->Reject(CephError(env, rc, "rbd_diff_iterate2").Value());
    return;
  }
  d->Resolve(BatchObject(env, triples, done));
}

void BatchTask::Fail(Napi::Env env, std::exception_ptr e) noexcept {
  if (!d) d = std::move(s->pending);
  if (done) s->finished = true;
  MarkFailed(*s);
  if (d) RejectWith(env, *d, e, "rbd_diff_iterate2");
}

// Under s->m: hand the current batch to JS in `t`.
void Deliver(const std::shared_ptr<DiffState>& s, std::unique_ptr<BatchTask> t, bool done, int rc) noexcept {
  t->s = s;
  t->triples.swap(s->batch);
  t->done = done;
  t->rc = rc;
  t->error = s->error;
  s->want = false;
  s->poster->Post(t.release());
}

struct CallbackArg {
  std::shared_ptr<DiffState> s;
};

// librbd's diff callback: nothing may throw into librbd. A failure (no memory for the batch) is kept in
// s->error and stops the iteration; Produce() reports it with the final delivery.
int OnExtent(uint64_t off, size_t len, int exists, void* arg) noexcept {
  const std::shared_ptr<DiffState>& s = static_cast<CallbackArg*>(arg)->s;
  try {
    std::unique_lock<std::mutex> lock(s->m);
    // A full batch waits for the consumer to take it (next() takes it directly, or sets `want`).
    s->cv.wait(lock, [&] { return s->batch.size() / 3 < s->params.batchSize || s->cancel; });
    if (s->cancel) return -ECANCELED;
    s->batch.push_back(static_cast<double>(off));
    s->batch.push_back(static_cast<double>(len));
    s->batch.push_back(exists ? 1 : 0);
    // The consumer is waiting: it gets what there is now rather than when a batch is full (a sparse
    // image's few extents would otherwise wait for the whole walk).
    if (s->want) Deliver(s, std::make_unique<BatchTask>(), false, 0);
    return 0;
  } catch (...) {
    try {
      std::lock_guard<std::mutex> lock(s->m);
      if (!s->error) s->error = std::current_exception();
    } catch (...) {
    }
    return -ECANCELED;
  }
}

// The producer thread: runs the whole iteration, then waits for the consumer to ask for the end.
void Produce(std::shared_ptr<DiffState> s) noexcept {
  MayBlockHere();
  CallbackArg arg{s};
  const DiffParams& p = s->params;
  int rc = 0;
  uint64_t length = p.length;
  if (!p.hasLength) {
    uint64_t size = 0;
    rc = rbd_get_size(s->image->image, &size);
    length = size > p.offset ? size - p.offset : 0;
  }
  if (rc == 0) {
    rc = rbd_diff_iterate2(s->image->image, p.hasFrom ? p.fromSnapshot.c_str() : nullptr, p.offset, length,
                           p.includeParent ? 1 : 0, p.wholeObject ? 1 : 0, OnExtent, &arg);
  }
  {
    std::unique_lock<std::mutex> lock(s->m);
    s->cv.wait(lock, [&] { return s->want || s->cancel; });
    if (s->want && s->last) Deliver(s, std::move(s->last), true, s->cancel ? -ECANCELED : rc);
  }
  s->image.reset();  // this thread may block: a last reference closes the image here
}

}  // namespace

Napi::Function DiffIterator::Init(Napi::Env env) {
  return DefineClass(env, "DiffIterator",
                     {
                         GuardedMethod<DiffIterator, &DiffIterator::Next>("next"),
                         GuardedMethod<DiffIterator, &DiffIterator::Close>("close"),
                     });
}

DiffIterator::DiffIterator(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<DiffIterator>(info), addon_(Addon::Get(info.Env())) {
  Guard(info.Env(), "DiffIterator", [&] {
    info.This().As<Napi::Object>().TypeTag(&kDiffTag);
    addon_->Register(this);
  });
}

DiffIterator::~DiffIterator() {
  ReleaseHandle();
  if (addon_ != nullptr) addon_->Unregister(this);
}

void DiffIterator::Start(std::shared_ptr<ImageHandle> h, DiffParams p) {
  s_ = std::make_shared<DiffState>();
  s_->image = std::move(h);
  s_->params = std::move(p);
  s_->poster = addon_->poster();
}

void DiffIterator::ReleaseHandle() {
  if (!s_) return;
  {
    std::lock_guard<std::mutex> lock(s_->m);
    s_->cancel = true;
  }
  s_->cv.notify_all();
  if (s_->thread.joinable()) s_->thread.detach();
  if (!s_->started) s_->image.reset();
  s_->finished = true;
}

Napi::Value DiffIterator::Next(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!s_) throw ClosedError(env, "diff iterator");
  auto d = std::make_unique<Napi::Promise::Deferred>(Napi::Promise::Deferred::New(env));
  Napi::Promise p = d->Promise();
  if (s_->failed) {
    d->Reject(InternalError(env, "diff iterator", "an earlier next() failed; close the iterator").Value());
    return p;
  }
  if (s_->finished) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("extents", Napi::Float64Array::New(env, 0));
    o.Set("done", Napi::Boolean::New(env, true));
    d->Resolve(o);
    return p;
  }
  if (s_->pending) {
    d->Reject(Napi::Error::New(env, "diff iterator: next() called while a previous next() is pending").Value());
    return p;
  }
  if (!s_->started) {
    // The producer waits for `want` before it delivers anything, so it may start first. If it cannot
    // start (no thread to give: std::system_error), this next() rejects and a later one may try again.
    if (!s_->last) s_->last = std::make_unique<BatchTask>();
    try {
      FaultPoint(Fault::kThread);
      s_->thread = std::thread(Produce, s_);
    } catch (...) {
      d->Reject(NativeError(env, std::current_exception(), "rbd_diff_iterate2 (starting the diff thread)").Value());
      return p;
    }
    s_->started = true;
  }
  // Extents gathered while JS was busy are handed over at once; otherwise the producer delivers the next
  // one it finds (`want`). One critical section, so no extent can slip in between the two.
  std::vector<double> ready;
  {
    std::lock_guard<std::mutex> lock(s_->m);
    if (!s_->batch.empty()) {
      ready.swap(s_->batch);
    } else {
      s_->pending = std::move(d);
      s_->want = true;
    }
  }
  s_->cv.notify_all();
  if (!ready.empty()) {
    d->Resolve(BatchObject(env, ready, false));
    return p;
  }
  addon_->Hold();  // answered by the BatchTask the producer posts
  return p;
}

Napi::Value DiffIterator::Close(const Napi::CallbackInfo& info) {
  std::shared_ptr<DiffState> s = std::move(s_);
  if (!s) return RunAsync(info.Env(), "rbd_diff_iterate2(close)", []() -> int { return 0; });
  {
    std::lock_guard<std::mutex> lock(s->m);
    s->cancel = true;
  }
  s->cv.notify_all();
  s->finished = true;
  if (!s->started) s->image.reset();
  // Wait (off the JS thread) for librbd to unwind, so the image is free when close() resolves.
  return RunAsync(info.Env(), "rbd_diff_iterate2(close)", [s]() -> int {
    if (s->thread.joinable()) s->thread.join();
    return 0;
  });
}

}  // namespace rbdb
