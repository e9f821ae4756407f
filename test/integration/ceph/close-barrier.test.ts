/**
 * An image close waits for librados' finish strand (agents/native/src/handles.h, CloseImage). Ceph 16's
 * librbd ends a read-write open inside a librados completion handler on that strand: it wakes the
 * opener, then relocks the image's state. An opener that closed in between had librbd free that state
 * under the handler, and the process aborted on an io_context_pool thread (std::system_error EINVAL;
 * leak.test.js, rarely). The preemption behind it is not reproducible on demand, so this test parks a
 * handler on the strand itself (the addon's test hooks, RBDBACKUP_NATIVE_TEST_FAULTS=1) and shows that
 * the close's own wait is ordered after it: with a short bound, that wait times out (counted) while the
 * handler is parked, and never otherwise. (rbd_close needs the strand too, so the close would stall
 * without the barrier as well; the counter is what tells the two apart.)
 */
import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import type { Cluster, IoCtx } from "../../../agents/ceph";
import { type NativeTesting, native } from "../../../agents/ceph/native";
import { connectLab, uniqueName } from "../../helpers/lab";
import { waitFor } from "../../helpers/wait";

process.env.RBDBACKUP_NATIVE_TEST_FAULTS = "1";

function testing(): NativeTesting {
  const t = native().testing;
  assert.ok(t, "the addon exports `testing` when RBDBACKUP_NATIVE_TEST_FAULTS=1");
  return t;
}

describe("an image close waits for librados' finish strand", () => {
  let cluster: Cluster;
  let io: IoCtx;

  before(async () => {
    cluster = await connectLab("site-a");
    io = await cluster.openIoCtx("rbd");
  });

  afterEach(() => {
    testing().releaseFinishStrand();
    testing().setCloseBarrierTimeout(10_000);
  });

  after(async () => {
    await io.close();
    await cluster.close();
  });

  it("a close waits for a handler parked on the strand, then goes ahead after its bounded wait", async () => {
    const t = testing();
    const name = uniqueName("barrier");
    await io.imageCreate(name, 4 << 20);
    const im = await io.imageOpen(name);
    await im.write(Buffer.alloc(4096, 7), 0);
    const before = t.handleStats().barrierTimeouts;

    t.setCloseBarrierTimeout(300);
    t.holdFinishStrand(io.nativeHandle);
    await waitFor(() => t.finishStrandHeld(), { what: "the parked handler to run", timeoutMs: 10_000 });
    const closing = im.close();
    // The close's wait can only end by its timeout while the handler is parked.
    await waitFor(() => t.handleStats().barrierTimeouts > before, {
      what: "the close's strand wait to time out while a handler is parked there",
      timeoutMs: 20_000,
    });
    assert.equal(t.handleStats().barrierTimeouts, before + 1);
    t.releaseFinishStrand();
    await closing;
    // An image with a watcher cannot be removed (EBUSY): this succeeds only if the close happened.
    await io.imageRemove(name);
  });

  it("with the strand free, opens and closes pass the wait without a timeout", async () => {
    const t = testing();
    const name = uniqueName("barrier");
    await io.imageCreate(name, 4 << 20);
    const before = t.handleStats().barrierTimeouts;
    t.setCloseBarrierTimeout(5_000);
    for (let i = 0; i < 20; i++) {
      const im = await io.imageOpen(name, i % 2 ? { readOnly: true } : {});
      await im.stat();
      await im.close();
    }
    assert.equal(t.handleStats().barrierTimeouts, before, "no close waited its whole bound");
    await io.imageRemove(name);
  });
});
