/** The facade rejects bad arguments with TypeError/RangeError naming the argument, before any native call. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CephError, connect } from "../../../agents/ceph";
import { Image } from "../../../agents/ceph/image";
import { IoCtx } from "../../../agents/ceph/io-ctx";
import type { NativeDiffIterator, NativeImage, NativeIoCtx } from "../../../agents/ceph/native";

/** A native stand-in that fails the test if the facade ever lets a bad call through. */
function tripwire<T extends object>(): T {
  return new Proxy({} as T, {
    get: (_t, prop) => () => assert.fail(`bad input reached native code (${String(prop)})`),
  });
}

const image = new Image(tripwire<NativeImage>(), "rbd/x", false);
const io = new IoCtx(tripwire<NativeIoCtx>(), "rbd", "");

function throwsNamed(fn: () => unknown, type: typeof TypeError | typeof RangeError, arg: string) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof type, `expected ${type.name}, got ${String(e)}`);
    assert.match((e as Error).message, new RegExp(`\\b${arg.replace(".", "\\.")}\\b`));
    return true;
  });
}

describe("argument validation", () => {
  it("offsets and lengths", () => {
    throwsNamed(() => image.read(Buffer.alloc(1), -1), RangeError, "offset");
    throwsNamed(() => image.write(Buffer.alloc(1), 1.5), RangeError, "offset");
    throwsNamed(() => image.write(Buffer.alloc(1), 2 ** 53), RangeError, "offset");
    throwsNamed(() => image.discard(0, 2 ** 53 + 2), RangeError, "length");
    throwsNamed(() => image.writeZeroes(2 ** 52, 2 ** 52), RangeError, "offset");
    throwsNamed(() => image.discard("0" as unknown as number, 1), TypeError, "offset");
    throwsNamed(() => image.resize(-5), RangeError, "size");
    throwsNamed(() => image.read("buf" as unknown as Buffer, 0), TypeError, "buffer");
  });

  it("names", () => {
    throwsNamed(() => image.snapCreate(""), RangeError, "snapshot");
    throwsNamed(() => image.snapCreate("x".repeat(4097)), RangeError, "snapshot");
    throwsNamed(() => image.snapCreate("s", { skipQuiesce: 1 as unknown as boolean }), TypeError, "skipQuiesce");
    throwsNamed(() => image.snapRemove(7 as unknown as string), TypeError, "snapshot");
    throwsNamed(() => image.metaSet("k", 5 as unknown as string), TypeError, "value");
    throwsNamed(() => image.metaGet("a\0b"), RangeError, "key");
    throwsNamed(() => io.imageCreate("", 1), RangeError, "name");
    throwsNamed(() => io.imageCreate("x", -1), RangeError, "size");
    throwsNamed(() => io.imageCreate("x", 1, { order: 9 }), RangeError, "order");
    throwsNamed(() => io.imageCreate("x", 1, { features: 3 as unknown as bigint }), TypeError, "features");
    throwsNamed(() => io.objCreateExclusive("", Buffer.alloc(0)), RangeError, "oid");
    throwsNamed(() => io.objWriteFull("o", "text" as unknown as Buffer), TypeError, "data");
    throwsNamed(() => io.imageClone("p", "s", {} as IoCtx, "c"), TypeError, "dest");
  });

  it("diff options (checked when iteration starts)", async () => {
    await assert.rejects(image.diff({ batchSize: 0 }).next(), RangeError);
    await assert.rejects(image.diff({ fromSnapshot: "" }).next(), /fromSnapshot/);
    await assert.rejects(image.diff({ wholeObject: 1 as unknown as boolean }).next(), /wholeObject/);
  });

  it("connect options", async () => {
    await assert.rejects(connect({ conf: "", clientId: "admin" }), /conf must not be empty/);
    await assert.rejects(connect({ conf: "/x", clientId: "client.admin" }), /clientId/);
    await assert.rejects(connect({ conf: "/x", clientId: "a", connectTimeoutSeconds: -1 }), /connectTimeoutSeconds/);
    await assert.rejects(
      connect({ conf: "/x", clientId: "a", config: { k: 1 as unknown as string } }),
      (e: unknown) => e instanceof TypeError && /config\.k/.test(e.message),
    );
  });
});

describe("writes to an image open read-only or at a snapshot", () => {
  it("are refused with EROFS before any native call (librbd's write never completes there with our settings)", async () => {
    const at = new Image(tripwire<NativeImage>(), "rbd/x", true, "s1");
    await assert.rejects(at.write(Buffer.alloc(4096), 8192), (e: unknown) => {
      assert.ok(e instanceof CephError, `expected a CephError, got ${String(e)}`);
      assert.equal(e.code, "EROFS");
      assert.match(e.message, /write 4096 bytes at 8192 to rbd\/x@s1/);
      return true;
    });
  });
});

describe("a handle moved to a snapshot and back (snapSet)", () => {
  /** A native image whose reads settle when the test says, and which records the calls it got. */
  function fakeImage() {
    const calls: string[] = [];
    let settleRead: () => void = () => {};
    const native = {
      read: () =>
        new Promise<number>((resolve) => {
          calls.push("read");
          settleRead = () => {
            calls.push("read settled");
            resolve(4096);
          };
        }),
      snapSet: async (name: string | null) => {
        calls.push(`snapSet ${name}`);
      },
      close: async () => {
        calls.push("close");
      },
      diffIterate: () => fakeWalk(calls),
    } as unknown as NativeImage;
    return { native, calls, settleRead: () => settleRead() };
  }

  /**
   * A native diff walk as the addon's behaves: one batch, then a pull that waits for the next extent
   * (librbd's thread still walking) until close() cancels it (ECANCELED); after close() a pull throws.
   */
  function fakeWalk(calls: string[]): NativeDiffIterator {
    let closed = false;
    let pulls = 0;
    let cancel: (() => void) | null = null;
    return {
      next: () => {
        if (closed) throw Object.assign(new Error("diff iterator is closed"), { code: "ERR_RBDBACKUP_CLOSED" });
        if (++pulls === 1) return Promise.resolve({ extents: new Float64Array([0, 4096, 1]), done: false });
        calls.push("pull waiting");
        return new Promise((_resolve, reject) => {
          cancel = () => reject(Object.assign(new Error("rbd_diff_iterate2: Operation canceled"), { errno: 125 }));
        });
      },
      close: async () => {
        calls.push("walk closed");
        closed = true;
        cancel?.();
      },
    };
  }

  it("a move ends a diff walk still open on the handle first; the walk's next pull then rejects", async () => {
    const { native, calls } = fakeImage();
    const img = new Image(native, "rbd/x", false, "s0");
    const walk = img.diff();
    assert.equal((await walk.next()).done, false, "a batch");
    await img.snapSet(null);
    assert.deepEqual(calls, ["walk closed", "snapSet null"], "the walk was closed before the move");
    await assert.rejects(walk.next());
  });

  it("a pull in progress is cancelled by the move, which goes on once it settled", async () => {
    const { native, calls } = fakeImage();
    const img = new Image(native, "rbd/x", false, "s0");
    const walk = img.diff();
    await walk.next();
    const pulling = walk.next();
    await new Promise((r) => setImmediate(r));
    await img.snapSet(null);
    await assert.rejects(pulling, /canceled/);
    assert.deepEqual(calls.slice(0, 3), ["pull waiting", "walk closed", "snapSet null"]);
  });

  it("close() ends an open walk before it closes the image; a walk that ended is not closed again", async () => {
    const { native, calls } = fakeImage();
    const img = new Image(native, "rbd/x", false, "s0");
    for await (const _ of img.diff()) break;
    assert.deepEqual(calls, ["walk closed"], "breaking out closes the walk");
    await img.snapSet(null);
    const walk = img.diff();
    await walk.next();
    await img.close();
    assert.deepEqual(calls, ["walk closed", "snapSet null", "walk closed", "close"]);
    await assert.rejects(walk.next());
  });

  it("refuses writes at the snapshot (EROFS, no native call), takes them again at the head; the label follows", async () => {
    const { native, calls } = fakeImage();
    const img = new Image(native, "rbd/x", false);
    assert.equal(img.readOnly, false);
    await img.snapSet("s1");
    assert.equal(img.snapshot, "s1");
    assert.equal(img.readOnly, true);
    assert.equal(img.label, "rbd/x@s1");
    await assert.rejects(
      img.write(Buffer.alloc(4096), 0),
      (e: unknown) => e instanceof CephError && e.code === "EROFS",
    );
    await img.snapSet(null);
    assert.equal(img.readOnly, false);
    assert.equal(img.label, "rbd/x");
    assert.deepEqual(calls, ["snapSet s1", "snapSet null"]);
  });

  it("an image opened read-only stays read-only at the head", async () => {
    const img = new Image(fakeImage().native, "rbd/x", true, "s1");
    await img.snapSet(null);
    assert.equal(img.readOnly, true);
  });

  it("waits for the I/O in flight before moving", async () => {
    const { native, calls, settleRead } = fakeImage();
    const img = new Image(native, "rbd/x", false);
    const reading = img.read(Buffer.alloc(4096), 0);
    const moving = img.snapSet("s1");
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(calls, ["read"], "moved while a read was in flight");
    settleRead();
    await Promise.all([reading, moving]);
    assert.deepEqual(calls, ["read", "read settled", "snapSet s1"]);
  });

  it("two moves waiting on the same I/O both go on once it drains", async () => {
    const { native, calls, settleRead } = fakeImage();
    const img = new Image(native, "rbd/x", false);
    const reading = img.read(Buffer.alloc(4096), 0);
    const first = img.snapSet("s1");
    const second = img.snapSet("s2");
    await new Promise((r) => setImmediate(r));
    settleRead();
    await Promise.all([reading, first, second]);
    assert.deepEqual(calls.slice(0, 2), ["read", "read settled"]);
    assert.deepEqual(calls.slice(2).sort(), ["snapSet s1", "snapSet s2"]);
  });

  it("bad names are refused before any native call", () => {
    throwsNamed(() => image.snapSet(""), RangeError, "snapshot");
    throwsNamed(() => image.snapSet(7 as unknown as string), TypeError, "snapshot");
  });
});
