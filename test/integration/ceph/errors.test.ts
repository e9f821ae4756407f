/** Exact error codes from real librados/librbd failures, closed handles, and a bounded connect. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { CephError, ClosedError, type Cluster, connect, type IoCtx } from "../../../agents/ceph";
import { native } from "../../../agents/ceph/native";
import { connectLab, labCluster, uniqueName } from "../../helpers/lab";

function isCode(code: string, op?: string) {
  return (e: unknown) => {
    assert.ok(e instanceof CephError, `expected a CephError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (op) assert.equal(e.op, op);
    return true;
  };
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a ? a.port : 0));
    });
  });
}

describe("error codes are exact", () => {
  let cluster: Cluster;
  let io: IoCtx;
  const name = uniqueName("err");

  before(async () => {
    cluster = await connectLab("site-a");
    io = await cluster.openIoCtx("rbd");
    await io.imageCreate(name, 8 << 20);
  });

  after(async () => {
    const im = await io.imageOpen(name);
    for (const s of await im.snapList()) {
      if (s.protected) await im.snapUnprotect(s.name);
      await im.snapRemove(s.name);
    }
    await im.close();
    await io.imageRemove(name);
    await io.close();
    await cluster.close();
  });

  it("opening a missing image -> ENOENT", async () => {
    await assert.rejects(io.imageOpen(uniqueName("missing")), isCode("ENOENT", "rbd_open"));
    await assert.rejects(
      io.imageOpen(uniqueName("missing"), { readOnly: true }),
      isCode("ENOENT", "rbd_open_read_only"),
    );
  });

  it("creating an existing image -> EEXIST", async () => {
    await assert.rejects(io.imageCreate(name, 1 << 20), isCode("EEXIST", "rbd_create4"));
  });

  it("removing an image that still has snapshots -> ENOTEMPTY (what librbd gives)", async () => {
    const im = await io.imageOpen(name);
    await im.snapCreate("keep");
    await im.close();
    await assert.rejects(io.imageRemove(name), isCode("ENOTEMPTY", "rbd_remove"));
  });

  it("removing a protected snapshot -> EBUSY; after unprotect it goes", async () => {
    const im = await io.imageOpen(name);
    await im.snapCreate("prot");
    await im.snapProtect("prot");
    await assert.rejects(im.snapRemove("prot"), isCode("EBUSY", "rbd_snap_remove"));
    assert.equal((await im.snapList()).find((s) => s.name === "prot")?.protected, true);
    await im.snapUnprotect("prot");
    await im.snapRemove("prot");
    assert.equal(
      (await im.snapList()).find((s) => s.name === "prot"),
      undefined,
    );
    await im.close();
  });

  it("exclusive create of an existing object -> EEXIST, content unchanged", async () => {
    const oid = uniqueName("obj");
    await io.objCreateExclusive(oid, Buffer.from("first"));
    await assert.rejects(io.objCreateExclusive(oid, Buffer.from("second")), isCode("EEXIST"));
    assert.equal((await io.objRead(oid)).toString(), "first");
    assert.ok((await io.objList()).includes(oid));
    assert.equal((await io.objStat(oid)).size, 5);
    await io.objRemove(oid);
    await assert.rejects(io.objRead(oid), isCode("ENOENT"));
    await assert.rejects(io.objRemove(oid), isCode("ENOENT", "rados_remove"));
  });

  it("a missing pool -> ENOENT", async () => {
    await assert.rejects(cluster.openIoCtx("no-such-pool"), isCode("ENOENT", "rados_ioctx_create"));
    assert.equal(await cluster.poolExists("no-such-pool"), false);
    assert.equal(await cluster.poolExists("rbd"), true);
  });

  it("writes to an image open at a snapshot or read-only -> EROFS, naming the write, its range and the image", async () => {
    const im = await io.imageOpen(name);
    await im.snapCreate("ro");
    await im.close();
    const at = await io.imageOpen(name, { snapshot: "ro" });
    try {
      // A write is refused before librbd (librbd's rbd_aio_write2 never completes there with rbd_cache off and zero-copy writes); write
      // zeroes and discard fail in librbd. Each within the test's bound, naming what failed (nativeIo).
      const e = await at.write(Buffer.alloc(4096, 1), 8192).catch((x: unknown) => x);
      assert.ok(e instanceof CephError, `expected a CephError, got ${String(e)}`);
      assert.equal(e.code, "EROFS", e.message);
      assert.match(e.message, new RegExp(`write 4096 bytes at 8192 to rbd/${name}@ro`));
      await assert.rejects(at.writeZeroes(8192, 4096), isCode("EROFS", "rbd_aio_write_zeroes"));
      await assert.rejects(at.discard(8192, 4096), isCode("EROFS", "rbd_aio_discard"));
      const head = await io.imageOpen(name, { readOnly: true });
      await assert.rejects(head.write(Buffer.alloc(4096, 1), 0), isCode("EROFS"));
      await head.close();
    } finally {
      await at.close();
    }
  });

  it("the error carries the caller's stack", async () => {
    const e = await io.imageOpen(uniqueName("missing")).catch((x: unknown) => x);
    assert.ok(e instanceof CephError);
    assert.match(String(e.stack), /errors\.test\.js/);
  });
});

describe("closed handles give a clear error, never a crash", () => {
  it("facade: image, I/O context and cluster", async () => {
    const cluster = await connectLab("site-a");
    const io = await cluster.openIoCtx("rbd");
    const name = uniqueName("closed");
    await io.imageCreate(name, 1 << 20);
    const im = await io.imageOpen(name);
    await im.close();
    await im.close(); // idempotent
    await assert.rejects(im.read(Buffer.alloc(10), 0), ClosedError);
    await assert.rejects(im.stat(), ClosedError);
    await assert.rejects(async () => {
      for await (const _ of im.diff()) {
        /* nothing */
      }
    }, ClosedError);
    await io.imageRemove(name);
    await io.close();
    await assert.rejects(io.imageList(), ClosedError);
    await cluster.close();
    await cluster.close();
    assert.throws(() => cluster.fsid(), ClosedError);
    await assert.rejects(cluster.poolList(), ClosedError);
  });

  it("native objects used after close throw ERR_RBDBACKUP_CLOSED", async () => {
    const c = labCluster("site-a");
    const cl = await native().connect({ conf: c.conf, clientId: c.clientId, keyring: c.keyring, config: {} });
    const io = await cl.openIoCtx("rbd", {});
    const name = uniqueName("closed-native");
    await io.imageCreate(name, 1 << 20, {});
    const im = await io.imageOpen(name, {});
    const it = im.diffIterate({ offset: 0, wholeObject: false, includeParent: true, batchSize: 1 });
    await it.close();
    await assert.rejects(async () => it.next(), { code: "ERR_RBDBACKUP_CLOSED" });
    await im.close();
    // Parent closed while the child is open: the child keeps working, the parent refuses.
    await cl.close();
    assert.throws(() => cl.fsid(), { code: "ERR_RBDBACKUP_CLOSED" });
    await assert.rejects(async () => im.read(Buffer.alloc(1), 0), { code: "ERR_RBDBACKUP_CLOSED" });
    await im.close(); // closing twice is harmless
    await io.imageRemove(name);
    await io.close();
    await assert.rejects(async () => io.imageList(), { code: "ERR_RBDBACKUP_CLOSED" });
    await assert.rejects(async () => io.imageOpen(name, {}), { code: "ERR_RBDBACKUP_CLOSED" });
  });
});

describe("the native boundary refuses what would corrupt memory or hang", () => {
  it("a method called on an object of another class is a TypeError (V8 checks the receiver of a class's methods), not an unwrap of the wrong type", async () => {
    const c = labCluster("site-a");
    const cl = await native().connect({ conf: c.conf, clientId: c.clientId, keyring: c.keyring, config: {} });
    const io = await cl.openIoCtx("rbd", {});
    const name = uniqueName("receiver");
    await io.imageCreate(name, 1 << 20, {});
    const im = await io.imageOpen(name, {});
    try {
      const read = Object.getPrototypeOf(im).read as (this: unknown, b: Buffer, o: number) => Promise<number>;
      assert.throws(() => read.call(io, Buffer.alloc(16), 0), TypeError);
      assert.throws(() => read.call({}, Buffer.alloc(16), 0), TypeError);
      const list = Object.getPrototypeOf(io).imageList as (this: unknown) => Promise<string[]>;
      assert.throws(() => list.call(im), TypeError);
      assert.equal(await read.call(im, Buffer.alloc(16), 0), 16, "its own receiver still works");
    } finally {
      await im.close();
      await io.imageRemove(name);
      await io.close();
      await cl.close();
    }
  });

  it("an object over objRead's limit is EFBIG, never read; within it, read whole across pieces", async () => {
    const cluster = await connectLab("site-a");
    const io = await cluster.openIoCtx("rbd");
    const oid = uniqueName("big-object");
    try {
      const data = Buffer.alloc(3 << 20, 7);
      await io.objWriteFull(oid, data);
      await assert.rejects(io.objRead(oid, { maxBytes: 1 << 20 }), isCode("EFBIG", "rados_read"));
      assert.ok((await io.objRead(oid, { maxBytes: 3 << 20 })).equals(data));
      assert.ok((await io.objRead(oid)).equals(data));
    } finally {
      await io.objRemove(oid).catch(() => {});
      await io.close();
      await cluster.close();
    }
  });

  it("I/O started while snapSet moves the handle waits for the move: a write is then EROFS, not a hang", async () => {
    const cluster = await connectLab("site-a");
    const io = await cluster.openIoCtx("rbd");
    const name = uniqueName("moving");
    await io.imageCreate(name, 1 << 20);
    const im = await io.imageOpen(name);
    try {
      await im.write(Buffer.alloc(4096, 1), 0);
      await im.snapCreate("s1");
      await im.write(Buffer.alloc(4096, 2), 0);
      const moving = im.snapSet("s1");
      const written = im.write(Buffer.alloc(4096, 3), 0).catch((e: unknown) => e);
      const buf = Buffer.alloc(4096);
      const read = im.read(buf, 0);
      const stat = im.stat();
      await moving;
      const e = await written;
      assert.ok(e instanceof CephError && e.code === "EROFS", `a write during the move: ${String(e)}`);
      await read;
      assert.equal(buf[0], 1, "the read ran after the move: the snapshot's data");
      assert.equal((await stat).size, 1 << 20);
      await im.snapSet(null);
      await im.write(Buffer.alloc(4096, 4), 0);
    } finally {
      await im.close();
      const cleanup = await io.imageOpen(name);
      await cleanup.snapRemove("s1");
      await cleanup.close();
      await io.imageRemove(name);
      await io.close();
      await cluster.close();
    }
  });

  it("close() waits for metadata calls in flight: the image is closed when it resolves (its removal is not EBUSY)", async () => {
    const cluster = await connectLab("site-a");
    const io = await cluster.openIoCtx("rbd");
    const name = uniqueName("close-calls");
    await io.imageCreate(name, 1 << 20);
    const im = await io.imageOpen(name);
    const calls = [im.stat(), im.snapList(), im.metaList(), im.watchers()];
    assert.ok(im.inflight >= 4, `counted: ${im.inflight}`);
    await im.close();
    assert.equal(im.inflight, 0);
    await io.imageRemove(name);
    await Promise.all(calls);
    await io.close();
    await cluster.close();
  });
});

describe("connecting to a cluster whose monitor is down", () => {
  it("fails with ETIMEDOUT within the configured timeout", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-deadmon-"));
    try {
      const conf = path.join(dir, "ceph.conf");
      const port = await freePort(); // nothing listens there
      writeFileSync(conf, `[global]\nmon_host = v2:127.0.0.1:${port}\nauth_client_required = cephx\n`);
      const started = Date.now();
      await assert.rejects(
        connect({ conf, clientId: "admin", keyring: labCluster("site-a").keyring, connectTimeoutSeconds: 3 }),
        isCode("ETIMEDOUT", "rados_connect"),
      );
      const elapsed = (Date.now() - started) / 1000;
      assert.ok(elapsed < 3 * 3, `connect gave up after ${elapsed}s, configured 3s`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a wrong key is refused, not retried forever", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-badkey-"));
    try {
      const keyring = path.join(dir, "keyring");
      writeFileSync(keyring, "[client.admin]\n\tkey = AQBm9+lkAAAAABAAuY0Zg0oIyeGjXiSCBr5J1w==\n");
      await assert.rejects(
        connect({ conf: labCluster("site-a").conf, clientId: "admin", keyring, connectTimeoutSeconds: 5 }),
        (e: unknown) => e instanceof CephError && ["EACCES", "EPERM", "ETIMEDOUT"].includes(e.code),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
