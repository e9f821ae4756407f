/**
 * The policy runner on the scheduler harness (real SQLite catalog in memory, fake agent sessions, fake
 * clock): slots and their idempotency keys, missed runs, a restart, retention DELETE jobs, discovery.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError, statusOf } from "../../../src/common/errors";
import type { JobRecord } from "../../../src/coordinator/model";
import { PolicyMetrics } from "../../../src/coordinator/policy/metrics";
import type { ProtectionRecord } from "../../../src/coordinator/policy/model";
import { volumeKey } from "../../../src/coordinator/policy/model";
import { WITHDRAWN, withdrawRetentionDeletes } from "../../../src/coordinator/policy/retention-jobs";
import { PolicyRunner } from "../../../src/coordinator/policy/runner";
import { slotKey } from "../../../src/coordinator/policy/slots";
import { SAFETY_PASS_MS } from "../../../src/coordinator/scheduler/wake-timer";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { BackupStatus, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { Policy, PolicySchedule, PolicySelector, RetentionRule } from "../../../src/gen/rbdbackup/v1/policy";
import type { Answer, FakeAgentSession } from "../../helpers/fake-agent";
import { until } from "../../helpers/wait";
import { Harness, newBackup, vol } from "../coordinator/harness";

const INTERVAL = 60;

function policy(over: Partial<Policy> = {}): Policy {
  return Policy.fromPartial({
    name: "gold",
    selector: { volumes: [vol("v1")] },
    destination: { cluster: "b", pool: "backups", namespace: "" },
    mode: BackupMode.BACKUP_MODE_AUTO,
    schedule: { intervalSeconds: INTERVAL },
    retention: { keepLast: 2 },
    ...over,
  });
}

/** A runner over `h`'s catalog and sessions; `now`: a fake clock (none: the real one); `metrics`: its metrics. */
function runnerOver(
  h: Harness,
  cfg: { tickMs: number; discoveryIntervalMs: number },
  now?: () => number,
  metrics?: PolicyMetrics,
): PolicyRunner {
  return new PolicyRunner({
    catalog: h.catalog,
    store: h.catalog.policies,
    sessions: h.sessions,
    scheduler: { kick() {} },
    log: h.log,
    cfg: { ...cfg, minIntervalSeconds: 1 },
    maxAttempts: 3,
    ...(now ? { now } : {}),
    ...(metrics ? { metrics } : {}),
  });
}

describe("policy runner", () => {
  let h: Harness;
  let images: string[];
  let runner: PolicyRunner;

  /** Runs once, at the next probe (while RunPolicyNow awaits its agents). */
  let onProbe: (() => void) | undefined;
  const srcAnswer = (req: CallRequest): Answer => {
    if (req.$case === "probe") {
      const f = onProbe;
      onProbe = undefined;
      f?.();
    }
    if (req.$case === "probe")
      return {
        $case: "probe",
        value: { missingPools: [], missingNamespaces: [], imageExists: true, imageSize: 1 << 30, imageSnapshots: [] },
      };
    if (req.$case === "images") return { $case: "images", value: { images: [...images] } };
    return new AppError(Status.UNIMPLEMENTED, req.$case);
  };
  const newRunner = () => runnerOver(h, { tickMs: 1000, discoveryIntervalMs: 30_000 }, () => h.t);
  const jobs = (kind = JobKind.JOB_KIND_BACKUP) =>
    h.catalog
      .listJobs({}, 1000, "")
      .items.filter((j) => j.kind === kind)
      .sort((x, y) => x.createdAt - y.createdAt);
  const record = (name = "gold", v = vol("v1")) => h.catalog.policies.getProtection(name, volumeKey(v));
  /** Every queued backup job of the runner finishes and its backup is available. */
  const finishAll = () => {
    for (const j of jobs()) {
      if (j.state === JobState.JOB_STATE_SUCCEEDED) continue;
      h.catalog.updateJob({ ...j, state: JobState.JOB_STATE_SUCCEEDED, finishedAt: h.t });
      const b = h.backup(j.backupId);
      h.catalog.updateBackup({ ...b, status: BackupStatus.BACKUP_STATUS_AVAILABLE, snapshot: `s-${b.id}` });
    }
  };

  /** `n` slots of "gold" for v1 run and finish, each settled by the tick after it. */
  const runSlots = async (n: number) => {
    for (let i = 0; i < n; i++) {
      h.t = (record()?.nextRunAt ?? 0) + 1;
      await runner.tick();
      finishAll();
      h.t += 1000;
      await runner.tick();
    }
  };

  beforeEach(() => {
    h = new Harness();
    h.t = Date.UTC(2026, 11, 1, 0, 0, 10);
    images = [];
    onProbe = undefined;
    h.connect("agent-a", "a").answer = srcAnswer;
    h.connect("agent-b", "b").answer = srcAnswer;
    runner = newRunner();
  });
  afterEach(() => {
    runner.stop();
    h.close();
  });

  it("a stored policy whose metadata template fills past 4096 characters: its run fails saying so, nothing queued", async () => {
    // Stored bypassing the written-time bound (policy/validate.ts refuses it now), as an older release
    // stored a template whose placeholders fill past the limit: "v1" makes it 4097 characters.
    h.catalog.policies.insertPolicy(policy({ volumeMetadata: { k: `${"x".repeat(4095)}{image}` } }));
    const r = await runner.runNow(h.catalog.policies.getPolicy("gold") as Policy);
    assert.deepEqual(r.jobIds, []);
    assert.match(
      r.skipped[0]?.reason ?? "",
      /^policy gold: volume_metadata\["k"\] is longer than 4096 characters once its placeholders are filled for a\/rbd\/v1; shorten the policy's template/,
    );
    assert.deepEqual(jobs(), []);
  });

  it("RunPolicyNow changes only the record's last job: a schedule change and a failure settled while it probed stay", async () => {
    h.catalog.policies.insertPolicy(policy({ schedule: PolicySchedule.fromPartial({ intervalSeconds: 86_400 }) }));
    await runner.tick();
    const daily = record()?.nextSlotAt;
    onProbe = () => {
      // UpdatePolicy lands while RunPolicyNow awaits its probes: the record gets the new schedule's slot.
      const p = h.catalog.policies.getPolicy("gold") as Policy;
      const schedule = PolicySchedule.fromPartial({ intervalSeconds: INTERVAL });
      h.catalog.policies.updatePolicy({ ...p, schedule, revision: p.revision + 1 });
      runner.changed("gold");
    };
    const r = await runner.runNow(h.catalog.policies.getPolicy("gold") as Policy);
    assert.equal(r.jobIds.length, 1);
    const rec = record();
    assert.ok(rec && daily);
    assert.ok(rec.nextSlotAt < daily, "the new schedule's next slot is kept, not the daily one read before");
    assert.equal(rec.lastJobId, r.jobIds[0]);

    // A failed run: the next RunPolicyNow counts it before it replaces the record's last job.
    const failed = jobs().at(-1) as JobRecord;
    h.catalog.updateJob({ ...failed, state: JobState.JOB_STATE_FAILED, errorMessage: "boom", finishedAt: h.t });
    await runner.runNow(h.catalog.policies.getPolicy("gold") as Policy);
    assert.equal(record()?.consecutiveFailures, 1, "the failure is counted");
    assert.match(record()?.lastError ?? "", /boom/);
  });

  it("RunPolicyNow naming one volume paused while it probed: FAILED_PRECONDITION (the call's status), no job; all volumes: skipped", async () => {
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    const pauseDuringProbe = () => {
      onProbe = () => {
        const rec = record();
        assert.ok(rec);
        h.catalog.policies.upsertProtection({ ...rec, pausedReason: "failed over to b/rbd/v1-dr" });
      };
    };
    const before = jobs().length;
    pauseDuringProbe();
    const p = h.catalog.policies.getPolicy("gold") as Policy;
    await assert.rejects(
      runner.runNow(p, vol("v1")),
      (e: unknown) =>
        statusOf(e) === Status.FAILED_PRECONDITION && /paused or deselected while it was queued/.test(String(e)),
    );
    assert.equal(jobs().length, before, "no job");
    h.catalog.policies.upsertProtection({ ...(record() as ProtectionRecord), pausedReason: "" });
    pauseDuringProbe();
    const all = await runner.runNow(p);
    assert.deepEqual(all.jobIds, []);
    assert.match(all.skipped[0]?.reason ?? "", /paused or deselected while it was queued/);
  });

  it("a policy made again under a deleted policy's name does not apply its retention to the old policy's backups", async () => {
    h.catalog.policies.insertPolicy(
      policy({ retention: RetentionRule.fromPartial({ keepLast: 10 }), createdAt: new Date(h.t) }),
    );
    await runner.tick();
    await runSlots(3);
    const old = jobs().map((j) => j.backupId);
    assert.equal(old.length, 3);
    h.catalog.policies.deletePolicy("gold");
    runner.changed("gold");
    h.t += 1000;
    h.catalog.policies.insertPolicy(
      policy({ retention: RetentionRule.fromPartial({ keepLast: 1 }), createdAt: new Date(h.t) }),
    );
    runner.changed("gold");
    await runner.tick();
    await runSlots(2);
    const deleted = jobs(JobKind.JOB_KIND_DELETE).map((d) => d.backupId);
    assert.deepEqual(
      old.filter((id) => deleted.includes(id)),
      [],
      "the deleted policy's backups stay",
    );
    assert.equal(deleted.length, 1, "its own first backup goes (keep_last 1)");
  });

  it("queues one backup per slot, keyed by (policy, volume, slot); a retried tick queues nothing", async () => {
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    const rec = record();
    assert.ok(rec);
    assert.equal(rec.nextSlotAt, Date.UTC(2026, 11, 1, 0, 1, 0));
    assert.equal(jobs().length, 0, "first slot not due yet");
    h.t = rec.nextSlotAt;
    await runner.tick();
    await runner.tick();
    const js = jobs();
    assert.equal(js.length, 1);
    const key = slotKey("gold", vol("v1"), rec.nextSlotAt);
    assert.equal(js[0]?.idempotencyKey, key);
    assert.match(key, /^[A-Za-z0-9._:-]{1,128}$/);
    const after = record();
    assert.equal(after?.lastJobId, js[0]?.id);
    assert.equal(after?.lastSlotAt, rec.nextSlotAt);
    assert.equal(after?.nextSlotAt, rec.nextSlotAt + INTERVAL * 1000);
    assert.equal(after?.missedRuns, 0);
  });

  it("a scheduled run is not probed unless the volume's previous run failed; RunPolicyNow always is", async () => {
    const asked: string[] = [];
    for (const s of h.sessions.all() as FakeAgentSession[]) {
      const answer = s.answer;
      s.answer = (req) => {
        asked.push(`${s.cluster}:${req.$case}`);
        return answer(req);
      };
    }
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    h.t = record()?.nextSlotAt ?? 0;
    await runner.tick();
    assert.equal(jobs().length, 1);
    assert.deepEqual(asked, [], "a first run with no failure: no probe");
    assert.equal(h.backup(jobs()[0]?.backupId ?? "").location?.pool, "backups");
    assert.equal(h.backup(jobs()[0]?.backupId ?? "").sizeBytes, 0, "unknown until the agent reports it");
    finishAll();
    h.catalog.updateBackup({ ...h.backup(jobs()[0]?.backupId ?? ""), sizeBytes: 1 << 30 });
    h.t += INTERVAL * 1000;
    await runner.tick();
    await runner.tick();
    assert.equal(jobs().length, 2);
    assert.deepEqual(asked, [], "after a success: no probe");
    assert.equal(h.backup(jobs()[1]?.backupId ?? "").sizeBytes, 1 << 30, "the previous backup's size");
    // The run fails: the next one is probed.
    const j2 = jobs()[1];
    assert.ok(j2);
    h.catalog.updateJob({ ...j2, state: JobState.JOB_STATE_FAILED, finishedAt: h.t, errorMessage: "NOT_FOUND" });
    h.t += INTERVAL * 1000;
    await runner.tick();
    await runner.tick();
    assert.equal(record()?.consecutiveFailures, 1);
    assert.deepEqual(asked.sort(), ["a:probe", "b:probe"], "after a failure the run is probed");
    assert.equal(jobs().length, 3);
    // RunPolicyNow (an API caller waits): probed.
    finishAll();
    asked.length = 0;
    await runner.tick();
    await runner.runNow(h.catalog.policies.getPolicy("gold") as Policy);
    assert.deepEqual(asked.sort(), ["a:probe", "b:probe"]);
  });

  it("RunPolicyNow: a volume whose protection is paused or whose run still goes is skipped with why, one that cannot be queued too; the others run", async () => {
    const vols = [vol("v1"), vol("v2"), vol("gone"), vol("v4")];
    h.catalog.policies.insertPolicy(
      policy({ selector: { volumes: vols, cluster: "", pool: "", namespace: "", imageRegex: "" } }),
    );
    await runner.tick();
    const paused = record("gold", vol("v2"));
    assert.ok(paused);
    h.catalog.policies.upsertProtection({ ...paused, pausedReason: "failed over to b/rbd/v2-copy" });
    const gone = (req: CallRequest): Answer =>
      req.$case === "probe" && req.value.image?.image === "gone"
        ? {
            $case: "probe",
            value: { missingPools: [], missingNamespaces: [], imageExists: false, imageSize: 0, imageSnapshots: [] },
          }
        : srcAnswer(req);
    (h.sessions.any("a") as unknown as FakeAgentSession).answer = gone;
    const p = h.catalog.policies.getPolicy("gold") as Policy;
    const first = await runner.runNow(p);
    assert.equal(first.jobIds.length, 2, "v1 and v4 queued");
    const queued = first.jobIds.map((id) => h.job(id).volume?.image).sort();
    assert.deepEqual(queued, ["v1", "v4"]);
    const why = Object.fromEntries(first.skipped.map((x) => [x.volume.image, x.reason]));
    assert.deepEqual(Object.keys(why).sort(), ["gone", "v2"]);
    assert.match(why.v2 ?? "", /protection is paused \(failed over to b\/rbd\/v2-copy\)/);
    assert.match(why.gone ?? "", /not found/);
    // Again while v1's and v4's runs still go: nothing queued twice.
    const second = await runner.runNow(p);
    assert.deepEqual(second.jobIds, []);
    assert.ok(
      second.skipped.some((x) => x.volume.image === "v1" && /still going \(job /.test(x.reason)),
      JSON.stringify(second.skipped),
    );
    assert.equal(jobs().length, 2, "no second job for a volume whose run still goes");
    // Named alone, a paused volume's refusal is the call's error.
    await assert.rejects(runner.runNow(p, vol("v2")), (e: unknown) => {
      assert.ok(e instanceof AppError);
      assert.equal(e.status, Status.FAILED_PRECONDITION);
      assert.match(e.message, /protection is paused/);
      return true;
    });
    assert.equal(jobs().length, 2);
  });

  it("a RunPolicyNow landing while a tick's earlier launch batch is probed: its volume is not queued twice", async () => {
    // 17 volumes: two launch batches. v00's run is probed (its previous run failed); while it is, an
    // operator runs v16, which is in the second batch, read at the tick's start.
    const vols = Array.from({ length: 17 }, (_, i) => vol(`v${String(i).padStart(2, "0")}`));
    h.catalog.policies.insertPolicy(policy({ selector: PolicySelector.fromPartial({ volumes: vols }) }));
    await runner.tick();
    const r0 = record("gold", vols[0]);
    assert.ok(r0);
    h.catalog.policies.upsertProtection({ ...r0, consecutiveFailures: 1, lastError: "job x: boom" });
    let manual: Promise<unknown> | undefined;
    onProbe = () => {
      manual = runner.runNow(h.catalog.policies.getPolicy("gold") as Policy, vols[16]);
    };
    h.t = r0.nextRunAt + 1;
    await runner.tick();
    const ran = (await manual) as { jobIds: string[] };
    assert.equal(ran.jobIds.length, 1);
    const of16 = jobs().filter((j) => j.volume.image === "v16");
    assert.deepEqual(
      of16.map((j) => j.id),
      ran.jobIds,
      "only the operator's run of v16; its slot counts as missed (a run still going)",
    );
    assert.equal(record("gold", vols[16])?.lastJobId, ran.jobIds[0], "the record keeps the operator's run");
    assert.equal(jobs().filter((j) => j.volume.image !== "v16").length, 16, "every other volume ran its slot");
  });

  it("a cluster whose agent hangs holds back only its own runs: another cluster's are queued meanwhile", async () => {
    // 16 probed runs of cluster c (their previous runs failed) whose agent does not answer, then a run
    // of a volume of cluster a: in one queue of launch batches it waited for c's probes (up to 30 s each batch).
    let release: (() => void) | undefined;
    const hung = new Promise<void>((r) => {
      release = r;
    });
    h.connect("agent-c", "c").answer = async (req) => {
      await hung;
      return srcAnswer(req);
    };
    const onC = Array.from({ length: 16 }, (_, i) => vol(`c${String(i).padStart(2, "0")}`, "c"));
    h.catalog.policies.insertPolicy(
      policy({ name: "a-first", selector: PolicySelector.fromPartial({ volumes: onC }) }),
    );
    h.catalog.policies.insertPolicy(
      policy({ name: "b-later", selector: PolicySelector.fromPartial({ volumes: [vol("v1")] }) }),
    );
    await runner.tick();
    for (const v of onC) {
      const r = record("a-first", v) as ProtectionRecord;
      h.catalog.policies.upsertProtection({ ...r, consecutiveFailures: 1, lastError: "job x: boom" });
    }
    h.t = Math.max(...[...onC.map((v) => record("a-first", v)), record("b-later")].map((r) => r?.nextRunAt ?? 0)) + 1;
    const tick = runner.tick();
    try {
      await until(
        () => jobs().some((j) => j.volume.image === "v1"),
        "cluster a's run queued while c's probes hang",
        5_000,
      );
      assert.equal(jobs().filter((j) => j.volume.cluster === "c").length, 0, "c's runs still wait for their probes");
    } finally {
      release?.();
      await tick;
    }
    assert.equal(jobs().filter((j) => j.volume.cluster === "c").length, 16, "c's runs queued once its agent answered");
  });

  it("a selector moved to a pool not listed yet: volumes of the old pool are not kept (nor run) meanwhile", async () => {
    images = ["vol-1", "vol-2"];
    const sel = { volumes: [], cluster: "a", pool: "rbd", namespace: "", imageRegex: "vol-.*" };
    h.catalog.policies.insertPolicy(policy({ selector: sel }));
    runner.selected("gold");
    await until(() => {
      void runner.tick();
      return h.catalog.policies.protectionOfPolicy("gold").length === 2;
    }, "listed");
    // Moved to another pool whose listing fails (its agent errs): the old pool's volumes go at once, not
    // when a listing of the new pool comes.
    for (const s of h.sessions.ofCluster("a") as FakeAgentSession[]) {
      const answer = s.answer;
      s.answer = (req) => (req.$case === "images" ? new AppError(Status.UNAVAILABLE, "busy (fake)") : answer(req));
    }
    const moved = policy({ selector: { ...sel, pool: "other" } });
    h.catalog.policies.updatePolicy({ ...moved, revision: 2 });
    runner.changed("gold");
    const jobsBefore = jobs().length;
    h.t += 7 * 24 * 3_600_000; // past every slot the old records had
    await runner.tick();
    assert.deepEqual(h.catalog.policies.protectionOfPolicy("gold"), [], "no record of the old pool's volumes");
    assert.equal(jobs().length, jobsBefore, "no run of the old pool's volumes");
  });

  it("a slot whose previous run is still going is missed (counted), not queued", async () => {
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    h.t = (record()?.nextSlotAt ?? 0) + 1;
    await runner.tick();
    h.t += INTERVAL * 1000;
    await runner.tick();
    assert.equal(jobs().length, 1);
    assert.equal(record()?.missedRuns, 1);
  });

  it("a stopped runner (its term ended) starts no tick: a due slot is left to the next leader's runner", async () => {
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    h.t = (record()?.nextRunAt ?? 0) + 1;
    runner.stop();
    runner.changed("gold"); // an API call's wake-up after the term ended
    runner.soon();
    await runner.tick();
    assert.equal(jobs().length, 0, "nothing queued by the stopped runner");
    runner = newRunner();
    await runner.tick();
    assert.equal(jobs().length, 1, "the next runner runs the slot");
  });

  it("after a restart, slots passed while down run once and the others count as missed", async () => {
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    h.t = record()?.nextSlotAt ?? 0;
    await runner.tick();
    finishAll();
    runner.stop();
    // Down for 5 periods; a new runner (the restarted coordinator) on the same catalog.
    const due = record()?.nextSlotAt ?? 0;
    h.t = due + 4 * INTERVAL * 1000 + 5_000;
    runner = newRunner();
    await runner.tick();
    await runner.tick();
    const js = jobs();
    assert.equal(js.length, 2, "one run for the missed slots");
    assert.equal(js[1]?.idempotencyKey, slotKey("gold", vol("v1"), due));
    assert.equal(record()?.missedRuns, 4);
    assert.ok((record()?.nextRunAt ?? 0) > h.t);
  });

  it("a run's duration is observed once: a run that ended before a restart is not observed again by the new runner", async () => {
    const metrics = new PolicyMetrics(() => []);
    const withMetrics = () => runnerOver(h, { tickMs: 1000, discoveryIntervalMs: 30_000 }, () => h.t, metrics);
    const observed = async (result: string) =>
      (await metrics.runDuration.get()).values.find(
        (v) => v.metricName?.endsWith("_count") && v.labels.result === result,
      )?.value ?? 0;
    runner.stop();
    runner = withMetrics();
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    h.t = record()?.nextSlotAt ?? 0;
    await runner.tick();
    const [j] = jobs();
    assert.ok(j);
    h.catalog.updateJob({ ...j, state: JobState.JOB_STATE_FAILED, errorMessage: "boom", finishedAt: h.t });
    h.t += 1000;
    await runner.tick();
    assert.equal(await observed("failed"), 1);
    assert.equal(record()?.consecutiveFailures, 1);
    // The coordinator restarts: the new runner settles the same run again, counting nothing twice.
    runner.stop();
    h.t += 1000;
    runner = withMetrics();
    await runner.tick();
    assert.equal(await observed("failed"), 1, "not observed again");
    assert.equal(record()?.consecutiveFailures, 1, "not counted again");
  });

  it("retention queues DELETE jobs for what keep_last no longer keeps, once", async () => {
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    for (let i = 0; i < 4; i++) {
      h.t = record()?.nextRunAt ?? 0;
      await runner.tick();
      finishAll();
      h.t += 1000;
      await runner.tick();
    }
    await runner.tick();
    const dels = jobs(JobKind.JOB_KIND_DELETE);
    const backups = jobs().map((j) => j.backupId);
    assert.deepEqual(
      dels.map((d) => d.backupId).sort(),
      backups.slice(0, 2).sort(),
      "the two oldest go, the two newest stay",
    );
    for (const id of backups.slice(0, 2)) assert.equal(h.backup(id).status, BackupStatus.BACKUP_STATUS_DELETING);
    for (const id of backups.slice(2)) assert.equal(h.backup(id).status, BackupStatus.BACKUP_STATUS_AVAILABLE);
  });

  it('a policy moved to its cluster\'s default pool (pool "") applies retention there only: the backups it left in its former pool stay', async () => {
    h.catalog.policies.insertPolicy(policy({ destination: { cluster: "b", pool: "pool-x", namespace: "" } }));
    await runner.tick();
    await runSlots(2);
    const inX = jobs().map((j) => j.backupId);
    assert.deepEqual(
      inX.map((id) => h.backup(id).location?.pool),
      ["pool-x", "pool-x"],
    );
    h.catalog.policies.updatePolicy(policy({ destination: { cluster: "b", pool: "", namespace: "" } }));
    await runSlots(3);
    const inDefault = jobs()
      .map((j) => j.backupId)
      .filter((id) => !inX.includes(id));
    assert.deepEqual(
      inDefault.map((id) => h.backup(id).location?.pool),
      ["backups", "backups", "backups"],
    );
    assert.deepEqual(
      jobs(JobKind.JOB_KIND_DELETE).map((d) => d.backupId),
      [inDefault[0]],
      "keep_last 2 of the default pool's three: its oldest goes",
    );
    for (const id of inX) assert.equal(h.backup(id).status, BackupStatus.BACKUP_STATUS_AVAILABLE, "left in pool-x");
  });

  it("the clock stepping back a day (a new leader's slow clock): runs go on at the next slot, and retention deletes nothing dated after now", async () => {
    h.catalog.policies.insertPolicy(policy({ retention: RetentionRule.fromPartial({ keepLast: 1 }) }));
    await runner.tick();
    await runSlots(2);
    const before = jobs(JobKind.JOB_KIND_DELETE).length;
    assert.equal(before, 1, "keep_last 1: the first of two goes");
    runner.stop();
    h.t -= 86_400_000;
    runner = newRunner();
    await runner.tick();
    const rec = record();
    assert.ok(rec && rec.nextSlotAt <= h.t + INTERVAL * 1000, "slotted from this clock, not a day on");
    assert.match(
      h.log.lines.find((l) => l.msg.startsWith("runs slotted by a clock ahead"))?.msg ?? "",
      /moved to the next slot/,
    );
    await runSlots(1);
    const made = jobs().at(-1);
    assert.ok(made);
    assert.equal(h.backup(made.backupId).status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.equal(jobs(JobKind.JOB_KIND_DELETE).length, before, "dated a day ahead, the others stay: nothing deleted");
    assert.ok(h.log.lines.some((l) => l.msg.startsWith("retention held")));
  });

  /** A keep_last 1 policy with two runs behind it and a third queued: the DELETEs so far. */
  async function thirdRunQueued(): Promise<number> {
    h.catalog.policies.insertPolicy(
      policy({ retention: RetentionRule.fromPartial({ keepLast: 1 }), createdAt: new Date(h.t) }),
    );
    await runner.tick();
    await runSlots(2);
    const before = jobs(JobKind.JOB_KIND_DELETE).length;
    h.t = (record()?.nextRunAt ?? 0) + 1;
    await runner.tick();
    return before;
  }

  it("a run that succeeds once its protection was paused by a failover applies no retention", async () => {
    const before = await thirdRunQueued(); // queued before the failover
    const rec = record();
    assert.ok(rec);
    h.catalog.policies.upsertProtection({ ...rec, pausedReason: "failed over to b/rbd/v1-dr" });
    finishAll();
    h.t += 1000;
    await runner.tick();
    await runner.tick();
    assert.equal(jobs(JobKind.JOB_KIND_DELETE).length, before, "nothing more deleted while paused");
    // Resumed: its next run applies retention again (what keep_last 1 no longer keeps goes).
    h.catalog.policies.upsertProtection({ ...(record() as typeof rec), pausedReason: "" });
    await runSlots(1);
    await runner.tick();
    assert.ok(jobs(JobKind.JOB_KIND_DELETE).length > before, "retention once resumed");
  });

  it("retention DELETEs withdrawn while queued (a failover, a deleted policy) end CANCELLED saying so, their backups AVAILABLE; a later pass queues them again, unlike an operator's cancel", async () => {
    h.catalog.policies.insertPolicy(
      policy({ retention: RetentionRule.fromPartial({ keepLast: 1 }), createdAt: new Date(h.t) }),
    );
    await runner.tick();
    await runSlots(2);
    const [first] = jobs(JobKind.JOB_KIND_DELETE);
    assert.ok(first, "the older backup's DELETE");
    const victim = first.backupId;
    assert.equal(first.state, JobState.JOB_STATE_QUEUED);
    const b9 = { ...newBackup(vol("v9"), "b", h.t), status: BackupStatus.BACKUP_STATUS_AVAILABLE };
    h.catalog.insertBackup(b9);
    const other = h.queueDelete(b9.id, `pol:silver:del:${b9.id}`); // another policy's, another volume's
    // A queued retry (attempted before: its first attempt may have removed the snapshot) is not withdrawn.
    const b10 = { ...newBackup(vol("v1"), "b", h.t), status: BackupStatus.BACKUP_STATUS_AVAILABLE, policy: "gold" };
    h.catalog.insertBackup(b10);
    const retried = h.queueDelete(b10.id, `pol:gold:del:${b10.id}`);
    h.catalog.updateJob({ ...h.job(retried.id), attempts: 1 });
    const deps = { catalog: h.catalog, scheduler: h.scheduler, log: h.log };
    assert.deepEqual(withdrawRetentionDeletes(deps, { policy: "gold", volume: vol("v2") }, "x"), [], "another volume");
    assert.deepEqual(withdrawRetentionDeletes(deps, { volume: vol("v1") }, "paused by failover job f1"), [first.id]);
    assert.equal(h.job(first.id).state, JobState.JOB_STATE_CANCELLED);
    assert.equal(h.job(first.id).errorMessage, `${WITHDRAWN}paused by failover job f1`);
    assert.equal(h.backup(victim).status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.equal(h.job(other.id).state, JobState.JOB_STATE_QUEUED, "another policy's, another volume's");
    assert.equal(h.job(retried.id).state, JobState.JOB_STATE_QUEUED, "attempted before: goes on");
    h.scheduler.cancel(h.job(retried.id));
    // Resumed: the next pass decides again and queues it under the next key.
    await runSlots(1);
    const again = jobs(JobKind.JOB_KIND_DELETE).filter((d) => d.backupId === victim);
    assert.deepEqual(
      again.map((d) => d.idempotencyKey),
      [first.idempotencyKey, `${first.idempotencyKey}:2`],
    );
    assert.equal(h.backup(victim).status, BackupStatus.BACKUP_STATUS_DELETING);
    // An operator's cancel of that one keeps the backup for good.
    const second = again[1] as JobRecord;
    h.scheduler.cancel(h.job(second.id));
    await runSlots(1);
    assert.equal(jobs(JobKind.JOB_KIND_DELETE).filter((d) => d.backupId === victim).length, 2);
    assert.equal(h.backup(victim).status, BackupStatus.BACKUP_STATUS_AVAILABLE);
  });

  it("a retention DELETE that failed (the backup AVAILABLE again) is followed by another on the next pass, never two at once", async () => {
    h.catalog.policies.insertPolicy(
      policy({ retention: RetentionRule.fromPartial({ keepLast: 1 }), createdAt: new Date(h.t) }),
    );
    await runner.tick();
    const backupRun = async () => {
      h.t = record()?.nextRunAt ?? 0;
      await runner.tick();
      finishAll();
      h.t += 1000;
      await runner.tick();
    };
    await backupRun();
    await backupRun();
    const [first] = jobs(JobKind.JOB_KIND_DELETE);
    assert.ok(first, "the older backup's DELETE");
    const victim = first.backupId;
    // The DELETE fails (the base image was busy): the backup is AVAILABLE again, as transitions.ts does.
    h.catalog.updateJob({ ...first, state: JobState.JOB_STATE_FAILED, finishedAt: h.t, errorMessage: "busy" });
    h.catalog.updateBackup({ ...h.backup(victim), status: BackupStatus.BACKUP_STATUS_AVAILABLE });
    await backupRun();
    const forVictim = jobs(JobKind.JOB_KIND_DELETE).filter((d) => d.backupId === victim);
    assert.equal(forVictim.length, 2, "a second DELETE of the backup the first one failed to delete");
    assert.equal(forVictim[1]?.idempotencyKey, `${first.idempotencyKey}:2`);
    assert.equal(h.backup(victim).status, BackupStatus.BACKUP_STATUS_DELETING);
    // While that one is active, another pass queues nothing more for it.
    await backupRun();
    assert.equal(jobs(JobKind.JOB_KIND_DELETE).filter((d) => d.backupId === victim).length, 2);
    // An operator cancels it (to keep the backup): retention does not queue it again.
    const second = jobs(JobKind.JOB_KIND_DELETE).filter((d) => d.backupId === victim)[1];
    assert.ok(second);
    h.catalog.updateJob({ ...second, state: JobState.JOB_STATE_CANCELLED, finishedAt: h.t });
    h.catalog.updateBackup({ ...h.backup(victim), status: BackupStatus.BACKUP_STATUS_AVAILABLE });
    await backupRun();
    assert.equal(jobs(JobKind.JOB_KIND_DELETE).filter((d) => d.backupId === victim).length, 2, "not again");
  });

  it("a failed run counts once as a consecutive failure", async () => {
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    h.t = record()?.nextRunAt ?? 0;
    await runner.tick();
    const j = jobs()[0];
    assert.ok(j);
    h.catalog.updateJob({ ...j, state: JobState.JOB_STATE_FAILED, errorMessage: "boom", finishedAt: h.t });
    await runner.tick();
    await runner.tick();
    runner = newRunner();
    await runner.tick();
    assert.equal(record()?.consecutiveFailures, 1);
    assert.equal(record()?.lastError, `job ${j.id}: boom`);
  });

  it("discovers pool images matching the regex; a new image within one discovery interval; an agent missing keeps records", async () => {
    images = ["vol-1", "other", "vol-2"];
    h.catalog.policies.insertPolicy(
      policy({ selector: { volumes: [], cluster: "a", pool: "rbd", namespace: "", imageRegex: "vol-.*" } }),
    );
    runner.selected("gold");
    await until(() => runner.selected("gold").length === 0, "first listing asked");
    await runner.tick();
    await until(() => (h.catalog.policies.protectionOfPolicy("gold").length ?? 0) > 0 || false, "listed");
    await runner.tick();
    assert.deepEqual(
      runner
        .selected("gold")
        .map((v) => v.image)
        .sort(),
      ["vol-1", "vol-2"],
    );
    images.push("vol-3");
    h.t += 30_000;
    await runner.tick();
    await until(() => {
      void runner.tick();
      return runner.selected("gold").length === 3;
    }, "vol-3 picked up");
    const age = () => runner.discoveryAges(h.t).find((a) => a.cluster === "a" && a.pool === "rbd")?.ageSeconds;
    assert.ok((age() ?? 99) < 30, `listed moments ago: ${age()}`);
    // The agent goes: listings fail, the volumes keep their records — and the pool's listing ages.
    for (const s of h.sessions.ofCluster("a")) h.sessions.remove(s);
    const listed = h.t;
    h.t += 30_000;
    await runner.tick();
    await runner.tick();
    assert.equal(h.catalog.policies.protectionOfPolicy("gold").length, 3);
    h.t += 3_600_000;
    await runner.tick();
    assert.ok((age() ?? 0) >= (h.t - listed) / 1000 - 31, `the failed listings leave it aging: ${age()}`);
  });

  it("a paused record goes once its policy no longer selects the volume; a run the failover cancelled is no failure", async () => {
    h.catalog.policies.insertPolicy(
      policy({ selector: PolicySelector.fromPartial({ volumes: [vol("v1"), vol("v2")] }) }),
    );
    await runner.tick();
    h.t = (record()?.nextRunAt ?? 0) + 1;
    await runner.tick(); // runs queued for both
    for (const v of [vol("v1"), vol("v2")]) {
      const r = record("gold", v);
      assert.ok(r);
      h.catalog.policies.upsertProtection({ ...r, pausedReason: "failed over" });
    }
    const run = jobs().find((j) => j.volume.image === "v1");
    assert.ok(run);
    h.catalog.updateJob({ ...run, state: JobState.JOB_STATE_CANCELLED, finishedAt: h.t }); // by the failover
    h.t += 1000;
    await runner.tick();
    assert.equal(record("gold", vol("v1"))?.consecutiveFailures, 0, "not counted as a failure");
    assert.equal(record("gold", vol("v1"))?.lastError, "");
    // The operator takes v2 out of the policy: its paused record does not outlive the selection.
    const p = h.catalog.policies.getPolicy("gold") as Policy;
    h.catalog.policies.updatePolicy({
      ...p,
      selector: PolicySelector.fromPartial({ volumes: [vol("v1")] }),
      revision: p.revision + 1,
    });
    runner.changed("gold");
    h.t += 1000;
    await runner.tick();
    assert.equal(record("gold", vol("v2")), undefined, "v2's record went with its selection");
    assert.equal(record("gold", vol("v1"))?.pausedReason, "failed over", "v1 stays paused");
  });

  // The second: one destination written "" (the cluster's default backup pool, "backups" here) and the other by name.
  // The third: the catalog's record of b's agent names an older default pool than its live session, which
  // the backups use — the live one counts.
  for (const [vmsPool, dbsPool, staleRecord] of [
    ["backups", "backups", false],
    ["backups", "", false],
    ["backups", "", true],
  ] as const) {
    it(`two pool selectors to one destination that both match a new image: it gets one policy's record, not two (pools "${vmsPool}", "${dbsPool}"${staleRecord ? ", a stale agent record" : ""})`, async () => {
      if (staleRecord) {
        for (const a of h.catalog.listAgents().filter((x) => x.clusterName === "b"))
          h.catalog.upsertAgent({ ...a, defaultBackupPool: "old-backups" });
      }
      images = ["vm-1", "x-db"];
      const pooled = (name: string, imageRegex: string, pool: string) =>
        policy({
          name,
          selector: { volumes: [], cluster: "a", pool: "rbd", namespace: "", imageRegex },
          destination: { cluster: "b", pool, namespace: "" },
        });
      h.catalog.policies.insertPolicy(pooled("vms", "vm-.*", vmsPool));
      h.catalog.policies.insertPolicy(pooled("dbs", ".*-db", dbsPool));
      runner.selected("vms");
      runner.selected("dbs");
      await until(() => {
        void runner.tick();
        return runner.selected("vms").length === 1 && runner.selected("dbs").length === 1;
      }, "both listed");
      images = ["vm-1", "x-db", "vm-db"]; // matched by both regexes
      h.t += 30_000;
      await until(() => {
        void runner.tick();
        return h.catalog.policies.protectionOfVolume("a/rbd//vm-db").length > 0;
      }, "vm-db picked up");
      h.t += 30_000;
      await runner.tick();
      await runner.tick();
      assert.equal(h.catalog.policies.protectionOfVolume("a/rbd//vm-db").length, 1, "one policy per destination");
      const warned = () =>
        h.log.lines.filter((l) => l.msg.startsWith("a discovered volume is already protected")).length;
      assert.equal(warned(), 1, "the clash warned once, however many passes");
      // A change of either policy forgets its warned clashes: still there, it is warned again, once.
      const loser = h.catalog.policies.protectionOfVolume("a/rbd//vm-db")[0]?.policy === "vms" ? "dbs" : "vms";
      runner.changed(loser);
      h.t += 30_000;
      await until(() => {
        void runner.tick();
        return warned() === 2;
      }, "warned again after the change");
      await runner.tick();
      assert.equal(warned(), 2);
    });
  }

  it("a discovered volume paused by a failover stays paused when a listing lacks it and it comes back", async () => {
    images = ["vol-1", "vol-2"];
    h.catalog.policies.insertPolicy(
      policy({ selector: { volumes: [], cluster: "a", pool: "rbd", namespace: "", imageRegex: "vol-.*" } }),
    );
    runner.selected("gold");
    await until(() => {
      void runner.tick();
      return runner.selected("gold").length === 2;
    }, "both listed");
    const v1 = { cluster: "a", pool: "rbd", namespace: "", image: "vol-1" };
    const rec = record("gold", v1);
    assert.ok(rec);
    h.catalog.policies.upsertProtection({ ...rec, pausedReason: "failed over to b/rbd/vol-1" });
    images = ["vol-2"]; // the lost site's pool listed without it (or the image re-created later)
    h.t += 30_000;
    await until(() => {
      void runner.tick();
      return runner.selected("gold").length === 2 && !images.includes("vol-1");
    }, "listed again");
    images = ["vol-1", "vol-2"];
    h.t += 30_000;
    await runner.tick();
    await runner.tick();
    assert.equal(
      record("gold", v1)?.pausedReason,
      "failed over to b/rbd/vol-1",
      "still paused: only ResumePolicy resumes",
    );
  });
  /**
   * The agents' first probe runs `during` first: something the API does while a run is being queued.
   * A scheduled run is probed only after a failed one (jobs/backup-job.ts), so the record gets one.
   */
  const duringProbe = (during: () => void) => {
    const r = record();
    if (r) h.catalog.policies.upsertProtection({ ...r, consecutiveFailures: 1, lastError: "job x: failed" });
    let done = false;
    const answer = (req: CallRequest): Answer => {
      if (req.$case === "probe" && !done) {
        done = true;
        during();
      }
      return srcAnswer(req);
    };
    h.connect("agent-a", "a").answer = answer;
    h.connect("agent-b", "b").answer = answer;
  };

  it("a volume failed over while its run is being queued stays paused and gets no job", async () => {
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    const rec = record();
    assert.ok(rec);
    duringProbe(() => h.catalog.policies.upsertProtection({ ...rec, pausedReason: "failed over" }));
    h.t = rec.nextRunAt;
    await runner.tick();
    assert.equal(record()?.pausedReason, "failed over", "the pause is kept");
    assert.equal(jobs().length, 0, "no backup of the paused volume");
    h.t += INTERVAL * 1000;
    await runner.tick();
    assert.equal(record()?.pausedReason, "failed over");
    assert.equal(jobs().length, 0);
  });

  it("a policy deleted while its run is being queued: no job, no record brought back", async () => {
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    duringProbe(() => h.catalog.policies.deletePolicy("gold"));
    h.t = record()?.nextRunAt ?? 0;
    await runner.tick();
    assert.equal(record(), undefined);
    assert.equal(jobs().length, 0);
  });
  it("no agent connected at the slot (a restart): the same slot again a few seconds later, not a failure", async () => {
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    const slot = record()?.nextSlotAt ?? 0;
    for (const s of h.sessions.ofCluster("a")) h.sessions.remove(s);
    h.t = slot;
    await runner.tick();
    assert.equal(jobs().length, 0);
    assert.equal(record()?.nextSlotAt, slot, "the slot is kept");
    assert.equal(record()?.consecutiveFailures, 0);
    assert.match(record()?.lastError ?? "", /no agent of cluster a .*\(retrying\)$/);
    h.connect("agent-a", "a").answer = srcAnswer;
    h.t = record()?.nextRunAt ?? 0;
    assert.ok(h.t > slot && h.t < slot + INTERVAL * 1000);
    await runner.tick();
    assert.deepEqual(
      jobs().map((j) => j.idempotencyKey),
      [slotKey("gold", vol("v1"), slot)],
    );
    assert.equal(record()?.missedRuns, 0);
    finishAll();
    h.t += 1000;
    await runner.tick();
    assert.equal(record()?.lastError, "", "cleared by the success");
  });

  it("sleeps until a record's next run is due; a slot 30 min away: the safety pass bounds the sleep", async () => {
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    const rec = record();
    assert.ok(rec);
    assert.equal(rec.nextRunAt, Date.UTC(2026, 11, 1, 0, 1, 0));
    assert.equal(runner.nextWake, Math.min(rec.nextRunAt, h.t + SAFETY_PASS_MS));
    h.t = runner.nextWake;
    await runner.tick();
    if (h.t < rec.nextRunAt) {
      assert.equal(jobs().length, 0);
      assert.equal(runner.nextWake, rec.nextRunAt);
      h.t = rec.nextRunAt;
      await runner.tick();
    }
    assert.equal(jobs().length, 1, "queued at its due time");
    // A policy whose next slot is 30 minutes away still wakes within the safety pass.
    h.catalog.policies.insertPolicy(
      policy({
        name: "slow",
        ...({ selector: { volumes: [vol("v2")] }, schedule: { intervalSeconds: 3600 } } as Partial<Policy>),
      }),
    );
    runner.changed("slow");
    await runner.tick();
    h.catalog.updateJob({ ...(jobs()[0] as JobRecord), state: JobState.JOB_STATE_SUCCEEDED, finishedAt: h.t });
    await runner.tick();
    assert.ok(runner.nextWake > h.t && runner.nextWake <= h.t + SAFETY_PASS_MS, `${runner.nextWake - h.t} ms`);
  });

  it("no agent until the following slot: the slot is missed (not failed), once, with the reason", async () => {
    h.catalog.policies.insertPolicy(policy());
    await runner.tick();
    const slot = record()?.nextSlotAt ?? 0;
    for (const s of h.sessions.ofCluster("a")) h.sessions.remove(s);
    for (h.t = slot; h.t < slot + INTERVAL * 1000 - 5_000; h.t = record()?.nextRunAt ?? 0) await runner.tick();
    assert.equal(record()?.missedRuns, 0, "retried while the slot is current");
    await runner.tick();
    assert.equal(record()?.consecutiveFailures, 0, "no agent is not the volume's failure");
    assert.equal(record()?.missedRuns, 1);
    assert.match(record()?.lastError ?? "", /no agent/);
    assert.equal(record()?.nextSlotAt, slot + INTERVAL * 1000);
    assert.equal(jobs().length, 0);
  });
});

describe("policy runner wake-ups (real clock and timers)", () => {
  let h: Harness;
  let runner: PolicyRunner;
  afterEach(() => {
    runner.stop();
    h.close();
  });

  it("a started runner with a one-minute tick queues a run at its due time (its timer set to it)", async () => {
    h = new Harness();
    const answer = (): Answer => new AppError(Status.UNIMPLEMENTED, "no calls here");
    h.connect("agent-a", "a").answer = answer;
    h.connect("agent-b", "b").answer = answer;
    runner = runnerOver(h, { tickMs: 60_000, discoveryIntervalMs: 60_000 });
    h.catalog.policies.insertPolicy(policy({ ...({ schedule: { intervalSeconds: 1 } } as Partial<Policy>) }));
    runner.start();
    await until(() => h.catalog.listJobs({}, 10, "").items.length > 0, "the run (the runner slept past its due time)");
    const rec = h.catalog.policies.getProtection("gold", volumeKey(vol("v1")));
    assert.ok(rec && rec.lastJobId !== "");
  });
});
