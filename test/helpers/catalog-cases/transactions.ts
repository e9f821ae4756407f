/**
 * Conformance: `transaction` commits together, rolls back everything on a throw (and the AVAILABLE
 * view forgets what was undone), nested calls roll back only their own part when their throw is caught,
 * and returns f's value.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";
import { rolledBack } from "../rollback";
import { backup, job, type OpenCatalog, policy, T0, using, vol } from "./records";

export function transactions(open: OpenCatalog): void {
  describe("transactions", () => {
    it("commit: every write is there, f's value is returned", () =>
      using(open, (c) => {
        const b = backup(vol("v1"), T0);
        const j = job(T0);
        const r = c.transaction(() => {
          c.insertBackup(b);
          c.insertJob(j);
          c.policies.insertPolicy(policy("p"));
          return 7;
        });
        assert.equal(r, 7);
        assert.equal(c.getBackup(b.id)?.id, b.id);
        assert.equal(c.getJob(j.id)?.id, j.id);
        assert.equal(c.policies.getPolicy("p")?.name, "p");
      }));

    it("a throw rolls every write back, the AVAILABLE view too", () =>
      using(open, (c) => {
        const kept = backup(vol("v1"), T0);
        c.insertBackup(kept);
        assert.equal(c.availableBackupsOfVolume("a", "rbd", "", "v1").length, 1);
        const b = backup(vol("v1"), T0 + 1000);
        const j = job(T0);
        assert.throws(
          () =>
            c.transaction(() => {
              c.insertBackup(b);
              c.updateBackup({ ...kept, status: BackupStatus.BACKUP_STATUS_DELETED });
              c.insertJob(j);
              c.policies.insertPolicy(policy("p"));
              assert.equal(c.availableBackupsOfVolume("a", "rbd", "", "v1").length, 1, "inside: b in, kept out");
              throw new Error("boom");
            }),
          /boom/,
        );
        assert.equal(c.getBackup(b.id), undefined);
        assert.equal(c.getBackup(kept.id)?.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
        assert.equal(c.getJob(j.id), undefined);
        assert.equal(c.policies.getPolicy("p"), undefined);
        assert.deepEqual(
          c.availableBackupsOfVolume("a", "rbd", "", "v1").map((x) => x.id),
          [kept.id],
        );
      }));

    it("nested: a caught throw undoes the inner part only; the outer commits", () =>
      using(open, (c) => {
        const outer = job(T0);
        const inner = job(T0 + 1);
        c.transaction(() => {
          c.insertJob(outer);
          rolledBack(c, () => {
            c.insertJob(inner);
          });
          c.transaction(() => c.policies.insertPolicy(policy("kept")));
        });
        assert.equal(c.getJob(outer.id)?.id, outer.id);
        assert.equal(c.getJob(inner.id), undefined);
        assert.equal(c.policies.getPolicy("kept")?.name, "kept");
      }));

    it("a UNIQUE error inside a transaction rolls it back and is seen outside", () =>
      using(open, (c) => {
        c.insertJob(job(T0, { idempotencyKey: "k" }));
        const b = backup(vol("v1"), T0);
        assert.throws(
          () =>
            c.transaction(() => {
              c.insertBackup(b);
              c.insertJob(job(T0 + 1, { idempotencyKey: "k" }));
            }),
          /UNIQUE/,
        );
        assert.equal(c.getBackup(b.id), undefined);
        // The catalog is usable afterwards.
        c.insertJob(job(T0 + 2, { idempotencyKey: "k2" }));
        assert.ok(c.jobByIdempotencyKey("k2"));
      }));
  });
}
