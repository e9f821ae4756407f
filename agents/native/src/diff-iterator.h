// DiffIterator: rbd_diff_iterate2 delivered to JS in batches of extents, strictly on demand.
//
// A dedicated thread runs rbd_diff_iterate2 (it blocks for as long as JS takes to consume). The librbd
// callback appends extents to the current batch while JS works on the previous one, and waits only when
// it holds `batchSize` extents, so at most one batch exists ahead of the consumer. next() takes what has
// gathered at once; when nothing has, the producer hands over the first extent it finds (a sparse image's
// few extents no longer wait for the walk over the whole image to fill a batch). close() cancels: the
// callback returns -ECANCELED and librbd unwinds. The thread starts on the first next(); when it cannot
// (std::system_error), that next() rejects with ERR_RBDBACKUP_NATIVE. After a rejected batch every
// later next() rejects too (its extents are gone, so a "done" would lie).
#pragma once

#include <condition_variable>
#include <thread>
#include <vector>

#include "common.h"

namespace rbdb {

struct DiffParams {
  bool hasFrom = false;
  std::string fromSnapshot;
  uint64_t offset = 0;
  bool hasLength = false;
  uint64_t length = 0;
  bool wholeObject = false;
  bool includeParent = true;
  size_t batchSize = 1024;
};

struct DiffState;

class DiffIterator : public Napi::ObjectWrap<DiffIterator>, public Releasable {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit DiffIterator(const Napi::CallbackInfo& info);
  ~DiffIterator() override;

  void Start(std::shared_ptr<ImageHandle> h, DiffParams p);
  void ReleaseHandle() override;
  int ReleaseLevel() const override { return 0; }

 private:
  Napi::Value Next(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  Addon* addon_;
  std::shared_ptr<DiffState> s_;
};

}  // namespace rbdb
