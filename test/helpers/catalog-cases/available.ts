/**
 * Conformance: availableBackupsOfVolume and lastSuccessByVolume follow inserts and updates (a backup
 * becoming AVAILABLE, leaving it, a clone added), oldest first.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";
import { backup, type OpenCatalog, T0, using, vol } from "./records";

export function available(open: OpenCatalog): void {
  describe("AVAILABLE backups of a volume", () => {
    it("follows inserts and updates; oldest first; last success per volume", () =>
      using(open, (c) => {
        const v = vol("v1");
        const ids = () => c.availableBackupsOfVolume("a", "rbd", "", "v1").map((b) => b.id);
        assert.deepEqual(ids(), []);
        const b2 = backup(v, T0 + 2000, { policy: "p" });
        const b1 = backup(v, T0 + 1000);
        const creating = backup(v, T0 + 3000, { status: BackupStatus.BACKUP_STATUS_CREATING, completedAt: undefined });
        const elsewhere = backup(vol("v2"), T0 + 500, { completedAt: new Date(T0 + 9000) });
        for (const b of [b2, b1, creating, elsewhere]) c.insertBackup(b);
        assert.deepEqual(ids(), [b1.id, b2.id]);
        const [first, second] = c.availableBackupsOfVolume("a", "rbd", "", "v1");
        assert.deepEqual(first, {
          id: b1.id,
          location: { cluster: "b", pool: "backups", namespace: "" },
          createdAt: T0 + 1000,
          completedAt: T0 + 2000,
          policy: "",
          clones: 0,
        });
        assert.equal(second?.policy, "p");

        c.updateBackup({ ...creating, status: BackupStatus.BACKUP_STATUS_AVAILABLE, completedAt: new Date(T0 + 8000) });
        c.updateBackup({ ...b1, status: BackupStatus.BACKUP_STATUS_DELETING });
        c.updateBackup({ ...b2, clones: [{ cluster: "a", pool: "rbd", namespace: "", image: "clone" }] } as typeof b2);
        assert.deepEqual(ids(), [b2.id, creating.id]);
        assert.equal(c.availableBackupsOfVolume("a", "rbd", "", "v1")[0]?.clones, 1);
        assert.deepEqual(c.availableBackupsOfVolume("a", "rbd", "", "nope"), []);

        const last = c
          .lastSuccessByVolume()
          .map((x) => [x.image, x.at])
          .sort();
        assert.deepEqual(last, [
          ["v1", T0 + 8000],
          ["v2", T0 + 9000],
        ]);
      }));

    it("a backup written before the first read is seen", () =>
      using(open, (c) => {
        c.insertBackup(backup(vol("v1"), T0));
        assert.equal(c.availableBackupsOfVolume("a", "rbd", "", "v1").length, 1);
      }));
  });
}
