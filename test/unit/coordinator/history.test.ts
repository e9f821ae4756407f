/**
 * The catalog history's pruner (src/coordinator/history.ts) on a real SQLite catalog in memory: a pass
 * removes, in batches, what is older than historyDays, counts it, and leaves the rest; 0 keeps all; a
 * failing catalog is logged and the pass ends.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError, unavailable } from "../../../src/common/errors";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import {
  GONE_CHECKS_PER_PASS,
  HISTORY_BATCH,
  HistoryPruner,
  historyRemovedCounter,
} from "../../../src/coordinator/history";
import type { SourceState } from "../../../src/coordinator/volume-presence";
import { BackupStatus, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { backup, job, vol } from "../../helpers/catalog-cases/records";
import { memoryLogger } from "./harness";

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 11, 7);

/** `n` DELETED backups of 100 days ago, each with its finished job; one AVAILABLE backup of yesterday and the job that made it. */
function filled(n: number): SqliteCatalog {
  const c = new SqliteCatalog(":memory:");
  c.transaction(() => {
    for (let i = 0; i < n; i++) {
      const b = backup(vol("v1"), NOW - 100 * DAY + i, { status: BackupStatus.BACKUP_STATUS_DELETED });
      c.insertBackup(b);
      c.insertJob(job(NOW - 100 * DAY + i, { backupId: b.id, state: JobState.JOB_STATE_SUCCEEDED }));
    }
    // The volume's newest backup, of yesterday: it swept the volume after those deletes.
    const kept = backup(vol("v1"), NOW - DAY);
    c.insertBackup(kept);
    c.insertJob(job(NOW - DAY, { backupId: kept.id, state: JobState.JOB_STATE_SUCCEEDED }));
  });
  return c;
}

const value = async (c: ReturnType<typeof historyRemovedCounter>, table: string) =>
  (await c.get()).values.find((v) => v.labels.table === table)?.value;

describe("catalog history pruner", () => {
  it("a pass removes everything older than historyDays in batches, counted; the next finds nothing", async () => {
    const n = 2 * HISTORY_BATCH + 500;
    const c = filled(n);
    const removed = historyRemovedCounter();
    const log = memoryLogger();
    const p = new HistoryPruner({ catalog: c, log, historyDays: 90, removed, now: () => NOW });
    assert.deepEqual(await p.pass(), { backups: n, jobs: n });
    assert.equal(await value(removed, "backups"), n);
    assert.equal(await value(removed, "jobs"), n);
    assert.equal(c.backupsOfVolume("a", "rbd", "", "v1").length, 1, "the AVAILABLE backup stays");
    assert.equal(c.listJobs({}, 10, "").items.length, 1, "its job stays");
    assert.ok(log.lines.some((l) => l.msg.startsWith("catalog history: removed") && l.fields?.backups === n));
    assert.deepEqual(await p.pass(), { backups: 0, jobs: 0 });
    c.close();
  });

  it("a window that still holds the rows removes nothing; historyDays 0 keeps everything", async () => {
    const c = filled(10);
    const log = memoryLogger();
    assert.deepEqual(await new HistoryPruner({ catalog: c, log, historyDays: 101, now: () => NOW }).pass(), {
      backups: 0,
      jobs: 0,
    });
    assert.deepEqual(await new HistoryPruner({ catalog: c, log, historyDays: 0, now: () => NOW }).pass(), {
      backups: 0,
      jobs: 0,
    });
    assert.equal(c.backupsOfVolume("a", "rbd", "", "v1").length, 11);
    c.close();
  });

  it("a catalog that fails: the pass ends with a warning, nothing thrown", async () => {
    const c = filled(3);
    const log = memoryLogger();
    const failing = Object.create(c) as SqliteCatalog;
    failing.pruneHistory = () => {
      throw new Error("catalog unreachable");
    };
    const p = new HistoryPruner({ catalog: failing, log, historyDays: 90, now: () => NOW });
    assert.deepEqual(await p.pass(), { backups: 0, jobs: 0 });
    assert.ok(log.lines.some((l) => l.level === "warn" && /catalog unreachable/.test(String(l.fields?.err))));
    c.close();
  });

  it("volumes no longer backed up: a gone one's DELETED records go (their jobs at the next pass); one still there, in the trash, not known out of it, or not answered for, keeps them", async () => {
    const c = new SqliteCatalog(":memory:");
    const old = NOW - 100 * DAY;
    const ids: Record<string, string[]> = {};
    for (const image of ["gone", "there", "unknown", "trash", "missing"]) {
      ids[image] = [];
      for (let i = 0; i < 3; i++) {
        const b = backup(vol(image), old + i, { status: BackupStatus.BACKUP_STATUS_DELETED });
        c.insertBackup(b);
        c.insertJob(job(old + i, { backupId: b.id, state: JobState.JOB_STATE_SUCCEEDED }));
        ids[image]?.push(b.id);
      }
    }
    const asked: string[] = [];
    const states: Record<string, SourceState> = { gone: "gone", there: "present", trash: "trash", missing: "missing" };
    const sourceState = async (v: { image: string }) => {
      asked.push(v.image);
      const st = states[v.image];
      if (!st) throw new Error("no agent of cluster a is connected");
      return st;
    };
    const removed = historyRemovedCounter();
    const log = memoryLogger();
    const p = new HistoryPruner({ catalog: c, log, historyDays: 90, removed, now: () => NOW, sourceState });
    assert.deepEqual(await p.pass(), { backups: 3, jobs: 0 });
    assert.deepEqual(asked.sort(), ["gone", "missing", "there", "trash", "unknown"]);
    for (const id of ids.gone ?? []) assert.equal(c.getBackup(id), undefined);
    for (const image of ["there", "unknown", "trash", "missing"])
      for (const id of ids[image] ?? []) assert.ok(c.getBackup(id), `${image}: kept`);
    assert.equal(await value(removed, "backups"), 3);
    assert.ok(
      log.lines.some((l) => l.msg.includes("volume gone from its source") && l.fields?.volume === "a/rbd/gone"),
    );
    // The next pass: the gone volume's jobs (their records gone), and the others asked again.
    asked.length = 0;
    assert.deepEqual(await p.pass(), { backups: 0, jobs: 3 });
    assert.deepEqual(asked.sort(), ["missing", "there", "trash", "unknown"]);
    // Without an asker (a catalog-only pruner), nothing of theirs goes.
    assert.deepEqual(await new HistoryPruner({ catalog: c, log, historyDays: 90, now: () => NOW }).pass(), {
      backups: 0,
      jobs: 0,
    });
    c.close();
  });

  it("more volumes no longer backed up than a pass asks about: the next pass goes on from where it stopped", async () => {
    const c = new SqliteCatalog(":memory:");
    const images = [
      ...Array.from({ length: GONE_CHECKS_PER_PASS + 1 }, (_, i) => `there-${String(i).padStart(4, "0")}`),
      "z-gone",
    ];
    for (const image of images)
      c.insertBackup(backup(vol(image), NOW - 100 * DAY, { status: BackupStatus.BACKUP_STATUS_DELETED }));
    const asked: string[] = [];
    const sourceState = async (v: { image: string }): Promise<SourceState> => {
      asked.push(v.image);
      return v.image === "z-gone" ? "gone" : "present";
    };
    const p = new HistoryPruner({ catalog: c, log: memoryLogger(), historyDays: 90, now: () => NOW, sourceState });
    assert.deepEqual(await p.pass(), { backups: 0, jobs: 0 });
    assert.equal(asked.length, GONE_CHECKS_PER_PASS);
    assert.deepEqual(await p.pass(), { backups: 1, jobs: 0 }, "the rest, the gone volume among them");
    assert.deepEqual(asked.slice(GONE_CHECKS_PER_PASS, GONE_CHECKS_PER_PASS + 3), [
      `there-0${GONE_CHECKS_PER_PASS}`,
      "z-gone",
      "there-0000",
    ]);
    assert.equal(asked.length, 2 * GONE_CHECKS_PER_PASS, "then on from the first: a full pass");
    c.close();
  });

  it("a cluster's pool that does not answer (UNAVAILABLE) is not asked again in the pass, a volume's own error skips only it; the pass says which, at info once", async () => {
    const c = new SqliteCatalog(":memory:");
    for (const [cluster, image] of [
      ["a", "a1"],
      ["a", "a2"],
      ["b", "b1"],
      ["b", "b2"],
    ] as const)
      c.insertBackup(backup(vol(image, cluster), NOW - 100 * DAY, { status: BackupStatus.BACKUP_STATUS_DELETED }));
    const asked: string[] = [];
    const sourceState = async (v: { cluster: string; image: string }): Promise<SourceState> => {
      asked.push(v.image);
      if (v.cluster === "a") throw unavailable("agent agent-a did not answer within 15000 ms");
      // A volume's own failure (its namespace outside the agent's caps, say): the next one is asked.
      if (v.image === "b1") throw new AppError(Status.PERMISSION_DENIED, "namespace ns: EPERM");
      return "gone";
    };
    const log = memoryLogger();
    const p = new HistoryPruner({ catalog: c, log, historyDays: 90, now: () => NOW, sourceState });
    assert.deepEqual(await p.pass(), { backups: 1, jobs: 0 });
    assert.deepEqual(asked, ["a1", "b1", "b2"]);
    assert.ok(
      log.lines.some(
        (l) =>
          l.level === "info" && l.fields?.unknown === 3 && JSON.stringify(l.fields?.poolsNotAnswering) === '["a/rbd"]',
      ),
      "the pass names the cluster's pool that did not answer",
    );
    const infos = () => log.lines.filter((l) => l.level === "info" && l.msg.includes("could not be told gone")).length;
    assert.equal(infos(), 1);
    // Another volume of the same pool: more untold, of the same kind and place — not at info again.
    c.insertBackup(backup(vol("a3", "a"), NOW - 100 * DAY, { status: BackupStatus.BACKUP_STATUS_DELETED }));
    await p.pass();
    assert.equal(infos(), 1, "the same kind of untold, in the same pool: not at info again");
    assert.equal(c.backupsOfVolume("a", "rbd", "", "a2").length, 1, "kept");
    c.close();
  });
});
