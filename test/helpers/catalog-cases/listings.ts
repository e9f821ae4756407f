/**
 * Conformance: listBackups / listJobs filters and order (newest first), and paging through a listing
 * page by page gives every item once; a token that is not the catalog's is a RangeError.
 * (Keyset paging under concurrent inserts/deletes: paging.ts.)
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Catalog, Page } from "../../../src/coordinator/catalog/catalog";
import { BackupStatus, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { backup, job, type OpenCatalog, T0, using, vol } from "./records";

/** Every item of a listing, page by page. */
export function all<T>(list: (size: number, token: string) => Page<T>, size: number): T[] {
  const out: T[] = [];
  let token = "";
  for (let i = 0; i < 1000; i++) {
    const p = list(size, token);
    out.push(...p.items);
    if (!p.next) return out;
    token = p.next;
  }
  throw new Error("the listing never ended");
}

function fill(c: Catalog) {
  const A = BackupStatus.BACKUP_STATUS_AVAILABLE;
  const rows = [
    backup(vol("v1"), T0 + 1000, { status: A }),
    backup(vol("v1"), T0 + 2000, { status: BackupStatus.BACKUP_STATUS_DELETED }),
    backup(vol("v2"), T0 + 3000, { status: BackupStatus.BACKUP_STATUS_FAILED, policy: "p1" }),
    backup(vol("v1", "c"), T0 + 4000, { status: A, location: { cluster: "d", pool: "backups", namespace: "" } }),
    backup(vol("v1", "a", "other"), T0 + 5000, { status: A, policy: "p1" }),
  ];
  for (const b of rows) c.insertBackup(b);
  return rows;
}

export function listings(open: OpenCatalog): void {
  describe("listings", () => {
    it("listBackups: newest first; each filter", () =>
      using(open, (c) => {
        const [b1, b2, b3, b4, b5] = fill(c).map((b) => b.id);
        const ids = (f: Parameters<Catalog["listBackups"]>[0]) => c.listBackups(f, 100, "").items.map((b) => b.id);
        assert.deepEqual(ids({}), [b5, b4, b3, b2, b1]);
        assert.deepEqual(ids({ cluster: "a", pool: "rbd", image: "v1" }), [b2, b1]);
        assert.deepEqual(ids({ cluster: "c" }), [b4]);
        assert.deepEqual(ids({ pool: "other" }), [b5]);
        assert.deepEqual(ids({ volumeId: "vid-v2" }), [b3]);
        assert.deepEqual(ids({ locationCluster: "d" }), [b4]);
        assert.deepEqual(ids({ policy: "p1" }), [b5, b3]);
        assert.deepEqual(ids({ statuses: [BackupStatus.BACKUP_STATUS_AVAILABLE] }), [b5, b4, b1]);
        assert.deepEqual(ids({ statuses: [BackupStatus.BACKUP_STATUS_FAILED, BackupStatus.BACKUP_STATUS_DELETED] }), [
          b3,
          b2,
        ]);
        assert.deepEqual(ids({ excludeDeleted: true }), [b5, b4, b3, b1]);
        assert.deepEqual(ids({ cluster: "a", statuses: [BackupStatus.BACKUP_STATUS_AVAILABLE] }), [b5, b1]);
        assert.deepEqual(ids({ cluster: "nope" }), []);
      }));

    it("listBackups pages: every item once, in order; the last page has no token", () =>
      using(open, (c) => {
        const rows = fill(c);
        const want = rows.map((b) => b.id).reverse();
        for (const size of [1, 2, 4, 5, 6]) {
          assert.deepEqual(
            all((n, t) => c.listBackups({}, n, t), size).map((b) => b.id),
            want,
            `page size ${size}`,
          );
        }
        const first = c.listBackups({ cluster: "a" }, 2, "");
        assert.equal(first.items.length, 2);
        assert.notEqual(first.next, "");
        const last = c.listBackups({ cluster: "a" }, 2, first.next);
        assert.equal(last.items.length, 2);
        assert.equal(last.next, "");
      }));

    it("a token not made by the catalog is a RangeError", () =>
      using(open, (c) => {
        fill(c);
        for (const t of ["garbage", "Zm9v", "a.b", "x".repeat(600)]) {
          assert.throws(() => c.listBackups({}, 2, t), RangeError, t);
          assert.throws(() => c.listJobs({}, 2, t), RangeError, t);
        }
      }));

    it("listJobs: newest first; by state, kind, backup; pages", () =>
      using(open, (c) => {
        const j1 = job(T0 + 1, { backupId: "b1" });
        const j2 = job(T0 + 2, { state: JobState.JOB_STATE_RUNNING, backupId: "b1" });
        const j3 = job(T0 + 3, { kind: JobKind.JOB_KIND_RESTORE, state: JobState.JOB_STATE_SUCCEEDED });
        const j4 = job(T0 + 4, { kind: JobKind.JOB_KIND_DELETE });
        for (const j of [j1, j2, j3, j4]) c.insertJob(j);
        const ids = (f: Parameters<Catalog["listJobs"]>[0]) => c.listJobs(f, 100, "").items.map((j) => j.id);
        assert.deepEqual(ids({}), [j4.id, j3.id, j2.id, j1.id]);
        assert.deepEqual(ids({ state: JobState.JOB_STATE_QUEUED }), [j4.id, j1.id]);
        assert.deepEqual(ids({ kind: JobKind.JOB_KIND_RESTORE }), [j3.id]);
        assert.deepEqual(ids({ backupId: "b1" }), [j2.id, j1.id]);
        assert.deepEqual(ids({ state: JobState.JOB_STATE_QUEUED, kind: JobKind.JOB_KIND_BACKUP }), [j1.id]);
        assert.deepEqual(
          all((n, t) => c.listJobs({}, n, t), 3).map((j) => j.id),
          [j4.id, j3.id, j2.id, j1.id],
        );
      }));
  });
}
