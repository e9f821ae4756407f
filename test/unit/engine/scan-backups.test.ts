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
import { encodeScanCursor, PAGE_BYTES, scanBackups } from "../../../agents/engine/scan-backups";
import { encodeDigestMap } from "../../../agents/transfer/digests";
import { statusOf } from "../../../src/common/errors";
import { backupSnapName } from "../../../src/common/ids";

const ENOENT = 2;

/** pool → namespace → object name → bytes; pool/namespace/image → snapshot names. */
class FakeScanCluster {
  objects = new Map<string, Map<string, Map<string, Buffer>>>();
  snaps = new Map<string, string[]>();

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
        const out: Array<{ namespace: string; oid: string }> = [];
        for (const [ns, objs] of fc.objects.get(pool) ?? []) {
          for (const oid of objs.keys()) if (oid.startsWith(prefix)) out.push({ namespace: ns, oid });
        }
        return out.reverse(); // not sorted: the scan sorts
      },
      async objRead(oid: string) {
        const b = fc.objects.get(pool)?.get(namespace)?.get(oid);
        if (!b) throw new CephError(ENOENT, "rados_read", oid, "no such object");
        return b;
      },
      async imageOpen(name: string) {
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
