/**
 * Conformance: pruneHistory removes what is older than the window and needed by nothing — DELETED
 * backups whose delete finished before the window, of volumes backed up since; finished jobs no live
 * backup names — and nothing else; at most `limit`
 * rows of each table per call; the in-memory answers (active jobs, the AVAILABLE index) stay right.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DELETE_UNFINISHED } from "../../../src/coordinator/model";
import { JobKind, JobState, BackupStatus as S } from "../../../src/gen/rbdbackup/v1/backup_service";
import { backup, job, type OpenCatalog, T0, using, vol } from "./records";

const DAY = 86_400_000;

export function history(open: OpenCatalog): void {
  describe("history pruning", () => {
    it("removes old DELETED backups nothing needs and finished jobs of no live backup; keeps everything else", () =>
      using(open, (c) => {
        const old = T0 - 100 * DAY;
        const cutoff = T0 - 90 * DAY;
        const mk = (status: S, at = old, image = "v1", o: Partial<Parameters<typeof backup>[2]> = {}) => {
          const b = backup(vol(image), at, { status, ...o });
          c.insertBackup(b);
          return b;
        };
        const mkJob = (backupId: string, state: JobState, at = old, kind = JobKind.JOB_KIND_BACKUP) => {
          const j = job(at, { backupId, state, kind, finishedAt: at + 1000 });
          c.insertJob(j);
          return j;
        };
        // v1 and v2 were backed up within the window by BACKUP jobs that ended (their volumes were swept
        // since); v3 not; v4's backup of the window is still being made, v5's is an imported record (no job).
        const recent = mk(S.BACKUP_STATUS_AVAILABLE, T0 - DAY);
        const recentMade = mkJob(recent.id, JobState.JOB_STATE_SUCCEEDED, T0 - DAY);
        const recentFailed = mk(S.BACKUP_STATUS_FAILED, T0 - DAY, "v2");
        mkJob(recentFailed.id, JobState.JOB_STATE_FAILED, T0 - DAY);
        const making = mk(S.BACKUP_STATUS_CREATING, T0 - DAY, "v4");
        const makingJob = mkJob(making.id, JobState.JOB_STATE_RUNNING, T0 - DAY);
        mk(S.BACKUP_STATUS_AVAILABLE, T0 - DAY, "v5");
        const unsweptByMaking = mk(S.BACKUP_STATUS_DELETED, old, "v4");
        const unsweptByImport = mk(S.BACKUP_STATUS_DELETED, old, "v5");
        // Go: an old DELETED backup whose delete finished long ago, and finished jobs naming it or nothing left.
        const deleted = mk(S.BACKUP_STATUS_DELETED);
        const madeDeleted = mkJob(deleted.id, JobState.JOB_STATE_SUCCEEDED);
        const deleteJob = mkJob(deleted.id, JobState.JOB_STATE_SUCCEEDED, old + 10, JobKind.JOB_KIND_DELETE);
        const cancelled = mkJob("", JobState.JOB_STATE_CANCELLED);
        // Stay: FAILED backups (their leftovers go by a DeleteBackup of the record), and their jobs.
        const failed = mk(S.BACKUP_STATUS_FAILED);
        const failedJob = mkJob(failed.id, JobState.JOB_STATE_FAILED);
        // Stay: a delete unfinished (DeleteBackup removes what is left by it).
        const unfinished = mk(S.BACKUP_STATUS_DELETED, old, "v1", { error: `${DELETE_UNFINISHED}busy` });
        // Stay: deleted by a job of the window; of a volume not backed up since (never swept after).
        const lateDelete = mk(S.BACKUP_STATUS_DELETED);
        const lateDeleteJob = mkJob(lateDelete.id, JobState.JOB_STATE_SUCCEEDED, T0 - 2 * DAY, JobKind.JOB_KIND_DELETE);
        const unswept = mk(S.BACKUP_STATUS_DELETED, old, "v3");
        // Stay: live backups and every job naming them, however old; active jobs; anything newer.
        const live = [
          S.BACKUP_STATUS_AVAILABLE,
          S.BACKUP_STATUS_CORRUPT,
          S.BACKUP_STATUS_CREATING,
          S.BACKUP_STATUS_DELETING,
        ].map((s) => mk(s));
        const liveJobs = live.flatMap((b) => [
          mkJob(b.id, JobState.JOB_STATE_SUCCEEDED),
          mkJob(b.id, JobState.JOB_STATE_SUCCEEDED, old + 5, JobKind.JOB_KIND_RESTORE),
          mkJob(b.id, JobState.JOB_STATE_FAILED, old + 6, JobKind.JOB_KIND_VERIFY),
        ]);
        const deletedButNamed = mk(S.BACKUP_STATUS_DELETED, old, "v2");
        const queued = mkJob(deletedButNamed.id, JobState.JOB_STATE_QUEUED);
        const running = mkJob("", JobState.JOB_STATE_RUNNING);
        const recentDeleted = mk(S.BACKUP_STATUS_DELETED, T0 - DAY);
        const recentJob = mkJob(recentDeleted.id, JobState.JOB_STATE_SUCCEEDED, T0 - DAY);

        assert.deepEqual(c.pruneHistory(cutoff, 1000), { backups: 1, jobs: 3 });
        assert.equal(c.getBackup(deleted.id), undefined, "the old DELETED backup went");
        for (const j of [madeDeleted, deleteJob, cancelled]) assert.equal(c.getJob(j.id), undefined);
        const kept = [
          recent,
          failed,
          unfinished,
          lateDelete,
          unswept,
          unsweptByMaking,
          unsweptByImport,
          ...live,
          deletedButNamed,
          recentDeleted,
        ];
        for (const b of kept) assert.ok(c.getBackup(b.id), `kept ${S[b.status]} ${b.error}`);
        for (const j of [...liveJobs, failedJob, recentMade, lateDeleteJob, queued, running, recentJob])
          assert.ok(c.getJob(j.id), `kept job ${j.kind}`);
        assert.deepEqual(
          c
            .activeJobs()
            .map((j) => j.id)
            .sort(),
          [queued.id, running.id, makingJob.id].sort(),
        );
        assert.equal(c.availableBackupsOfVolume("a", "rbd", "", "v1").length, 2);
        assert.deepEqual(c.pruneHistory(cutoff, 1000), { backups: 0, jobs: 0 }, "nothing more");
      }));

    it("at most `limit` rows of each table a call", () =>
      using(open, (c) => {
        const old = T0 - 100 * DAY;
        const recent = backup(vol("v1"), T0 - DAY);
        c.insertBackup(recent);
        c.insertJob(job(T0 - DAY, { backupId: recent.id, state: JobState.JOB_STATE_SUCCEEDED }));
        for (let i = 0; i < 5; i++) {
          const b = backup(vol("v1"), old + i, { status: S.BACKUP_STATUS_DELETED });
          c.insertBackup(b);
          c.insertJob(job(old + i, { backupId: b.id, state: JobState.JOB_STATE_SUCCEEDED }));
        }
        const cutoff = T0 - 90 * DAY;
        assert.deepEqual(c.pruneHistory(cutoff, 2), { backups: 2, jobs: 2 });
        assert.deepEqual(c.pruneHistory(cutoff, 2), { backups: 2, jobs: 2 });
        assert.deepEqual(c.pruneHistory(cutoff, 2), { backups: 1, jobs: 1 });
        assert.deepEqual(c.pruneHistory(cutoff, 2), { backups: 0, jobs: 0 });
        assert.equal(c.backupsOfVolume("a", "rbd", "", "v1").length, 1, "the recent one");
      }));

    it("volumes no longer backed up: listed from a cursor; a gone one's DELETED records go, as pruneHistory's rules say", () =>
      using(open, (c) => {
        const old = T0 - 100 * DAY;
        const cutoff = T0 - 90 * DAY;
        const mk = (v: ReturnType<typeof vol>, status: S, at = old, o: Partial<Parameters<typeof backup>[2]> = {}) => {
          const b = backup(v, at, { status, ...o });
          c.insertBackup(b);
          return b;
        };
        // Candidates: only old records, one prunable DELETED at least (g1 in pool "p", g2 in another cluster).
        const g1 = vol("g1", "a", "p");
        const g2 = vol("g2", "b");
        const g1Deleted = [mk(g1, S.BACKUP_STATUS_DELETED), mk(g1, S.BACKUP_STATUS_DELETED, old + 1)];
        const g1Failed = mk(g1, S.BACKUP_STATUS_FAILED);
        const g1Unfinished = mk(g1, S.BACKUP_STATUS_DELETED, old, { error: `${DELETE_UNFINISHED}busy` });
        const g1Named = mk(g1, S.BACKUP_STATUS_DELETED);
        c.insertJob(
          job(T0 - DAY, { backupId: g1Named.id, state: JobState.JOB_STATE_SUCCEEDED, kind: JobKind.JOB_KIND_DELETE }),
        );
        mk(g2, S.BACKUP_STATUS_DELETED);
        // Not candidates: a backup of the window (any status: this one is being made); only a FAILED record.
        mk(vol("w"), S.BACKUP_STATUS_DELETED);
        mk(vol("w"), S.BACKUP_STATUS_CREATING, T0 - DAY);
        mk(vol("f"), S.BACKUP_STATUS_FAILED);
        const key = (v: { cluster: string; pool: string; namespace: string; image: string }) =>
          `${v.cluster}/${v.pool}/${v.namespace}/${v.image}`;
        assert.deepEqual(c.goneHistoryCandidates(cutoff, null, 10).map(key), ["a/p//g1", "b/rbd//g2"]);
        assert.deepEqual(c.goneHistoryCandidates(cutoff, null, 1).map(key), ["a/p//g1"], "at most limit");
        assert.deepEqual(c.goneHistoryCandidates(cutoff, g1, 10).map(key), ["b/rbd//g2"], "after the cursor");
        assert.deepEqual(c.goneHistoryCandidates(cutoff, g2, 10), [], "past the last");

        assert.equal(c.pruneGoneVolume(g1, cutoff, 1), 1, "at most limit");
        assert.equal(c.pruneGoneVolume(g1, cutoff, 10), 1);
        for (const b of g1Deleted) assert.equal(c.getBackup(b.id), undefined);
        for (const b of [g1Failed, g1Unfinished, g1Named])
          assert.ok(c.getBackup(b.id), `kept ${S[b.status]} ${b.error}`);
        assert.equal(
          c.pruneGoneVolume(vol("w"), cutoff, 10),
          0,
          "a volume with a backup of the window keeps its records",
        );
        assert.equal(c.backupsOfVolume("a", "rbd", "", "w").length, 2);
        // A backup of the window appearing before the removal keeps them (checked in the same statement).
        mk(g2, S.BACKUP_STATUS_AVAILABLE, T0 - DAY);
        assert.equal(c.pruneGoneVolume(g2, cutoff, 10), 0);
        assert.deepEqual(
          c.goneHistoryCandidates(cutoff, null, 10),
          [],
          "what g1 has left is kept by the rules; g2 was backed up",
        );
      }));

    it("gone-volume candidates: ordered by cluster, pool, namespace and image, the cursor comparing all four", () =>
      using(open, (c) => {
        const old = T0 - 100 * DAY;
        const cutoff = T0 - 90 * DAY;
        const vols = [
          vol("x", "a", "p", "ns"),
          vol("x", "a", "q"),
          vol("x", "a", "p"),
          vol("y", "a", "p"),
          vol("w", "a", "p", "ns"),
        ];
        for (const v of vols) c.insertBackup(backup(v, old, { status: S.BACKUP_STATUS_DELETED }));
        const key = (v: { cluster: string; pool: string; namespace: string; image: string }) =>
          `${v.cluster}/${v.pool}/${v.namespace}/${v.image}`;
        const all = ["a/p//x", "a/p//y", "a/p/ns/w", "a/p/ns/x", "a/q//x"];
        assert.deepEqual(c.goneHistoryCandidates(cutoff, null, 10).map(key), all);
        for (let i = 0; i < all.length; i++) {
          const [cluster, pool, namespace, image] = (all[i] as string).split("/") as [string, string, string, string];
          assert.deepEqual(
            c.goneHistoryCandidates(cutoff, { cluster, pool, namespace, image }, 10).map(key),
            all.slice(i + 1),
            `after ${all[i]}`,
          );
        }
      }));
  });
}
