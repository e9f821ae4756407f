/**
 * A C++ exception inside the addon becomes a JS error, never std::terminate. The test-only fault hooks
 * (RBDBACKUP_NATIVE_TEST_FAULTS=1, agents/native/src/test-faults.h) throw std::system_error,
 * std::bad_alloc, std::runtime_error or a non-std exception at each kind of entry point: a method, a
 * module function, AsyncWorker::Execute on libuv's pool, a completion task on the JS thread, and the
 * start of the diff producer thread. Each call rejects with the exact code, and the same handles keep
 * working afterwards: the process lives on.
 */
import assert from "node:assert/strict";
import { constants } from "node:os";
import { after, afterEach, before, describe, it } from "node:test";
import { CephError, type Cluster, type Extent, type Image, type IoCtx, NativeError } from "../../../agents/ceph";
import { type NativeTesting, native } from "../../../agents/ceph/native";
import { connectLab, labCluster, uniqueName } from "../../helpers/lab";

// Read when the addon loads, which is on first use (below), so setting it here is in time.
process.env.RBDBACKUP_NATIVE_TEST_FAULTS = "1";

const MiB = 1 << 20;

function testing(): NativeTesting {
  const t = native().testing;
  assert.ok(t, "the addon exports `testing` when RBDBACKUP_NATIVE_TEST_FAULTS=1");
  return t;
}

function isNative(op: string | RegExp, detail: RegExp, errno?: number) {
  return (e: unknown) => {
    assert.ok(e instanceof NativeError, `expected a NativeError, got ${String(e)}`);
    assert.equal(e.code, "ERR_RBDBACKUP_NATIVE");
    if (typeof op === "string") assert.equal(e.op, op);
    else assert.match(e.op, op);
    assert.match(e.message, detail);
    assert.equal(e.errno, errno);
    return true;
  };
}

function isEnomem(op: string) {
  return (e: unknown) => {
    assert.ok(e instanceof CephError, `expected a CephError, got ${String(e)}`);
    assert.equal(e.code, "ENOMEM");
    assert.equal(e.op, op);
    return true;
  };
}

async function collect(image: Image, batchSize = 1024): Promise<Extent[]> {
  const all: Extent[] = [];
  for await (const batch of image.diff({ batchSize })) all.push(...batch);
  return all;
}

describe("C++ exceptions become JS errors", () => {
  let cluster: Cluster;
  let io: IoCtx;
  let image: Image;
  const name = uniqueName("faults");

  before(async () => {
    cluster = await connectLab("site-a");
    io = await cluster.openIoCtx("rbd");
    await io.imageCreate(name, 8 * MiB);
    image = await io.imageOpen(name);
    await image.write(Buffer.alloc(64 * 1024, 5), 0);
    await image.write(Buffer.alloc(64 * 1024, 6), 4 * MiB);
  });

  afterEach(() => testing().disarm());

  after(async () => {
    await image.close();
    await io.imageRemove(name);
    await io.close();
    await cluster.close();
  });

  it("in a method: std::system_error, std::bad_alloc, std::runtime_error, a non-std exception", async () => {
    const fsid = cluster.fsid();
    testing().arm("method", "system_error");
    assert.throws(() => cluster.fsid(), isNative("fsid", /Resource temporarily unavailable/, constants.errno.EAGAIN));
    testing().arm("method", "bad_alloc");
    await assert.rejects(image.stat(), isEnomem("stat"));
    testing().arm("method", "runtime_error");
    await assert.rejects(io.imageList(), isNative("imageList", /injected test fault/));
    testing().arm("method", "unknown");
    await assert.rejects(image.read(Buffer.alloc(16), 0), isNative("read", /unknown C\+\+ exception/));
    // Nothing was left half-done: the same handles work.
    assert.equal(cluster.fsid(), fsid);
    assert.ok((await io.imageList()).includes(name));
    assert.equal(image.inflight, 0);
    assert.equal((await image.stat()).size, 8 * MiB);
  });

  it("in a module function (connect)", async () => {
    testing().arm("method", "bad_alloc");
    await assert.rejects(connectLab("site-a"), isEnomem("connect"));
    const c = await connectLab("site-a");
    assert.equal(c.fsid(), labCluster("site-a").fsid);
    await c.close();
  });

  it("in AsyncWorker::Execute on libuv's pool: a failed baton, settled on the JS thread", async () => {
    testing().arm("execute", "system_error");
    await assert.rejects(
      image.stat(),
      isNative("rbd_stat", /Resource temporarily unavailable/, constants.errno.EAGAIN),
    );
    testing().arm("execute", "bad_alloc");
    await assert.rejects(io.imageList(), isEnomem("rbd_list2"));
    testing().arm("execute", "unknown");
    await assert.rejects(cluster.poolList(), isNative("rados_pool_list", /unknown C\+\+ exception/));
    assert.equal((await image.stat()).size, 8 * MiB);
  });

  it("in an aio completion task on the JS thread", async () => {
    const buf = Buffer.alloc(64 * 1024);
    testing().arm("task", "runtime_error");
    await assert.rejects(image.read(buf, 0), isNative("rbd_aio_read2", /injected test fault/));
    assert.equal(image.inflight, 0);
    assert.equal(await image.read(buf, 0), buf.length);
    assert.equal(buf[0], 5);
  });

  it("the diff thread cannot start: next() rejects, a later diff works", async () => {
    testing().arm("thread", "system_error");
    await assert.rejects(
      collect(image),
      isNative(/starting the diff thread/, /Resource temporarily unavailable/, constants.errno.EAGAIN),
    );
    const extents = await collect(image);
    assert.deepEqual(
      extents.map((e) => e.offset),
      [0, 4 * MiB],
    );
  });

  it("a diff batch that cannot be settled rejects, and the iterator refuses to go on", async () => {
    testing().arm("task", "bad_alloc");
    await assert.rejects(collect(image, 1), isEnomem("rbd_diff_iterate2"));
    // The raw iterator: after a lost batch no "done" may follow (it would hide the lost extents).
    const c = labCluster("site-a");
    const raw = await native().connect({ conf: c.conf, clientId: c.clientId, keyring: c.keyring, config: {} });
    const rawIo = await raw.openIoCtx("rbd", {});
    const rawImage = await rawIo.imageOpen(name, { readOnly: true });
    const it = rawImage.diffIterate({ offset: 0, wholeObject: false, includeParent: true, batchSize: 1 });
    testing().arm("task", "runtime_error");
    await assert.rejects(it.next(), { code: "ERR_RBDBACKUP_NATIVE", message: /injected test fault/ });
    await assert.rejects(it.next(), { code: "ERR_RBDBACKUP_NATIVE", message: /earlier next\(\) failed/ });
    await it.close();
    await rawImage.close();
    await rawIo.close();
    await raw.close();
    assert.equal((await collect(image, 1)).length, 2);
  });
});
