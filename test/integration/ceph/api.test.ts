/** The rest of the addon's surface against a real cluster: snapshots, image-meta, clone/flatten, pools. */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { type Cluster, featureNames, type IoCtx, RbdFeature } from "../../../agents/ceph";
import { connectLab, labCluster, rbd, rbdExportSha256, rbdJson, sha256, uniqueName } from "../../helpers/lab";

const MiB = 1 << 20;

describe("addon API", () => {
  let cluster: Cluster;
  let io: IoCtx;
  const cleanup: Array<() => Promise<unknown>> = [];

  before(async () => {
    cluster = await connectLab("site-a");
    io = await cluster.openIoCtx("rbd");
  });

  after(async () => {
    for (const f of cleanup.reverse()) await f().catch(() => {});
    await io.close();
    await cluster.close();
  });

  it("cluster: fsid and pools match the lab", async () => {
    assert.equal(cluster.fsid(), labCluster("site-a").fsid);
    const pools = await cluster.poolList();
    assert.ok(pools.includes("rbd") && pools.includes("backups"), pools.join(","));
    // Usage figures come from the mgr, which the lab does not run: only check the call works.
    const st = await cluster.stat();
    for (const k of ["bytes", "bytesUsed", "bytesAvailable", "objects"] as const) assert.equal(typeof st[k], "number");
  });

  it("create with features, order and striping; stat agrees with rbd info", async () => {
    const name = uniqueName("api-create");
    const features = RbdFeature.layering | RbdFeature.stripingV2 | RbdFeature.exclusiveLock;
    await io.imageCreate(name, 10 * MiB, { features, order: 20, stripeUnit: 64 * 1024, stripeCount: 4 });
    cleanup.push(() => io.imageRemove(name));
    const im = await io.imageOpen(name);
    const st = await im.stat();
    await im.close();
    const info = await rbdJson<{
      size: number;
      order: number;
      features: string[];
      stripe_unit: number;
      stripe_count: number;
    }>("site-a", ["info", `rbd/${name}`]);
    assert.equal(st.size, 10 * MiB);
    assert.equal(st.size, info.size);
    assert.equal(st.order, 20);
    assert.equal(st.objectSize, MiB);
    assert.equal(st.stripeUnit, 64 * 1024);
    assert.equal(st.stripeCount, 4);
    assert.equal(st.features, features);
    assert.deepEqual(featureNames(st.features).sort(), ["exclusiveLock", "layering", "stripingV2"]);
    assert.deepEqual([...info.features].sort(), ["exclusive-lock", "layering", "striping"]);
    assert.ok((await io.imageList()).includes(name));
  });

  it("snapshots: list with ids, sizes, timestamps; rollback restores the data", async () => {
    const name = uniqueName("api-snap");
    await io.imageCreate(name, 4 * MiB);
    cleanup.push(() => io.imageRemove(name));
    const im = await io.imageOpen(name);
    const a = randomBytes(4 * MiB);
    await im.write(a, 0);
    const t0 = Date.now() / 1000;
    await im.snapCreate("a");
    await im.resize(6 * MiB);
    await im.write(randomBytes(6 * MiB), 0);
    await im.snapCreate("b", { skipQuiesce: true }); // rbd_snap_create2, as the sink's commit makes them
    const snaps = await im.snapList();
    assert.deepEqual(
      snaps.map((s) => [s.name, s.size, s.protected]),
      [
        ["a", 4 * MiB, false],
        ["b", 6 * MiB, false],
      ],
    );
    assert.ok((snaps[1]?.id ?? 0) > (snaps[0]?.id ?? 0));
    assert.ok(Math.abs((snaps[0]?.timestamp ?? 0) - t0) < 60, "timestamp is the creation time");
    const cli = await rbdJson<Array<{ id: number; name: string; size: number }>>("site-a", [
      "snap",
      "ls",
      `rbd/${name}`,
    ]);
    assert.deepEqual(
      cli.map((s) => [s.id, s.name, s.size]),
      snaps.map((s) => [s.id, s.name, s.size]),
    );
    await im.snapRollback("a");
    const st = await im.stat();
    assert.equal(st.size, 4 * MiB);
    await im.close();
    assert.equal((await rbdExportSha256("site-a", `rbd/${name}`)).sha256, sha256(a));
    const im2 = await io.imageOpen(name);
    await im2.snapRemove("a");
    await im2.snapRemove("b");
    assert.deepEqual(await im2.snapList(), []);
    await im2.close();
  });

  it("snapSet: the head handle reads the snapshot (size, data, diff), refuses writes there, and takes them again back at the head", async () => {
    const name = uniqueName("api-snapset");
    await io.imageCreate(name, 4 * MiB);
    cleanup.push(() => io.imageRemove(name));
    const im = await io.imageOpen(name);
    const a = randomBytes(4 * MiB);
    await im.write(a, 0);
    await im.snapCreate("a");
    await im.resize(6 * MiB);
    const b = randomBytes(MiB);
    await im.write(b, 5 * MiB);
    await im.snapSet("a");
    assert.equal(im.snapshot, "a");
    assert.equal((await im.stat()).size, 4 * MiB, "stat at the snapshot");
    const read = Buffer.alloc(4 * MiB);
    await im.read(read, 0);
    assert.ok(read.equals(a), "reads see the snapshot");
    const extents = [];
    for await (const batch of im.diff()) extents.push(...batch);
    assert.equal(
      extents.reduce((n, e) => n + e.length, 0),
      4 * MiB,
      "the diff ends at the snapshot",
    );
    await assert.rejects(im.write(Buffer.alloc(4096), 0), (e: unknown) => (e as { code?: string }).code === "EROFS");
    await assert.rejects(im.snapSet("missing"), (e: unknown) => (e as { code?: string }).code === "ENOENT");
    await im.snapSet(null);
    assert.equal((await im.stat()).size, 6 * MiB, "stat at the head");
    await im.write(Buffer.alloc(4096, 7), 0);
    await im.snapRemove("a");
    await im.close();
    const expected = Buffer.concat([Buffer.alloc(4096, 7), a.subarray(4096), Buffer.alloc(MiB), b]);
    assert.equal((await rbdExportSha256("site-a", `rbd/${name}`)).sha256, sha256(expected));
  });

  it("trashList: an image moved to the trash is listed there by name (not among the images) until it leaves it", async () => {
    const name = uniqueName("trash");
    await io.imageCreate(name, 4 << 20);
    const id = (await rbdJson<{ id: string }>("site-a", ["info", `rbd/${name}`])).id;
    cleanup.push(() => rbd("site-a", ["trash", "rm", `rbd/${id}`]).catch(() => io.imageRemove(name)));
    assert.ok(!(await io.trashList()).includes(name));
    await rbd("site-a", ["trash", "mv", `rbd/${name}`]);
    assert.ok((await io.trashList()).includes(name), "listed in the trash");
    assert.ok(!(await io.imageList()).includes(name), "not among the images");
    await rbd("site-a", ["trash", "rm", `rbd/${id}`]);
    assert.ok(!(await io.trashList()).includes(name), "gone from the trash");
  });

  it("imageList and trashList: more entries than their first call has room for (64) are all listed", async () => {
    // The addon's listings start with room for 64 and ask again with the room librbd says it needs
    // (common.h CallWithRoom): 70 images, in a namespace of their own so that nothing else is counted.
    const ns = uniqueName("list-room");
    await rbd("site-a", ["namespace", "create", `rbd/${ns}`]);
    const nio = await cluster.openIoCtx("rbd", { namespace: ns });
    cleanup.push(async () => {
      await rbd("site-a", ["trash", "purge", `rbd/${ns}`]).catch(() => {});
      for (const n of await nio.imageList().catch(() => [])) await nio.imageRemove(n).catch(() => {});
      await nio.close();
      await rbd("site-a", ["namespace", "rm", `rbd/${ns}`]);
    });
    const names = Array.from({ length: 70 }, (_, i) => `img-${String(i).padStart(2, "0")}`);
    await Promise.all(names.map((n) => nio.imageCreate(n, MiB)));
    assert.deepEqual((await nio.imageList()).sort(), names);
    assert.deepEqual(await nio.trashList(), []);
    for (let i = 0; i < names.length; i += 5) {
      await Promise.all(names.slice(i, i + 5).map((n) => rbd("site-a", ["trash", "mv", `rbd/${ns}/${n}`])));
    }
    assert.deepEqual((await nio.trashList()).sort(), names);
    assert.deepEqual(await nio.imageList(), []);
  });

  it("image-meta: set, get, list, remove; a missing key is null", async () => {
    const name = uniqueName("api-meta");
    await io.imageCreate(name, MiB);
    cleanup.push(() => io.imageRemove(name));
    const im = await io.imageOpen(name);
    assert.equal(await im.metaGet("k1"), null);
    await im.metaSet("k1", "v1");
    await im.metaSet("k2", "");
    await im.metaSet("long", "x".repeat(5000));
    assert.equal(await im.metaGet("k1"), "v1");
    assert.equal(await im.metaGet("k2"), "");
    assert.equal(await im.metaGet("long"), "x".repeat(5000));
    assert.deepEqual(await im.metaList(), { k1: "v1", k2: "", long: "x".repeat(5000) });
    await im.metaRemove("k1");
    assert.equal(await im.metaGet("k1"), null);
    await im.close();
    const cli = await rbdJson<Record<string, string>>("site-a", ["image-meta", "list", `rbd/${name}`]);
    assert.deepEqual(cli, { k2: "", long: "x".repeat(5000) });
  });

  it("clone from a protected snapshot into another pool, then flatten", async () => {
    const parent = uniqueName("api-parent");
    const child = uniqueName("api-child");
    const dest = await cluster.openIoCtx("backups");
    await io.imageCreate(parent, 8 * MiB);
    const im = await io.imageOpen(parent);
    const data = randomBytes(8 * MiB);
    await im.write(data, 0);
    await im.snapCreate("base");
    await im.snapProtect("base");
    await io.imageClone(parent, "base", dest, child);
    const c = await dest.imageOpen(child);
    await c.write(Buffer.alloc(4096, 1), 0);
    data.fill(1, 0, 4096);
    await c.flatten();
    await c.close();
    // Flattened: the parent snapshot can go although the child lives on.
    await im.snapUnprotect("base");
    await im.snapRemove("base");
    await im.close();
    await io.imageRemove(parent);
    assert.equal((await rbdExportSha256("site-a", `backups/${child}`)).sha256, sha256(data));
    await dest.imageRemove(child);
    await dest.close();
  });

  it("flatten: cancelled, librbd stops and the image stays a clone; a later flatten finishes it, with progress", async () => {
    // 64 KiB objects: 256 of them, more than librbd copies at once (rbd_concurrent_management_ops, 10).
    const parent = uniqueName("api-fparent");
    const child = uniqueName("api-fchild");
    await io.imageCreate(parent, 16 * MiB, { order: 16 });
    const im = await io.imageOpen(parent);
    const data = randomBytes(16 * MiB);
    await im.write(data, 0);
    await im.snapCreate("base");
    await im.snapProtect("base");
    await io.imageClone(parent, "base", io, child);
    cleanup.push(async () => {
      await io.imageRemove(child).catch(() => {});
      await im.snapUnprotect("base").catch(() => {});
      await im.snapRemove("base").catch(() => {});
      await im.close();
      await io.imageRemove(parent);
    });
    const info = () => rbdJson<{ parent?: { image: string } }>("site-a", ["info", `rbd/${child}`]);
    const c = await io.imageOpen(child);
    try {
      const ac = new AbortController();
      const seen: Array<[number, number]> = [];
      const cancelled = c.flatten({ signal: ac.signal, onProgress: (d, t) => seen.push([d, t]) });
      ac.abort();
      await assert.rejects(cancelled, (e: Error & { code?: string }) => e.code === "ECANCELED");
      assert.equal((await info()).parent?.image, parent, "still a clone of its parent");
      const [started, total] = seen.at(-1) ?? [0, 0];
      assert.equal(total, 256, "librbd counted the objects to copy");
      assert.ok(started < total, `stopped after ${started} of ${total} objects`);
      await assert.rejects(
        c.flatten({ signal: AbortSignal.abort() }),
        (e: Error & { code?: string }) => e.code === "ECANCELED",
      );

      await assert.rejects(c.flatten({ onProgress: 1 as never }), TypeError);
      await assert.rejects(c.flatten({ signal: {} as never }), TypeError);

      seen.length = 0;
      // An observer that throws neither fails the flatten nor the process.
      await c.flatten({
        onProgress: (d, t) => {
          seen.push([d, t]);
          throw new Error("the observer's own bug");
        },
      });
      assert.deepEqual(seen.at(-1), [256, 256]);
      assert.equal((await info()).parent, undefined, "flattened: no parent");
    } finally {
      await c.close();
    }
    assert.equal((await rbdExportSha256("site-a", `rbd/${child}`)).sha256, sha256(data));
  });

  it("RADOS namespaces keep objects apart", async () => {
    const nsA = await cluster.openIoCtx("backups", { namespace: "tenant-a" });
    const nsB = await cluster.openIoCtx("backups", { namespace: "tenant-b" });
    const oid = uniqueName("meta");
    await nsA.objCreateExclusive(oid, Buffer.from("{}"));
    assert.ok((await nsA.objList()).includes(oid));
    assert.ok(!(await nsB.objList()).includes(oid));
    await nsB.objCreateExclusive(oid, Buffer.from("[]")); // no clash
    await nsA.objRemove(oid);
    await nsB.objRemove(oid);
    await nsA.close();
    await nsB.close();
  });
});
