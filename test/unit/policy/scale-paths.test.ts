/**
 * What keeps 1,000 protected volumes cheap, checked for staying right: the catalog's in-memory index of
 * AVAILABLE backups (same answers as the rows, a rolled-back transaction undone), Backup.policy on
 * catalogs from before its column (backfilled from the runs' job keys), and the runner's ticks that read
 * only due and unsettled records between full passes.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import Database from "better-sqlite3";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import { newJobRecord } from "../../../src/coordinator/jobs/new-job";
import type { Backup } from "../../../src/coordinator/model";
import { volumeKey } from "../../../src/coordinator/policy/model";
import { policyBackups } from "../../../src/coordinator/policy/retention-jobs";
import { PolicyRunner } from "../../../src/coordinator/policy/runner";
import { FULL_PASS_MS } from "../../../src/coordinator/policy/tick-plan";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { BackupStatus, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { Policy } from "../../../src/gen/rbdbackup/v1/policy";
import type { Answer } from "../../helpers/fake-agent";
import { rolledBack } from "../../helpers/rollback";
import { Harness, newBackup, vol } from "../coordinator/harness";

const available = (c: SqliteCatalog, image: string) =>
  c
    .backupsOfVolume("a", "rbd", "", image)
    .filter((b) => b.status === BackupStatus.BACKUP_STATUS_AVAILABLE)
    .map((b) => b.id);
const indexed = (c: SqliteCatalog, image: string) => c.availableBackupsOfVolume("a", "rbd", "", image).map((b) => b.id);

/** Policy "gold": the volumes to cluster b's backups pool every `intervalSeconds`, keeping the last one. */
function gold(volumes: ReturnType<typeof vol>[], intervalSeconds: number): Policy {
  return Policy.fromPartial({
    name: "gold",
    selector: { volumes },
    destination: { cluster: "b", pool: "backups", namespace: "" },
    mode: BackupMode.BACKUP_MODE_AUTO,
    schedule: { intervalSeconds },
    retention: { keepLast: 1 },
  });
}

describe("the catalog's index of available backups", () => {
  it("answers as the rows do, through inserts, status changes and a rolled-back transaction", () => {
    const c = new SqliteCatalog(":memory:");
    try {
      const t = Date.UTC(2026, 0, 1);
      const bs = [0, 1, 2, 3].map((i) => newBackup(vol(i < 3 ? "v1" : "v2"), "b", t + (i % 3) * 1000));
      for (const b of bs) c.insertBackup(b);
      assert.deepEqual(indexed(c, "v1"), []);
      for (const b of bs)
        c.updateBackup({ ...b, status: BackupStatus.BACKUP_STATUS_AVAILABLE, completedAt: new Date(t) });
      assert.deepEqual(indexed(c, "v1"), available(c, "v1"));
      assert.equal(indexed(c, "v1").length, 3);
      c.updateBackup({ ...(c.getBackup(bs[1]?.id ?? "") as Backup), status: BackupStatus.BACKUP_STATUS_DELETING });
      assert.deepEqual(indexed(c, "v1"), available(c, "v1"));
      assert.equal(indexed(c, "v1").length, 2);
      rolledBack(c, () => {
        c.updateBackup({ ...(c.getBackup(bs[0]?.id ?? "") as Backup), status: BackupStatus.BACKUP_STATUS_DELETED });
        assert.equal(indexed(c, "v1").length, 1, "seen inside the transaction");
      });
      assert.deepEqual(indexed(c, "v1"), available(c, "v1"), "the rollback is undone in the index too");
      assert.equal(indexed(c, "v1").length, 2);
      assert.deepEqual(indexed(c, "v2"), [bs[3]?.id]);
      const last = c.lastSuccessByVolume().sort((x, y) => x.image.localeCompare(y.image));
      assert.deepEqual(last, [
        { cluster: "a", pool: "rbd", namespace: "", image: "v1", at: t },
        { cluster: "a", pool: "rbd", namespace: "", image: "v2", at: t },
      ]);
    } finally {
      c.close();
    }
  });

  it("Backup.policy of backups from before its column comes from their jobs' keys", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-policy-col-"));
    const file = path.join(dir, "catalog.sqlite");
    try {
      let c = new SqliteCatalog(file);
      const t = Date.UTC(2026, 0, 1);
      const made = (key: string) => {
        const b = newBackup(vol("v1"), "b", t);
        const j = newJobRecord(
          {
            kind: JobKind.JOB_KIND_BACKUP,
            backupId: b.id,
            volume: vol("v1"),
            operation: { kind: "backup", mode: BackupMode.BACKUP_MODE_AUTO, maxSnapshots: 0 },
            idempotencyKey: key,
            fingerprint: "",
            locks: [],
            execCluster: "a",
            peerCluster: "b",
          },
          3,
          t,
        );
        c.insertBackup({ ...b, jobId: j.id, status: BackupStatus.BACKUP_STATUS_AVAILABLE });
        c.insertJob({ ...j, state: JobState.JOB_STATE_SUCCEEDED });
        return b.id;
      };
      const gold = made("pol:gold:1767225600000:abc");
      const manual = made("my-own-key");
      const none = made("");
      c.close();
      // The catalog as an older coordinator left it: no policy column, no policy in the records.
      const db = new Database(file);
      db.exec("DROP INDEX IF EXISTS backups_policy; DROP INDEX IF EXISTS backups_by_policy");
      db.exec("ALTER TABLE backups DROP COLUMN policy");
      db.exec("UPDATE backups SET doc = json_remove(doc, '$.policy')");
      db.close();
      c = new SqliteCatalog(file);
      assert.equal(c.getBackup(gold)?.policy, "gold");
      assert.equal(c.getBackup(manual)?.policy, "");
      assert.equal(c.getBackup(none)?.policy, "");
      const p = Policy.fromPartial({ name: "gold", destination: { cluster: "b", pool: "backups" } });
      assert.deepEqual(
        policyBackups(c, p, vol("v1"), () => "backups").map((b) => b.id),
        [gold],
      );
      c.close();
      c = new SqliteCatalog(file); // idempotent
      assert.equal(c.getBackup(gold)?.policy, "gold");
      c.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the runner between full passes", () => {
  let h: Harness;
  let runner: PolicyRunner;
  let fullReads: number;
  let recordReads: number;

  const answer = (req: CallRequest): Answer => {
    if (req.$case === "probe")
      return {
        $case: "probe",
        value: { missingPools: [], missingNamespaces: [], imageExists: true, imageSize: 1 << 30, imageSnapshots: [] },
      };
    return new AppError(Status.UNIMPLEMENTED, req.$case);
  };

  beforeEach(() => {
    h = new Harness();
    h.t = Date.UTC(2026, 11, 1, 0, 0, 10);
    h.connect("agent-a", "a").answer = answer;
    h.connect("agent-b", "b").answer = answer;
    fullReads = 0;
    recordReads = 0;
    const store = h.catalog.policies;
    const counting = new Proxy(store, {
      get(target, prop, recv) {
        const v = Reflect.get(target, prop, recv);
        if (prop === "protectionOfPolicy") fullReads++;
        if (prop === "getProtection") recordReads++;
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    runner = new PolicyRunner({
      catalog: h.catalog,
      store: counting,
      sessions: h.sessions,
      scheduler: { kick() {} },
      log: h.log,
      cfg: { tickMs: 1000, discoveryIntervalMs: 30_000, minIntervalSeconds: 1 },
      maxAttempts: 3,
      now: () => h.t,
    });
  });
  afterEach(() => {
    runner.stop();
    h.close();
  });

  it("reads only due and unsettled records, yet runs, settles and keeps retention as a full pass does", async () => {
    const vols = ["v1", "v2", "v3"].map((i) => vol(i));
    h.catalog.policies.insertPolicy(gold(vols, 10));
    await runner.tick();
    assert.equal(fullReads, 1, "the first tick is a full pass");
    const finishAll = () => {
      for (const j of h.catalog.activeJobs()) {
        h.catalog.updateJob({ ...j, state: JobState.JOB_STATE_SUCCEEDED, finishedAt: h.t });
        const b = h.backup(j.backupId);
        if (b.status === BackupStatus.BACKUP_STATUS_CREATING)
          h.catalog.updateBackup({ ...b, status: BackupStatus.BACKUP_STATUS_AVAILABLE, completedAt: new Date(h.t) });
      }
    };
    const start = h.t;
    // Slots every 10 s for 50 s: well inside one FULL_PASS_MS, so no full pass after the first.
    for (let s = 1; s <= 5; s++) {
      h.t = start + s * 10_000;
      await runner.tick();
      finishAll();
      h.t += 1000;
      await runner.tick(); // settles: retention queues DELETE jobs
    }
    assert.ok(h.t - start < FULL_PASS_MS);
    assert.equal(fullReads, 1, "no full pass while nothing changed");
    for (const v of vols) {
      const rec = h.catalog.policies.getProtection("gold", volumeKey(v));
      assert.equal(rec?.missedRuns, 0);
      const backups = h.catalog.backupsOfVolume(v.cluster, v.pool, v.namespace, v.image);
      assert.equal(backups.length, 5, "one backup per slot");
      assert.ok(
        backups.every((b) => b.policy === "gold"),
        "Backup.policy set on the runs",
      );
      const deletes = h.catalog
        .listJobs({ kind: JobKind.JOB_KIND_DELETE }, 100, "")
        .items.filter((j) => j.volume && volumeKey(j.volume) === volumeKey(v));
      assert.equal(deletes.length, 4, "retention keep_last 1 after each success");
    }
    h.t = start + FULL_PASS_MS + 1;
    await runner.tick();
    assert.equal(fullReads, 2, "a full pass every FULL_PASS_MS");
    runner.changed("gold");
    await runner.tick();
    assert.equal(fullReads, 3, "and after the API changed the policy");
  });

  it("reads no record while its run's job is still active, and settles the run once it ends", async () => {
    const vols = ["v1", "v2"].map((i) => vol(i));
    h.catalog.policies.insertPolicy(gold(vols, 30));
    const start = h.t;
    await runner.tick(); // full pass: the records made
    h.t += 20_000; // the first slot (every 30 s; the clock starts 10 s past one)
    await runner.tick(); // their runs queued
    const jobs = h.catalog.activeJobs();
    assert.equal(jobs.length, 2, "one run per volume queued");
    const reads = recordReads;
    for (let i = 0; i < 5; i++) {
      h.t += 1000;
      await runner.tick();
    }
    assert.equal(recordReads, reads, "no record read while the runs' jobs are queued or running");
    for (const j of jobs)
      h.catalog.updateJob({ ...j, state: JobState.JOB_STATE_FAILED, finishedAt: h.t, errorMessage: "boom" });
    h.t += 1000;
    await runner.tick();
    assert.ok(h.t - start < FULL_PASS_MS);
    assert.equal(fullReads, 1, "settled by the fast path, not by a full pass");
    for (const v of vols) {
      const rec = h.catalog.policies.getProtection("gold", volumeKey(v));
      assert.equal(rec?.consecutiveFailures, 1, "the failed run counted once it ended");
      assert.match(rec?.lastError ?? "", /boom/);
    }
  });
});
