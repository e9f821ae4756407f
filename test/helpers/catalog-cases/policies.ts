/**
 * Conformance: the PolicyStore (catalog.policies) — policies by name (UNIQUE on a taken name), pages,
 * protection records upserted, filtered and due, and deleting a policy takes its records with it.
 * (Moved from test/unit/coordinator/policy-store.test.ts, which keeps the SQLite reopen case.)
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { volumeKey } from "../../../src/coordinator/policy/model";
import type { Policy } from "../../../src/gen/rbdbackup/v1/policy";
import { type OpenCatalog, policy, protection, using, vol } from "./records";

export function policies(open: OpenCatalog): void {
  describe("policies", () => {
    it("policies and records: pages, filters, due, delete cascades", () =>
      using(open, (c) => {
        const p = c.policies;
        for (const n of ["c", "a", "b"]) p.insertPolicy(policy(n));
        assert.throws(() => p.insertPolicy(policy("a")), /UNIQUE/);
        p.upsertProtection(protection("a", vol("v1"), 100));
        p.upsertProtection(protection("a", vol("v2", "z"), 300));
        p.upsertProtection({ ...protection("b", vol("v1"), 200), missedRuns: 3 });
        p.upsertProtection({ ...protection("b", vol("v1"), 200), missedRuns: 4 });
        assert.deepEqual(p.getPolicy("a"), policy("a"));
        assert.equal(p.getPolicy("nope"), undefined);
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
          p.dueProtection(200).map((r) => [r.policy, r.volume.image]),
          [
            ["a", "v1"],
            ["b", "v1"],
          ],
        );
        assert.deepEqual(
          p.listProtection({ cluster: "z" }, 10, "").items.map((r) => r.volume.image),
          ["v2"],
        );
        const pg1 = p.listProtection({ policy: "a" }, 1, "");
        assert.notEqual(pg1.next, "");
        assert.deepEqual(
          [...pg1.items, ...p.listProtection({ policy: "a" }, 1, pg1.next).items].map((r) => r.volume.image),
          ["v1", "v2"],
        );
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
      }));

    it("allPolicies: an unchanged policy keeps its parse; an updated one is read anew", () =>
      using(open, (c) => {
        const p = c.policies;
        p.insertPolicy(policy("a"));
        p.insertPolicy(policy("b"));
        const [a1, b1] = p.allPolicies();
        const [a2] = p.allPolicies();
        assert.equal(a2, a1);
        p.updatePolicy({
          ...policy("b"),
          revision: 2,
          schedule: { ...policy("b").schedule, intervalSeconds: 120 },
        } as Policy);
        const [a3, b3] = p.allPolicies();
        assert.equal(a3, a1);
        assert.notEqual(b3, b1);
        assert.equal(b3?.schedule?.intervalSeconds, 120);
      }));
  });
}
