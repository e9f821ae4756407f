/**
 * The recovery point the API and the metrics share: the newest AVAILABLE backup at the policy's
 * destination, whoever made it; other places and other states never count.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import { recoveryPoint } from "../../../src/coordinator/policy/recovery-point";
import { BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";
import { Policy } from "../../../src/gen/rbdbackup/v1/policy";
import { newBackup, vol } from "../coordinator/harness";

describe("recoveryPoint", () => {
  it("is the newest available backup at the destination, a manual one included", () => {
    const catalog = new SqliteCatalog(":memory:");
    try {
      const p = Policy.fromPartial({ name: "p", destination: { cluster: "b", pool: "backups" } });
      const v = vol("v1");
      const t = Date.UTC(2026, 0, 1);
      const at = (b: ReturnType<typeof newBackup>, status: BackupStatus, pool = "backups") => {
        b.status = status;
        if (b.location) b.location.pool = pool;
        b.completedAt = new Date(b.createdAt?.getTime() ?? 0);
        catalog.insertBackup(b);
        return b;
      };
      assert.equal(recoveryPoint(catalog, p, v), undefined, "no backup: no recovery point");
      const older = at(newBackup(v, "b", t), BackupStatus.BACKUP_STATUS_AVAILABLE);
      const manual = at(newBackup(v, "b", t + 60_000), BackupStatus.BACKUP_STATUS_AVAILABLE);
      at(newBackup(v, "b", t + 120_000), BackupStatus.BACKUP_STATUS_FAILED);
      at(newBackup(v, "b", t + 180_000), BackupStatus.BACKUP_STATUS_AVAILABLE, "elsewhere");
      at(newBackup(v, "a", t + 240_000), BackupStatus.BACKUP_STATUS_AVAILABLE);
      at(newBackup(vol("v2"), "b", t + 300_000), BackupStatus.BACKUP_STATUS_AVAILABLE);
      assert.deepEqual(recoveryPoint(catalog, p, v), { id: manual.id, at: t + 60_000, completedAt: t + 60_000 });
      const anyPool = Policy.fromPartial({ name: "q", destination: { cluster: "b" } });
      assert.equal(
        recoveryPoint(catalog, anyPool, v, () => "")?.at,
        t + 180_000,
        "no pool named and the cluster's default not known: any pool",
      );
      assert.equal(
        recoveryPoint(catalog, anyPool, v, (c) => (c === "b" ? "backups" : ""))?.at,
        t + 60_000,
        "no pool named: the cluster's default backup pool, not another pool's newer backup",
      );
      assert.notEqual(older.id, manual.id);
    } finally {
      catalog.close();
    }
  });
});
