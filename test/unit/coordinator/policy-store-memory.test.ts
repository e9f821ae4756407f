/**
 * What the SQLite policy store keeps in memory for the runners' ticks and the metrics scrape
 * (sqlite-policies.ts): allPolicies' answer while no policy is written, dropped by writes and by a
 * rolled-back transaction; protection records parsed once per document, handed out as copies.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import { volumeKey } from "../../../src/coordinator/policy/model";
import { newRecord } from "../../../src/coordinator/policy/slots";
import { Policy } from "../../../src/gen/rbdbackup/v1/policy";
import { vol } from "./harness";

const T = Date.UTC(2026, 11, 1);

const policy = (name: string, description = "") =>
  Policy.fromPartial({
    name,
    description,
    selector: { volumes: [vol("v1"), vol("v2")] },
    destination: { cluster: "b", pool: "backups", namespace: "" },
    schedule: { intervalSeconds: 3600 },
    retention: { keepLast: 2 },
  });

/** The policies as their rows hold them (one by one, through getPolicy), by name. */
const fromRows = (c: SqliteCatalog) =>
  c.policies
    .listPolicies(1000, "")
    .items.map((p) => p.name)
    .map((n) => c.policies.getPolicy(n));

describe("the SQLite policy store's memory", () => {
  it("allPolicies answers as the rows do through inserts, updates, deletes and rollbacks", () => {
    const c = new SqliteCatalog(":memory:");
    try {
      const s = c.policies;
      assert.deepEqual(s.allPolicies(), []);
      s.insertPolicy(policy("b"));
      s.insertPolicy(policy("a"));
      assert.deepEqual(s.allPolicies(), fromRows(c));
      assert.deepEqual(
        s.allPolicies().map((p) => p.name),
        ["a", "b"],
      );
      const first = s.allPolicies();
      assert.equal(s.allPolicies()[0], first[0], "unchanged: the same parsed policy");
      first.pop(); // the array is the caller's
      assert.equal(s.allPolicies().length, 2);

      s.updatePolicy(policy("a", "changed"));
      assert.equal(s.allPolicies()[0]?.description, "changed");
      assert.deepEqual(s.allPolicies(), fromRows(c));

      assert.throws(() =>
        c.transaction(() => {
          s.insertPolicy(policy("c"));
          s.updatePolicy(policy("b", "in a rolled-back transaction"));
          assert.equal(s.allPolicies().length, 3, "seen inside the transaction");
          throw new Error("rolled back");
        }),
      );
      assert.deepEqual(s.allPolicies(), fromRows(c), "the rollback is undone in memory too");
      assert.deepEqual(
        s.allPolicies().map((p) => [p.name, p.description]),
        [
          ["a", "changed"],
          ["b", ""],
        ],
      );

      s.deletePolicy("a");
      assert.deepEqual(
        s.allPolicies().map((p) => p.name),
        ["b"],
      );
      assert.deepEqual(s.allPolicies(), fromRows(c));
    } finally {
      c.close();
    }
  });

  it("protectionOfPolicy hands out copies and follows upserts, deletes and rollbacks", () => {
    const c = new SqliteCatalog(":memory:");
    try {
      const s = c.policies;
      const p = policy("gold");
      s.insertPolicy(p);
      const r1 = newRecord(p, vol("v1"), "explicit", T);
      const r2 = newRecord(p, vol("v2"), "explicit", T);
      s.upsertProtection(r1);
      s.upsertProtection(r2);
      const got = s.protectionOfPolicy("gold");
      assert.deepEqual(got, [r1, r2]);
      (got[0] as (typeof got)[0]).lastError = "changed by a reader";
      (got[0] as (typeof got)[0]).volume.image = "changed";
      assert.deepEqual(s.protectionOfPolicy("gold"), [r1, r2], "a reader's change is not kept");

      s.upsertProtection({ ...r1, missedRuns: 3 });
      assert.equal(s.protectionOfPolicy("gold")[0]?.missedRuns, 3);
      assert.throws(() =>
        c.transaction(() => {
          s.upsertProtection({ ...r2, consecutiveFailures: 9 });
          s.deleteProtection("gold", volumeKey(r1.volume));
          assert.deepEqual(
            s.protectionOfPolicy("gold").map((r) => r.consecutiveFailures),
            [9],
          );
          throw new Error("rolled back");
        }),
      );
      assert.deepEqual(s.protectionOfPolicy("gold"), [{ ...r1, missedRuns: 3 }, r2]);
      s.deletePolicy("gold");
      assert.deepEqual(s.protectionOfPolicy("gold"), []);
    } finally {
      c.close();
    }
  });
});
