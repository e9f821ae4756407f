/**
 * The catalog's in-memory index of AVAILABLE backups: kept in step by put(), and a volume whose last
 * AVAILABLE backup went leaves it (volumes of a cloud come and go; the index must not keep them all).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AvailableIndex } from "../../../src/coordinator/catalog/available-index";
import { BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";
import { newBackup, vol } from "./harness";

describe("AvailableIndex", () => {
  it("follows put(); a volume without AVAILABLE backups is dropped", () => {
    const idx = new AvailableIndex(() => []);
    assert.equal(idx.volumes, 0);
    const made = [];
    for (let i = 0; i < 50; i++) {
      const b = { ...newBackup(vol(`v${i}`), "b", 1000 + i), status: BackupStatus.BACKUP_STATUS_AVAILABLE };
      idx.put(b);
      made.push(b);
    }
    const second = {
      ...newBackup(vol("v0"), "b", 5000),
      status: BackupStatus.BACKUP_STATUS_AVAILABLE,
      completedAt: new Date(6000),
    };
    idx.put(second);
    assert.equal(idx.volumes, 50);
    assert.equal(idx.of("a", "rbd", "", "v0").length, 2);
    for (const b of made) idx.put({ ...b, status: BackupStatus.BACKUP_STATUS_DELETED });
    assert.equal(idx.volumes, 1, "only v0 still has an AVAILABLE backup");
    assert.deepEqual(
      idx.of("a", "rbd", "", "v0").map((b) => b.id),
      [second.id],
    );
    assert.deepEqual(
      idx.lastSuccessByVolume().map((v) => v.image),
      ["v0"],
    );
    idx.put({ ...second, status: BackupStatus.BACKUP_STATUS_DELETING });
    assert.equal(idx.volumes, 0);
    assert.deepEqual(idx.of("a", "rbd", "", "v0"), []);
  });
});
