/**
 * A handle JS lets go of without close() is closed off the JS thread. rbd_close / rados_ioctx_destroy /
 * rados_shutdown can block for seconds, and the last reference may be dropped on the JS thread (a GC
 * finalizer, a completed aio baton); the addon then hands the close to its closer thread
 * (agents/native/src/handles.h). Checked with the addon's own counter of where final closes ran
 * (RBDBACKUP_NATIVE_TEST_FAULTS=1 exposes it) rather than with a timing bound, which would not be
 * robust on a shared machine; the event-loop delay around the collection is logged for reference.
 */
import assert from "node:assert/strict";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { after, before, describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { type Cluster, type IoCtx, isCephError } from "../../../agents/ceph";
import { type NativeTesting, native } from "../../../agents/ceph/native";
import { delay } from "../../../src/common/retry";
import { connectLab, uniqueName } from "../../helpers/lab";
import { waitFor } from "../../helpers/wait";

process.env.RBDBACKUP_NATIVE_TEST_FAULTS = "1";
setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

type Stats = ReturnType<NativeTesting["handleStats"]>;

function stats(): Stats {
  const t = native().testing;
  assert.ok(t, "the addon exports `testing` when RBDBACKUP_NATIVE_TEST_FAULTS=1");
  return t.handleStats();
}

/** Collects garbage until `done()` holds (finalizers run after a collection), at most `ms`. */
async function collectUntil(what: string, done: () => boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${ms} ms waiting for ${what}: ${JSON.stringify(stats())}`);
    gc();
    await delay(20);
  }
}

describe("final closes run off the JS thread", () => {
  let cluster: Cluster;
  let io: IoCtx;

  before(async () => {
    cluster = await connectLab("site-a");
    io = await cluster.openIoCtx("rbd");
  });

  /** Images the tests made: removed in after() whatever a test ended with (a dropped handle still
   * watching one makes its removal EBUSY until the closer got to it: retried, bounded). */
  const made: string[] = [];

  after(async () => {
    for (const n of made) {
      await waitFor(
        async () => {
          try {
            await io.imageRemove(n);
            return true;
          } catch (e) {
            if (isCephError(e, "ENOENT")) return true;
            if (isCephError(e, "EBUSY")) return false;
            throw e;
          }
        },
        { what: `the removal of ${n}`, timeoutMs: 60_000 },
      ).catch((e: unknown) => console.log(`# gc-close: ${n} not removed: ${String(e)}`));
    }
    await io.close();
    await cluster.close();
  });

  it("an open image JS drops is closed by the closer thread; its watch is gone", async () => {
    const name = uniqueName("gc-image");
    made.push(name);
    await io.imageCreate(name, 4 << 20);
    const before = stats();
    // In its own function, so that nothing on this frame keeps the image reachable.
    await (async () => {
      const im = await io.imageOpen(name);
      await im.write(Buffer.alloc(4096, 1), 0);
      await im.stat();
    })();
    const h = monitorEventLoopDelay({ resolution: 10 });
    h.enable();
    await collectUntil("the dropped image to be closed", () => {
      const s = stats();
      return s.closer > before.closer && s.queued === 0;
    });
    h.disable();
    console.log(`gc-close: event-loop delay around the collection: max ${(h.max / 1e6).toFixed(1)} ms`);
    const s = stats();
    assert.equal(s.fallback, before.fallback, "no handle was closed on the JS thread");
    assert.equal(s.closer - before.closer, 1, "exactly the image was closed by the closer");
    // An image with a watcher cannot be removed (EBUSY): this succeeds only if the close really happened.
    await io.imageRemove(name);
  });

  it("a whole chain JS drops (cluster, I/O context, image) is closed by the closer, child first", async () => {
    const name = uniqueName("gc-chain");
    made.push(name);
    await io.imageCreate(name, 4 << 20);
    const before = stats();
    await (async () => {
      const c = await connectLab("site-a");
      const i = await c.openIoCtx("rbd");
      const im = await i.imageOpen(name);
      await im.read(Buffer.alloc(512), 0);
    })();
    await collectUntil("the dropped cluster, I/O context and image to be closed", () => {
      const s = stats();
      return s.closer - before.closer >= 3 && s.queued === 0;
    });
    const s = stats();
    assert.equal(s.closer - before.closer, 3);
    assert.equal(s.fallback, before.fallback);
    await io.imageRemove(name);
  });

  it("an explicit close() still closes on libuv's pool before it resolves", async () => {
    const name = uniqueName("gc-explicit");
    made.push(name);
    await io.imageCreate(name, 4 << 20);
    const before = stats();
    const im = await io.imageOpen(name);
    await im.stat();
    await im.close();
    const s = stats();
    assert.equal(s.worker - before.worker, 1, "closed by the close() call itself");
    assert.equal(s.closer, before.closer);
    assert.equal(s.fallback, before.fallback);
    await io.imageRemove(name);
  });
});
