/**
 * RebuildCatalog through the real API handlers, without Ceph: a fake agent of the backup cluster
 * answers scan_backups page by page from a list of meta objects. Checks paging, dry run, the writes,
 * a second rebuild (all present), validation and the statuses for a cluster without a connected agent.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { ScannedBackup } from "../../../src/gen/rbdbackup/v1/session";
import { type Answer, type FakeAgentSession, fsidOf } from "../../helpers/fake-agent";
import { type Api, type ApiServer, assertStatus, serveHarness } from "./api-server";
import { Harness } from "./harness";
import { chain, type Meta, scanned } from "./rebuild-fixtures";

/** Answers scan_backups from `items`, `pageSize` per page; the cursor is the index reached. */
function scanAnswer(items: () => ScannedBackup[], pageSize: number, calls: string[]) {
  return (req: CallRequest): Answer => {
    if (req.$case !== "scanBackups") return new AppError(Status.UNIMPLEMENTED, req.$case);
    calls.push(req.value.cursor);
    const from = req.value.cursor ? Number(req.value.cursor) : 0;
    const list = items().filter((s) => req.value.pools.length === 0 || req.value.pools.includes(s.pool));
    const page = list.slice(from, from + pageSize);
    const next = from + pageSize < list.length ? String(from + pageSize) : "";
    return { $case: "scanBackups", value: { clusterFsid: fsidOf("b"), backups: page, nextCursor: next } };
  };
}

describe("RebuildCatalog (API, fake agents)", () => {
  let h: Harness;
  let served: ApiServer;
  let api: Api;
  const calls: string[] = [];
  let metas: Meta[] = [];
  let items: ScannedBackup[] = [];
  let b1: FakeAgentSession;

  before(async () => {
    h = new Harness();
    h.scheduler.stop();
    served = await serveHarness(h);
    api = served.api;
    h.connect("a1", "a");
    b1 = h.connect("b1", "b");
    b1.answer = scanAnswer(() => items, 2, calls);
    h.catalog.upsertAgent({ ...(h.sessions.get("a1")?.info ?? ({} as never)), agentId: "z1", clusterName: "z" });
    // Two volumes of cluster "a": vol1 full + 2 incrementals, vol2 full + 1; one damaged meta.
    metas = [...chain(2, "vol1"), ...chain(1, "vol2")].map((m) => ({
      ...m,
      source: { ...m.source, cluster_fsid: fsidOf("a") },
    }));
    items = [...metas.map((m) => scanned(m)), scanned({ raw: "not json", id: "0b1d0000-0000-4000-8000-000000000000" })];
  });
  after(async () => {
    await served.close();
    h.close();
  });

  it("dry run: reports what would be imported, pages the scan, writes nothing", async () => {
    calls.length = 0;
    const r = await api.rebuildCatalog({ cluster: "b", pools: [], dryRun: true });
    assert.deepEqual(calls, ["", "2", "4"], "three pages of two");
    assert.equal(r.found, 6);
    assert.equal(r.imported.length, 5);
    assert.equal(r.present.length, 0);
    assert.equal(r.skipped.length, 1);
    assert.match(r.skipped[0]?.reason ?? "", /^meta object does not parse: not JSON/);
    assert.equal(r.volumes, 2);
    for (const m of metas) assert.equal(h.catalog.getBackup(m.backup_id), undefined, "dry run wrote nothing");
  });

  it("rebuild: every parsed backup AVAILABLE in the catalog with its chain; the damaged one not", async () => {
    const r = await api.rebuildCatalog({ cluster: "b", pools: [], dryRun: false });
    assert.equal(r.imported.length, 5);
    assert.equal(r.skipped.length, 1);
    for (const m of metas) {
      const b = h.catalog.getBackup(m.backup_id);
      assert.equal(b?.status, BackupStatus.BACKUP_STATUS_AVAILABLE, m.backup_id);
      assert.equal(b?.volume?.cluster, "a");
      assert.equal(b?.location?.cluster, "b");
      assert.equal(b?.parentSnapshot, m.chain.parent_snapshot ?? "");
    }
    assert.equal(h.catalog.getBackup("0b1d0000-0000-4000-8000-000000000000"), undefined);
    const vol1 = h.catalog.availableBackupsOfVolume("a", "rbd", "", "vol1");
    assert.equal(vol1.length, 3, "the chain is what the scheduler sees for the next incremental");
    const got = await api.getBackup({ backupId: metas[2]?.backup_id ?? "" });
    assert.equal(got.incremental, true);
  });

  it("a second rebuild reports everything present and writes nothing", async () => {
    const r = await api.rebuildCatalog({ cluster: "b", pools: [], dryRun: false });
    assert.equal(r.imported.length, 0);
    assert.equal(r.present.length, 5);
    assert.equal(r.skipped.length, 1);
    assert.equal(r.volumes, 2);
  });

  it("the pools asked for are passed to the agent", async () => {
    calls.length = 0;
    const r = await api.rebuildCatalog({ cluster: "b", pools: ["elsewhere"], dryRun: true });
    assert.equal(r.found, 0);
    assert.deepEqual(calls, [""]);
  });

  it("bad requests: INVALID_ARGUMENT naming the field; unknown cluster NOT_FOUND; no agent connected UNAVAILABLE", async () => {
    await assertStatus(
      api.rebuildCatalog({ cluster: "", pools: [], dryRun: true }),
      Status.INVALID_ARGUMENT,
      /cluster is required/,
    );
    await assertStatus(
      api.rebuildCatalog({ cluster: "b", pools: ["ok", "bad/pool"], dryRun: true }),
      Status.INVALID_ARGUMENT,
      /pools\[1\] "bad\/pool" is not a valid name/,
    );
    await assertStatus(
      api.rebuildCatalog({ cluster: "nowhere", pools: [], dryRun: true }),
      Status.NOT_FOUND,
      /cluster nowhere is unknown/,
    );
    await assertStatus(
      api.rebuildCatalog({ cluster: "z", pools: [], dryRun: true }),
      Status.UNAVAILABLE,
      /no agent of cluster z is connected/,
    );
  });

  it("an agent failure is the call's status; a cursor that does not move is INTERNAL", async () => {
    const answer = b1.answer;
    try {
      b1.answer = () => new AppError(Status.NOT_FOUND, "pool x not found");
      await assertStatus(
        api.rebuildCatalog({ cluster: "b", pools: ["x"], dryRun: true }),
        Status.NOT_FOUND,
        /pool x not found/,
      );
      b1.answer = () => ({
        $case: "scanBackups",
        value: { clusterFsid: fsidOf("b"), backups: [], nextCursor: "same" },
      });
      await assertStatus(
        api.rebuildCatalog({ cluster: "b", pools: [], dryRun: true }),
        Status.INTERNAL,
        /same scan cursor twice/,
      );
    } finally {
      b1.answer = answer;
    }
  });
});
