/**
 * Conformance: what `getBackup` and `backupsOfVolume` hand out is a fresh record each time, equal to the
 * row as last written (a store that ever caches parses must keep this): editing an answer (nested messages, arrays, the metadata map, Dates in
 * place) changes nothing stored, an update is seen at once, and a rolled-back update is not.
 * `backupInUse(id)` (retention's pin) follows the QUEUED and RUNNING jobs of a backup through
 * inserts, updates, a rollback and a second job on the same backup.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Catalog } from "../../../src/coordinator/catalog/catalog";
import type { Backup } from "../../../src/coordinator/model";
import { BackupStatus, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { rolledBack } from "../rollback";
import { backup, job, type OpenCatalog, T0, using, vol } from "./records";

/** Edits every part of a record in place (what a caller that writes it back might do). */
function scribble(b: Backup): void {
  b.status = BackupStatus.BACKUP_STATUS_CORRUPT;
  if (b.location) b.location.pool = "scribbled";
  if (b.volume) b.volume.image = "scribbled";
  b.volumeMetadata.k = "scribbled";
  b.warnings.push("scribbled");
  b.clones.push(vol("scribbled"));
  b.createdAt?.setTime(0);
  b.completedAt?.setTime(0);
  if (b.integrity) {
    b.integrity.imageDigest = "scribbled";
    b.integrity.lastVerifiedAt?.setTime(0);
  }
}

const inTransaction = (c: Catalog, f: () => void) =>
  rolledBack(c, () => {
    f();
  });

export function backupReads(open: OpenCatalog): void {
  describe("backup reads", () => {
    it("getBackup and backupsOfVolume: fresh records, updates seen at once, rollbacks not", () =>
      using(open, (c) => {
        const b = backup(vol("v1"), T0, {
          volumeMetadata: { k: "v" },
          warnings: ["w"],
          integrity: {
            imageDigest: "d1",
            digestBlockSize: 4096,
            lastVerifiedAt: new Date(T0 + 5000),
            lastVerifyMode: 1,
            lastVerifyOk: true,
            corruptReason: "",
            firstBadOffset: 0,
            firstBadLength: 0,
          },
        });
        c.insertBackup(b);
        const want = structuredClone(b);
        for (let i = 0; i < 3; i++) {
          const got = c.getBackup(b.id);
          assert.deepEqual(got, want);
          if (got) scribble(got);
          const [listed] = c.backupsOfVolume("a", "rbd", "", "v1");
          assert.deepEqual(listed, want);
          if (listed) scribble(listed);
        }
        const next = { ...structuredClone(want), status: BackupStatus.BACKUP_STATUS_DELETING, warnings: ["w2"] };
        c.updateBackup(next);
        assert.deepEqual(c.getBackup(b.id), next);
        assert.deepEqual(c.backupsOfVolume("a", "rbd", "", "v1"), [next]);
        inTransaction(c, () => {
          c.updateBackup({ ...structuredClone(next), status: BackupStatus.BACKUP_STATUS_DELETED });
          assert.equal(c.getBackup(b.id)?.status, BackupStatus.BACKUP_STATUS_DELETED);
        });
        assert.deepEqual(c.getBackup(b.id), next);
        assert.deepEqual(c.backupsOfVolume("a", "rbd", "", "v1"), [next]);
        inTransaction(c, () => c.insertBackup(backup(vol("v1"), T0 + 1)));
        assert.equal(c.backupsOfVolume("a", "rbd", "", "v1").length, 1);
        assert.equal(c.getBackup("00000000-0000-4000-8000-000000000000"), undefined);
      }));

    it("backupsOfVolume with a status: only that status's backups of the volume, oldest first", () =>
      using(open, (c) => {
        const S = BackupStatus;
        const mk = (at: number, status: BackupStatus, image = "v1") => {
          const b = backup(vol(image), T0 + at, { status });
          c.insertBackup(b);
          return b;
        };
        const late = mk(30, S.BACKUP_STATUS_CORRUPT);
        mk(10, S.BACKUP_STATUS_AVAILABLE);
        const early = mk(5, S.BACKUP_STATUS_CORRUPT);
        mk(20, S.BACKUP_STATUS_DELETED);
        mk(1, S.BACKUP_STATUS_CORRUPT, "v2");
        const corrupt = c.backupsOfVolume("a", "rbd", "", "v1", S.BACKUP_STATUS_CORRUPT);
        assert.deepEqual(
          corrupt.map((b) => b.id),
          [early.id, late.id],
        );
        assert.equal(c.backupsOfVolume("a", "rbd", "", "v1").length, 4);
        assert.equal(c.backupsOfVolume("a", "rbd", "", "v1", S.BACKUP_STATUS_DELETED).length, 1);
        assert.deepEqual(c.backupsOfVolume("a", "rbd", "", "v1", S.BACKUP_STATUS_FAILED), []);
        // Several statuses: those rows only, oldest first; none named is every status.
        const several = c.backupsOfVolume("a", "rbd", "", "v1", [S.BACKUP_STATUS_AVAILABLE, S.BACKUP_STATUS_CORRUPT]);
        assert.deepEqual(
          several.map((b) => b.createdAt?.getTime()),
          [T0 + 5, T0 + 10, T0 + 30],
        );
        assert.equal(c.backupsOfVolume("a", "rbd", "", "v1", []).length, 4);
        assert.deepEqual(c.backupsOfVolume("a", "rbd", "", "v2", [S.BACKUP_STATUS_AVAILABLE]), []);
      }));

    it("backupInUse: while a QUEUED or RUNNING job names the backup, through a rollback", () =>
      using(open, (c) => {
        const b = backup(vol("v1"), T0);
        c.insertBackup(b);
        assert.equal(c.backupInUse(b.id), false);
        const j = job(T0, { backupId: b.id });
        c.insertJob(j);
        assert.equal(c.backupInUse(b.id), true);
        const other = job(T0 + 1, { backupId: b.id, kind: JobKind.JOB_KIND_RESTORE });
        c.insertJob(other);
        c.updateJob({ ...j, state: JobState.JOB_STATE_RUNNING, attempts: 1 });
        assert.equal(c.backupInUse(b.id), true);
        c.updateJob({ ...j, state: JobState.JOB_STATE_SUCCEEDED, attempts: 1, finishedAt: T0 + 2 });
        assert.equal(c.backupInUse(b.id), true, "the restore still uses it");
        inTransaction(c, () => {
          c.updateJob({ ...other, state: JobState.JOB_STATE_FAILED, finishedAt: T0 + 3 });
          assert.equal(c.backupInUse(b.id), false);
        });
        assert.equal(c.backupInUse(b.id), true, "rolled back: the restore is queued again");
        c.updateJob({ ...other, state: JobState.JOB_STATE_CANCELLED, finishedAt: T0 + 4 });
        assert.equal(c.backupInUse(b.id), false);
        assert.equal(c.backupInUse("00000000-0000-4000-8000-000000000000"), false);
      }));

    it("backupInUse: also the backups a job locks (an export's from-backup, an import's parent); a volume name that looks like a lock is not one", () =>
      using(open, (c) => {
        const [p, q, r] = [backup(vol("p"), T0), backup(vol("q"), T0), backup(vol("r"), T0)];
        for (const b of [p, q, r]) c.insertBackup(b);
        const exp = job(T0, { locks: [`backup:${p.id}#shared`] });
        const imp = job(T0 + 1, { kind: JobKind.JOB_KIND_IMPORT, locks: ["vol:a/rbd//v2", `backup:${q.id}`] });
        // An image whose name ends like a lock: inside a JSON string its quote is escaped.
        const odd = job(T0 + 2, { locks: [`vol:a/rbd//x"backup:${r.id}`, `vol:a/rbd//x["backup:${r.id}`] });
        for (const j of [exp, imp, odd]) c.insertJob(j);
        assert.deepEqual(
          [p, q, r].map((b) => c.backupInUse(b.id)),
          [true, true, false],
        );
        c.updateJob({ ...imp, state: JobState.JOB_STATE_SUCCEEDED, attempts: 1, finishedAt: T0 + 5 });
        c.updateJob({ ...exp, locks: [] });
        assert.deepEqual(
          [p, q, r].map((b) => c.backupInUse(b.id)),
          [false, false, false],
        );
      }));
  });
}
