/**
 * The SQLite PolicyStore: policies and protection records survive a reopen of the catalog file, list by
 * name / (policy, volume) in pages with the catalog's tokens (a forged token is a RangeError), filter,
 * and deleting a policy takes its protection records with it. The store's interface cases for both
 * stores (allPolicies' kept parses too) are in test/helpers/catalog-cases/policies.ts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import Database from "better-sqlite3";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import { DUE_PROTECTION_SQL } from "../../../src/coordinator/catalog/sqlite-policies";
import { volumeKey } from "../../../src/coordinator/policy/model";
import { policy, protection, vol } from "../../helpers/catalog-cases/records";
import { rolledBack } from "../../helpers/rollback";

const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-policy-store-"));

describe("SqlitePolicyStore", () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("keeps policies and records across a reopen; pages; filters; delete cascades", () => {
    const file = path.join(dir, "catalog.sqlite");
    let c = new SqliteCatalog(file);
    for (const n of ["c", "a", "b"]) c.policies.insertPolicy(policy(n));
    assert.throws(() => c.policies.insertPolicy(policy("a")), /UNIQUE/);
    c.policies.upsertProtection(protection("a", vol("v1")));
    c.policies.upsertProtection(protection("a", vol("v2", "z")));
    c.policies.upsertProtection({ ...protection("b", vol("v1")), missedRuns: 3 });
    c.policies.upsertProtection({ ...protection("b", vol("v1")), missedRuns: 4 });
    c.close();

    c = new SqliteCatalog(file);
    const p = c.policies;
    assert.deepEqual(p.getPolicy("a"), policy("a"));
    const first = p.listPolicies(2, "");
    assert.deepEqual(
      first.items.map((x) => x.name),
      ["a", "b"],
    );
    assert.deepEqual(
      p.listPolicies(2, first.next).items.map((x) => x.name),
      ["c"],
    );
    assert.throws(() => p.listPolicies(2, "garbage"), RangeError);
    assert.equal(p.getProtection("b", volumeKey(vol("v1")))?.missedRuns, 4);
    assert.deepEqual(
      p.protectionOfVolume(volumeKey(vol("v1"))).map((r) => r.policy),
      ["a", "b"],
    );
    assert.deepEqual(
      p.listProtection({ cluster: "z" }, 10, "").items.map((r) => r.volume.image),
      ["v2"],
    );
    assert.equal(p.listProtection({ policy: "a" }, 1, "").next !== "", true);
    p.updatePolicy({ ...policy("a"), revision: 2 });
    assert.equal(p.getPolicy("a")?.revision, 2);
    assert.throws(() => p.updatePolicy(policy("nope")), /not in the catalog/);
    p.deletePolicy("a");
    assert.equal(p.getPolicy("a"), undefined);
    assert.deepEqual(p.protectionOfPolicy("a"), []);
    assert.equal(p.protectionOfPolicy("b").length, 1);
    p.deleteProtection("b", volumeKey(vol("v1")));
    assert.deepEqual(
      p.allPolicies().map((x) => x.name),
      ["b", "c"],
    );
    assert.equal(p.protectionOfPolicy("b").length, 0);
    c.close();
  });

  it("finds the due records through the next_run_at index (no scan of every record), by (policy, volume)", () => {
    const file = path.join(dir, "due.sqlite");
    const c = new SqliteCatalog(file);
    const now = 1_000_000;
    // 1,000 records, three of them due (in an order the answer must not keep).
    for (let i = 0; i < 1000; i++) {
      const due = i === 700 || i === 5 || i === 300;
      c.policies.upsertProtection({
        ...protection(`p${i % 3}`, vol(`v${String(i).padStart(4, "0")}`)),
        nextRunAt: due ? now - i : now + 1 + i,
      });
    }
    assert.deepEqual(
      c.policies.dueProtection(now).map((r) => `${r.policy}/${r.volume.image}`),
      ["p0/v0300", "p1/v0700", "p2/v0005"],
    );
    const db = new Database(file, { readonly: true });
    const plan = (db.prepare(`EXPLAIN QUERY PLAN ${DUE_PROTECTION_SQL}`).all(now) as { detail: string }[]).map(
      (r) => r.detail,
    );
    db.close();
    assert.ok(
      plan.some((d) => /SEARCH protection USING INDEX protection_due/.test(d)),
      plan.join("; "),
    );
    assert.ok(!plan.some((d) => /^SCAN protection/.test(d)), plan.join("; "));
    c.close();
  });

  it("answers protectionOfPolicy as the rows do through writes, deletes and a rolled-back transaction", () => {
    const c = new SqliteCatalog(path.join(dir, "kept.sqlite"));
    const p = c.policies;
    const rows = () => p.listProtection({ policy: "a" }, 1000, "").items;
    const inStep = (what: string) => assert.deepEqual(p.protectionOfPolicy("a"), rows(), what);
    p.upsertProtection(protection("a", vol("v1")));
    p.upsertProtection(protection("b", vol("v1")));
    inStep("first read");
    p.upsertProtection({ ...protection("a", vol("v1")), missedRuns: 7 });
    inStep("after an update");
    p.upsertProtection(protection("a", vol("v2")));
    inStep("after an insert");
    rolledBack(c, () => {
      p.upsertProtection({ ...protection("a", vol("v1")), missedRuns: 9 });
      p.deleteProtection("a", volumeKey(vol("v2")));
      assert.equal(p.protectionOfPolicy("a").length, 1, "the transaction sees its own writes");
    });
    inStep("after a rollback");
    assert.equal(p.protectionOfPolicy("a")[0]?.missedRuns, 7);
    // What a caller changes in what it read is not what the next caller reads.
    const mine = p.protectionOfPolicy("a");
    (mine[0] as { missedRuns: number }).missedRuns = 100;
    inStep("after a caller changed its copy");
    p.deleteProtection("a", volumeKey(vol("v1")));
    inStep("after a delete");
    c.policies.insertPolicy(policy("a"));
    p.deletePolicy("a");
    assert.deepEqual(p.protectionOfPolicy("a"), []);
    assert.equal(p.protectionOfPolicy("b").length, 1);
    c.close();
  });
});
