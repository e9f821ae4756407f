/**
 * Keyset paging on the SQLite catalog (the backups and jobs cases run with the conformance suite,
 * conformance-sqlite.test.ts): the policy and protection paging cases (test/helpers/catalog-cases/paging.ts,
 * not yet in the suite: PostgreSQL pages those by offset still); the paging key kept in the file (a token survives a reopen, another file
 * refuses it); every listing filter served by an index range in order, first page and deep (EXPLAIN
 * QUERY PLAN: no full scan, no sort).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import Database from "better-sqlite3";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import { backupListing, jobListing } from "../../../src/coordinator/catalog/sqlite-listings";
import type { BackupFilter, JobFilter } from "../../../src/coordinator/model";
import { BackupStatus, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { pagingBackup } from "../../helpers/catalog-cases/paging";

const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-paging-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("SQLite paging key", () => {
  it("is made once, kept in the file: a token survives a reopen; another catalog file refuses it", () => {
    const file = path.join(dir, "key.sqlite");
    let c = new SqliteCatalog(file);
    const key = c.pagingKey;
    assert.equal(key.length, 32);
    for (let i = 0; i < 5; i++) c.insertBackup(pagingBackup(Date.UTC(2026, 0, 1) + i));
    const first = c.listBackups({}, 2, "");
    c.close();
    c = new SqliteCatalog(file);
    try {
      assert.deepEqual(c.pagingKey, key);
      assert.equal(c.listBackups({}, 2, first.next).items.length, 2);
    } finally {
      c.close();
    }
    const other = new SqliteCatalog(path.join(dir, "other.sqlite"));
    try {
      assert.notDeepEqual(other.pagingKey, key);
      assert.throws(() => other.listBackups({}, 2, first.next), RangeError);
    } finally {
      other.close();
    }
  });
});

describe("page tokens are opaque", () => {
  it("a token does not show the item it names (a scoped client's filtered page must not leak the hidden last one)", () => {
    const c = new SqliteCatalog(path.join(dir, "opaque.sqlite"));
    try {
      const items = Array.from({ length: 3 }, (_, i) => pagingBackup(Date.UTC(2026, 0, 1) + i));
      for (const b of items) c.insertBackup(b);
      const page = c.listBackups({}, 1, "");
      const last = page.items[0];
      assert.ok(last && page.next);
      const shown = page.next
        .split(".")
        .map((p) => Buffer.from(p, "base64url").toString("latin1"))
        .join("");
      assert.ok(!shown.includes(last.id), "the id is not readable");
      assert.ok(!shown.includes(String(last.createdAt?.getTime())), "nor its time");
      assert.equal(c.listBackups({}, 1, page.next).items.length, 1, "and it still pages");
    } finally {
      c.close();
    }
  });
});

describe("SQLite listing plans", () => {
  const file = path.join(dir, "plans.sqlite");
  new SqliteCatalog(file).close();
  const after = { createdAt: Date.UTC(2026, 0, 1), id: "00000000-0000-4000-8000-000000000000" };
  const plan = (q: { sql: string; args: Record<string, unknown> }) => {
    const db = new Database(file, { readonly: true });
    try {
      return (db.prepare(`EXPLAIN QUERY PLAN ${q.sql}`).all(q.args) as { detail: string }[])
        .map((r) => r.detail)
        .join(" | ");
    } finally {
      db.close();
    }
  };
  const backupCases: Array<[string, BackupFilter, string]> = [
    ["no filter (all but DELETED)", { excludeDeleted: true }, "backups_live_by_created"],
    ["volume", { cluster: "a", pool: "rbd", image: "v", excludeDeleted: true }, "backups_by_volume"],
    ["cluster", { cluster: "a", excludeDeleted: true }, "backups_by_cluster"],
    ["cluster and image", { cluster: "a", image: "v", excludeDeleted: true }, "backups_by_cluster_image"],
    ["status", { statuses: [BackupStatus.BACKUP_STATUS_AVAILABLE] }, "backups_by_status"],
    ["location", { locationCluster: "b", excludeDeleted: true }, "backups_by_location"],
    ["policy", { policy: "nightly" }, "backups_by_policy"],
    ["volume id", { volumeId: "cinder-1", excludeDeleted: true }, "backups_by_volume_id"],
  ];
  const jobCases: Array<[string, JobFilter, string]> = [
    ["no filter", {}, "jobs_by_created"],
    ["state", { state: JobState.JOB_STATE_RUNNING }, "jobs_by_state"],
    ["kind", { kind: JobKind.JOB_KIND_DELETE }, "jobs_by_kind"],
    ["backup", { backupId: after.id }, "jobs_by_backup"],
  ];
  const check = (p: string, index: string) => {
    assert.match(p, new RegExp(`USING INDEX ${index}\\b`), p);
    assert.doesNotMatch(p, /TEMP B-TREE/, `sorted: ${p}`);
  };
  for (const [what, f, index] of backupCases)
    it(`backups by ${what}: ${index}, in order, a deep page seeks`, () => {
      check(plan(backupListing(f, 100)), index);
      const deep = plan(backupListing(f, 100, after));
      check(deep, index);
      assert.match(deep, /\(created_at,id\)<\(\?,\?\)/, deep);
    });
  for (const [what, f, index] of jobCases)
    it(`jobs by ${what}: ${index}, in order, a deep page seeks`, () => {
      check(plan(jobListing(f, 100)), index);
      const deep = plan(jobListing(f, 100, after));
      check(deep, index);
      assert.match(deep, /\(created_at,id\)<\(\?,\?\)/, deep);
    });
});
