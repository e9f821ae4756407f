/**
 * The agent's scan_backups (engine/scan-backups.ts) over a fake cluster: pools of RADOS namespaces of
 * objects and base images with snapshots. Paging visits every meta exactly once in (pool, namespace,
 * id) order; what the rebuild needs (parse errors, snapshot present, digest map SHA-256) is reported.
 */
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { CephError, type Cluster } from "../../../agents/ceph";
import {
  encodeScanCursor,
  LISTING_KEPT_MS,
  PAGE_BYTES,
  PlacesAhead,
  scanBackups,
} from "../../../agents/engine/scan-backups";
import { encodeDigestMap } from "../../../agents/transfer/digests";
import { statusOf } from "../../../src/common/errors";
import { backupSnapName } from "../../../src/common/ids";

const ENOENT = 2;

/** pool → namespace → object name → bytes; pool/namespace/image → snapshot names. */
class FakeScanCluster {
  objects = new Map<string, Map<string, Map<string, Buffer>>>();
  snaps = new Map<string, string[]>();
  /** Object or image name → the errno reading or opening it fails with. */
  failing = new Map<string, number>();
  /** Listings of a pool's objects so far. */
  listings = 0;

  put(pool: string, ns: string, oid: string, data: Buffer): void {
    const p = this.objects.get(pool) ?? new Map();
    this.objects.set(pool, p);
    const n = p.get(ns) ?? new Map();
    p.set(ns, n);
    n.set(oid, data);
  }

  /** A backup as a destination leaves it: meta, base image snapshot, optionally a digest map. */
  backup(pool: string, ns: string, o: { snapshot?: boolean; digests?: Buffer; meta?: Buffer } = {}): string {
    const id = randomUUID();
    const base = `vol.backup.${id}`;
    const snap = backupSnapName(id, Date.UTC(2026, 11, 1));
    const meta = { version: 1, backup_id: id, volume: { id: "", metadata: {} }, image: { size: 1 << 20 } };
    this.put(
      pool,
      ns,
      `backup.${id}.meta`,
      o.meta ?? Buffer.from(JSON.stringify({ ...meta, chain: { base_image: base, snapshot: snap } })),
    );
    if (o.digests) this.put(pool, ns, `backup.${id}.digests`, o.digests);
    if (o.snapshot !== false) this.snaps.set(`${pool}/${ns}/${base}`, [snap]);
    return id;
  }

  asCluster(): Cluster {
    const fc = this;
    const io = (pool: string, namespace = "") => ({
      pool,
      namespace,
      async objListAllNamespaces(prefix: string) {
        fc.listings++;
        const out: Array<{ namespace: string; oid: string }> = [];
        for (const [ns, objs] of fc.objects.get(pool) ?? []) {
          for (const oid of objs.keys()) if (oid.startsWith(prefix)) out.push({ namespace: ns, oid });
        }
        return out.reverse(); // not sorted: the scan sorts
      },
      async objRead(oid: string) {
        const fail = fc.failing.get(oid);
        if (fail) throw new CephError(fail, "rados_read", oid, "failed");
        const b = fc.objects.get(pool)?.get(namespace)?.get(oid);
        if (!b) throw new CephError(ENOENT, "rados_read", oid, "no such object");
        return b;
      },
      async imageOpen(name: string) {
        const fail = fc.failing.get(name);
        if (fail) throw new CephError(fail, "rbd_open", name, "failed");
        const snaps = fc.snaps.get(`${pool}/${namespace}/${name}`);
        if (!snaps) throw new CephError(ENOENT, "rbd_open", name, "no such image");
        return { snapList: async () => snaps.map((s) => ({ name: s })), close: async () => {} };
      },
      async close() {},
    });
    return {
      poolList: async () => [...fc.objects.keys()],
      poolExists: async (p: string) => fc.objects.has(p),
      openIoCtx: async (pool: string, o: { namespace?: string } = {}) => io(pool, o.namespace ?? ""),
    } as unknown as Cluster;
  }
}

async function scanAll(c: Cluster, pools: string[], maxItems: number) {
  const pages = [];
  let cursor = "";
  do {
    const r = await scanBackups(c, "fsid-b", { pools, cursor, maxItems });
    pages.push(r.backups);
    cursor = r.nextCursor;
  } while (cursor && pages.length < 100);
  return pages;
}

describe("scan_backups (agent, fake cluster)", () => {
  it("pages over every pool and namespace, each meta exactly once, in (pool, namespace, id) order", async () => {
    const fc = new FakeScanCluster();
    const want: string[] = [];
    for (const pool of ["backups", "archive"])
      for (const ns of ["", "tenant-1"]) for (let i = 0; i < 3; i++) want.push(`${pool}/${ns}/${fc.backup(pool, ns)}`);
    fc.put("backups", "", "rbd_data.1234.0000", Buffer.from("data")); // not a meta
    fc.put("backups", "", "backup.not-a-uuid.meta", Buffer.from("{}"));
    const pages = await scanAll(fc.asCluster(), [], 5);
    assert.deepEqual(
      pages.map((p) => p.length),
      [5, 5, 2],
    );
    const got = pages.flat().map((s) => `${s.pool}/${s.namespace}/${s.backupId}`);
    assert.deepEqual(got, [...want].sort());
    for (const s of pages.flat()) {
      assert.equal(s.metaError, "");
      assert.equal(s.snapshotExists, true);
      assert.equal(s.digestsExists, false);
    }
  });

  it("reports a damaged meta, a missing snapshot, and a digest map's SHA-256 and block size (or why it is malformed)", async () => {
    const fc = new FakeScanCluster();
    const map = encodeDigestMap({
      blockSize: 65536,
      imageSize: 1 << 20,
      indices: new Uint32Array([0]),
      crcs: new Uint32Array([7]),
    });
    const good = fc.backup("backups", "", { digests: map });
    const damaged = fc.backup("backups", "", { meta: Buffer.from("garbage{") });
    const noSnap = fc.backup("backups", "", { snapshot: false, digests: Buffer.from("RBDDMAP1 short") });
    const [page] = await scanAll(fc.asCluster(), ["backups"], 0);
    const by = new Map((page ?? []).map((s) => [s.backupId, s]));
    assert.equal(by.get(good)?.digestsSha256, createHash("sha256").update(map).digest("hex"));
    assert.equal(by.get(good)?.digestBlockSize, 65536);
    assert.equal(by.get(damaged)?.metaError, `backup.${damaged}.meta is not valid JSON`);
    assert.equal(by.get(damaged)?.meta.toString(), "garbage{", "the raw bytes come back too");
    assert.equal(by.get(noSnap)?.snapshotExists, false);
    assert.equal(by.get(noSnap)?.digestsExists, true);
    assert.equal(by.get(noSnap)?.digestsSha256, "");
    assert.match(by.get(noSnap)?.digestsError ?? "", /digest map/);
  });

  it("one object or image that cannot be read is that backup's error, the scan goes on; a cluster that does not answer fails the page", async () => {
    const fc = new FakeScanCluster();
    const [eio, eperm, digests, fine] = [0, 1, 2, 3].map(() =>
      fc.backup("backups", "", {
        digests: encodeDigestMap({
          blockSize: 65536,
          imageSize: 1 << 20,
          indices: new Uint32Array(0),
          crcs: new Uint32Array(0),
        }),
      }),
    ) as [string, string, string, string];
    fc.failing.set(`backup.${eio}.meta`, 5); // EIO: a damaged placement group
    fc.failing.set(`vol.backup.${eperm}`, 5); // EIO opening its base image (a damaged header)
    fc.failing.set(`backup.${digests}.digests`, 5);
    const [page] = await scanAll(fc.asCluster(), ["backups"], 0);
    const by = new Map((page ?? []).map((s) => [s.backupId, s]));
    assert.equal(by.size, 4, "every backup reported");
    assert.match(by.get(eio)?.metaError ?? "", /^backup\.[0-9a-f-]+\.meta could not be read: .*EIO/);
    assert.match(by.get(eperm)?.metaError ?? "", /^its base image's snapshots could not be read: .*EIO/);
    assert.match(by.get(digests)?.digestsError ?? "", /\.digests could not be read: .*EIO/);
    assert.equal(by.get(digests)?.metaError, "");
    assert.equal(by.get(fine)?.metaError, "");
    assert.equal(by.get(fine)?.digestsError, "");
    fc.failing.set(`backup.${fine}.meta`, 110); // ETIMEDOUT: the cluster, not the object
    await assert.rejects(
      scanAll(fc.asCluster(), ["backups"], 0),
      (e: unknown) => (e as CephError).code === "ETIMEDOUT",
    );
    // EPERM is this agent's caps, for every image alike: the page fails, naming them.
    fc.failing.delete(`backup.${fine}.meta`);
    fc.failing.set(`vol.backup.${fine}`, 1);
    await assert.rejects(
      scanAll(fc.asCluster(), ["backups"], 0),
      (e: unknown) =>
        statusOf(e) === Status.FAILED_PRECONDITION && /caps need `profile rbd`/.test((e as Error).message),
    );
  });

  it("a page that ends at a pool's end keeps the next pool's listing; the cursor's pool is not listed again", async () => {
    const fc = new FakeScanCluster();
    const a = [fc.backup("a-pool", ""), fc.backup("a-pool", "")].sort();
    const b = [fc.backup("b-pool", ""), fc.backup("b-pool", "")].sort();
    const ahead = new PlacesAhead(() => 0);
    const c = fc.asCluster();
    // Two items a page: the first page ends with a-pool's last; the kept listing is b-pool's.
    const p1 = await scanBackups(c, "f", { pools: [], cursor: "", maxItems: 2 }, ahead);
    assert.deepEqual(
      p1.backups.map((s) => s.backupId),
      a,
    );
    assert.equal(fc.listings, 2, "a-pool, then b-pool's first meta showed the page full");
    const p2 = await scanBackups(c, "f", { pools: [], cursor: p1.nextCursor, maxItems: 2 }, ahead);
    assert.deepEqual(
      p2.backups.map((s) => s.backupId),
      b,
    );
    assert.equal(fc.listings, 2, "neither pool listed again");
  });

  it("a pool's listing is made once per scan: the page ending inside it keeps the rest for the next page's cursor", async () => {
    const fc = new FakeScanCluster();
    const ids = Array.from({ length: 7 }, () => fc.backup("backups", "")).sort();
    fc.backup("archive", "");
    let t = 0;
    const ahead = new PlacesAhead(() => t);
    const c = fc.asCluster();
    const seen: string[] = [];
    let cursor = "";
    const cursors: string[] = [];
    do {
      const r = await scanBackups(c, "f", { pools: ["backups"], cursor, maxItems: 3 }, ahead);
      seen.push(...r.backups.map((s) => s.backupId));
      cursor = r.nextCursor;
      if (cursor) cursors.push(cursor);
    } while (cursor);
    assert.deepEqual(seen, ids);
    assert.equal(fc.listings, 1, "three pages, one listing");
    // Another page's cursor (a retried page), or one kept too long, lists again — and pages the same.
    const again = await scanBackups(c, "f", { pools: ["backups"], cursor: cursors[0] as string, maxItems: 3 }, ahead);
    assert.equal(fc.listings, 2);
    assert.deepEqual(
      again.backups.map((s) => s.backupId),
      ids.slice(3, 6),
    );
    t += LISTING_KEPT_MS + 1;
    await scanBackups(c, "f", { pools: ["backups"], cursor: again.nextCursor, maxItems: 3 }, ahead);
    assert.equal(fc.listings, 3, "kept past LISTING_KEPT_MS: listed again");
  });

  it("a page stops before its meta bytes pass the budget", async () => {
    const fc = new FakeScanCluster();
    const big = Buffer.alloc(600 * 1024, 0x20);
    for (let i = 0; i < 5; i++) fc.backup("backups", "", { meta: big });
    const pages = await scanAll(fc.asCluster(), ["backups"], 1000);
    for (const p of pages) assert.ok(p.reduce((n, s) => n + s.meta.length, 0) <= PAGE_BYTES);
    assert.equal(pages.flat().length, 5);
  });

  it("refuses a cursor it did not make (INVALID_ARGUMENT) and a pool that does not exist (NOT_FOUND)", async () => {
    const c = new FakeScanCluster().asCluster();
    const bad = await scanBackups(c, "f", { pools: [], cursor: "bm90IGpzb24", maxItems: 0 }).catch((e) => e);
    assert.equal(statusOf(bad), Status.INVALID_ARGUMENT);
    const missing = await scanBackups(c, "f", { pools: ["nope"], cursor: "", maxItems: 0 }).catch((e) => e);
    assert.equal(statusOf(missing), Status.NOT_FOUND);
    const past = await scanBackups(c, "f", {
      pools: [],
      cursor: encodeScanCursor({ pool: "zzz", namespace: "", id: "x" }),
      maxItems: 0,
    });
    assert.deepEqual(past.backups, []);
    assert.equal(past.nextCursor, "");
  });
});
