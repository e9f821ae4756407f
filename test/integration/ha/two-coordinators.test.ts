/**
 * Two coordinators on one fresh PostgreSQL database, real agents of site-a and site-b that know both
 * addresses (issue 15's acceptance for several coordinators):
 *  - kill -9 of the leader while 20 small cross-cluster backups run: the standby leads within 10 s
 *    (measured and printed), every job ends SUCCEEDED, no job ran twice at once (every lease an agent
 *    received is one of the job's committed attempts), one backup per job, a sample restores
 *    byte-identical;
 *  - fencing: the leader SIGSTOPped until the other leads, then SIGCONTed: it steps down (STANDBY),
 *    and what it held in memory is not written by it.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { delay } from "../../../src/common/retry";
import { RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import {
  type BackupServiceClient,
  BackupStatus,
  CoordinatorRole,
  type Job,
  JobState,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import type { ImageRef } from "../../../src/gen/rbdbackup/v1/common";
import type { CoordinatorProcess } from "../../../src/lab/coordinator-process";
import { type RunningAgent, startAgent } from "../../helpers/agents";
import {
  backupRequest,
  FINAL,
  freePort,
  scrape,
  startCoordinator,
  succeeded,
  waitAgents,
} from "../../helpers/coordinator";
import { uniqueName } from "../../helpers/lab";
import { sample } from "../../helpers/metrics";
import { freshDatabase, pgSkip, type TestDatabase } from "../../helpers/postgres";
import { sha, spec, Volumes } from "../../helpers/volumes";
import { waitFor } from "../../helpers/wait";

const JOBS = 20;
const HA = { leaseSeconds: 5, renewMs: 1000 };
const SCHED = { leaseTtlMs: 10_000, heartbeatIntervalMs: 1000, backoffBaseMs: 500, perClusterLimit: 3 };

async function role(c: BackupServiceClient): Promise<CoordinatorRole> {
  return (await c.getCoordinatorStatus({})).role;
}

/** Waits until `c` leads; returns how long that took (ms). */
async function leads(c: BackupServiceClient, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  await waitFor(async () => (await role(c).catch(() => -1)) === CoordinatorRole.COORDINATOR_ROLE_LEADER, {
    what: "the coordinator to lead",
    timeoutMs,
    intervalMs: 100,
  });
  return Date.now() - t0;
}

/** The number of leases per job the agent received ("lease received" lines of its log). */
function leasesReceived(agent: RunningAgent): Map<string, number> {
  const n = new Map<string, number>();
  for (const line of agent.logs().split("\n")) {
    if (!line.includes('"lease received"')) continue;
    const job = /"job":"([0-9a-f-]+)"/.exec(line)?.[1];
    if (job) n.set(job, (n.get(job) ?? 0) + 1);
  }
  return n;
}

describe("two coordinators on one PostgreSQL catalog", { skip: pgSkip }, () => {
  const vols = new Volumes();
  const running: Array<{ stop(): Promise<void> }> = [];
  let db: TestDatabase;
  let a: CoordinatorProcess;
  let b: CoordinatorProcess;
  let agents: RunningAgent[] = [];
  /** Fixed addresses: a coordinator restarted keeps its own, which the agents know. */
  const listen: Record<string, string> = {};
  /** Backups made (their base images and objects on site-b are removed at the end). */
  const made: Array<{ id: string; baseImage: string }> = [];

  function coordinator(id: string): Promise<CoordinatorProcess> {
    return startCoordinator({ listen: listen[id], catalogUrl: db.url, ha: { id, ...HA }, scheduler: SCHED });
  }

  /** Notes a backup for the cleanup. */
  async function note(c: BackupServiceClient, backupId: string): Promise<void> {
    const bk = await c.getBackup({ backupId });
    made.push({ id: bk.id, baseImage: bk.baseImage });
    if (bk.baseImage) vols.track("site-b", "backups", bk.baseImage);
  }

  before(async () => {
    db = await freshDatabase();
    listen["coord-a"] = `127.0.0.1:${await freePort()}`;
    listen["coord-b"] = `127.0.0.1:${await freePort()}`;
    a = await coordinator("coord-a");
    running.push(a);
    await leads(a.client, 15_000);
    b = await coordinator("coord-b");
    running.push(b);
    const addresses = [a.address, b.address];
    agents = await Promise.all([
      startAgent("site-a", { coordinators: addresses }),
      // A slower destination keeps the jobs running while the leader is killed.
      startAgent("site-b", { coordinators: addresses, testFaults: { writeDelayMs: 100 } }),
    ]);
    running.push(...agents);
    await waitAgents(a.client, 2);
  });

  after(async () => {
    for (const p of running.reverse()) await p.stop().catch(() => {});
    const io = await vols.io("site-b", "backups");
    for (const m of made) {
      for (const suffix of ["meta", "digests"]) await io.objRemove(`backup.${m.id}.${suffix}`).catch(() => {});
    }
    await vols.cleanup();
    await db?.drop();
  });

  it("a standby serves reads, refuses mutating calls naming the leader, and reports its role", async () => {
    assert.equal(await role(a.client), CoordinatorRole.COORDINATOR_ROLE_LEADER);
    const st = await b.client.getCoordinatorStatus({});
    assert.equal(st.role, CoordinatorRole.COORDINATOR_ROLE_STANDBY);
    assert.equal(st.id, "coord-b");
    assert.equal(st.leaderId, "coord-a");
    assert.equal(st.leaderAddress, a.address);
    assert.equal(st.catalog, "postgresql");
    await b.client.listJobs({});
    let trailer = "";
    await assert.rejects(
      b.client.createBackup(backupRequest({ cluster: "site-a", pool: "rbd", namespace: "", image: "nope" }), {
        onTrailer: (md) => {
          trailer = md.get("rbdbackup-leader") ?? "";
        },
      }),
      (e: { code?: number; details?: string }) =>
        e.code === 14 && e.details === `this coordinator is a standby; the leader is coord-a at ${a.address}`,
    );
    assert.equal(trailer, a.address);
    // /metrics: the role, and agents only where they connect — a standby's 0 would page "no agent" forever.
    const [leaderText, standbyText] = await Promise.all([scrape(a.metricsAddress), scrape(b.metricsAddress)]);
    assert.equal(sample(leaderText, "rbdbackup_coordinator_leading"), 1);
    assert.equal(sample(standbyText, "rbdbackup_coordinator_leading"), 0);
    assert.equal(sample(leaderText, "rbdbackup_agents_connected", { cluster: "site-a" }), 1);
    assert.equal(
      sample(standbyText, "rbdbackup_agents_connected"),
      null,
      "a standby reports no agents_connected series",
    );
  });

  it("kill -9 of the leader mid-run: the standby leads within 10 s and every job succeeds exactly once", async () => {
    const volumes: ImageRef[] = [];
    for (let i = 0; i < JOBS; i++) volumes.push(await vols.create("site-a", "rbd", 8 + (i % 3) * 4, 6));
    const jobs: Job[] = [];
    for (const [i, v] of volumes.entries()) {
      const req = backupRequest({ cluster: "site-a", ...v }, { idempotencyKey: `ha-${i}-${v.image}` });
      jobs.push(await a.client.createBackup(req));
    }
    // Mid-run: some finished, some not.
    await waitFor(
      async () => {
        const states = await Promise.all(jobs.map(async (j) => (await a.client.getJob({ jobId: j.id })).state));
        const done = states.filter((s) => s === JobState.JOB_STATE_SUCCEEDED).length;
        return done >= 3 && done < JOBS - 3;
      },
      { what: "3 jobs to succeed", timeoutMs: 120_000, intervalMs: 100 },
    );
    await a.kill();
    running.splice(running.indexOf(a), 1);
    const takeoverMs = await leads(b.client, 20_000);
    console.log(`# takeover: coord-b leads ${takeoverMs} ms after kill -9 of coord-a`);
    assert.ok(takeoverMs < 10_000, `took over after ${takeoverMs} ms`);

    const ends = await Promise.all(jobs.map((j) => succeeded(b.client, j.id, 180_000)));
    for (const j of ends) await note(b.client, j.backupId);
    // One backup per job: distinct ids, each AVAILABLE, and each volume has exactly that one backup.
    assert.equal(new Set(ends.map((j) => j.backupId)).size, JOBS);
    for (const [i, v] of volumes.entries()) {
      const r = await b.client.listBackups({ cluster: "site-a", pool: v.pool, image: v.image, pageSize: 10 });
      assert.deepEqual(
        r.backups.map((x) => [x.id, BackupStatus[x.status]]),
        [[ends[i]?.backupId, "BACKUP_STATUS_AVAILABLE"]],
        `volume ${v.image}`,
      );
    }
    // No job ran twice at once: every lease the source agent received is a committed attempt of its job.
    const got = leasesReceived(agents[0] as RunningAgent);
    for (const j of ends) {
      const n = got.get(j.id) ?? 0;
      assert.ok(n >= 1 && n <= j.attempts, `job ${j.id}: ${n} leases received, ${j.attempts} attempts`);
    }
    console.log(`# attempts: ${ends.map((j) => j.attempts).join(",")}`);

    // A sample restores byte-identical.
    for (const i of [0, Math.floor(JOBS / 2), JOBS - 1]) {
      const v = volumes[i] as ImageRef;
      const bk = await b.client.getBackup({ backupId: ends[i]?.backupId ?? "" });
      // Restored at the source's site (the backup site's memstore stays small).
      const target = { cluster: "site-a", pool: "rbd", namespace: "", image: uniqueName("ha-restored") };
      vols.track("site-a", "rbd", target.image);
      const req = { backupId: bk.id, target, mode: RestoreMode.RESTORE_MODE_NEW, idempotencyKey: "" };
      await succeeded(b.client, (await b.client.restoreBackup(req)).id);
      assert.equal(await sha("site-a", spec(target)), await sha("site-a", spec(v, bk.snapshot)));
    }
  });

  it("fencing: a leader paused until the other leads, then resumed, steps down and writes nothing", async () => {
    // coord-b leads now; a fresh coord-a stands by.
    a = await coordinator("coord-a");
    running.push(a);
    assert.equal(await role(a.client), CoordinatorRole.COORDINATOR_ROLE_STANDBY);
    const v = await vols.create("site-a", "rbd", 16, 8);
    const job = await b.client.createBackup(backupRequest({ cluster: "site-a", ...v }));
    await waitFor(async () => (await b.client.getJob({ jobId: job.id })).state === JobState.JOB_STATE_RUNNING, {
      what: "the job to run",
      timeoutMs: 60_000,
      intervalMs: 50,
    });
    const before = await b.client.getJob({ jobId: job.id });
    b.proc.kill("SIGSTOP");
    let resumed = false;
    try {
      const takeoverMs = await leads(a.client, 20_000);
      console.log(`# fencing: coord-a leads ${takeoverMs} ms after SIGSTOP of coord-b`);
      // The job coord-b held is finished by coord-a (its agents reconnect there and claim it).
      const end = await succeeded(a.client, job.id, 120_000);
      await note(a.client, end.backupId);
      b.proc.kill("SIGCONT");
      resumed = true;
      await waitFor(async () => (await role(b.client)) === CoordinatorRole.COORDINATOR_ROLE_STANDBY, {
        what: "coord-b to step down",
        timeoutMs: 10_000,
        intervalMs: 50,
      });
      const st = await b.client.getCoordinatorStatus({});
      assert.equal(st.leaderId, "coord-a");
      // Whatever coord-b held in memory (the RUNNING job of attempt `before.attempts`) was not written by
      // it: the job stays as coord-a finished it.
      // A window for a misbehaving deposed leader to write (two of its renewal periods), then look.
      await delay(2 * HA.renewMs);
      const now = await a.client.getJob({ jobId: job.id });
      assert.deepEqual(
        [JobState[now.state], now.attempts, now.backupId],
        [JobState[end.state], end.attempts, end.backupId],
      );
      assert.ok(now.attempts >= before.attempts);
      const logs = b.logs();
      assert.match(logs, /stepping down: no longer the leader/);
      const fenced = /a catalog write was fenced/.test(logs);
      console.log(
        `# fencing: coord-b stepped down ${fenced ? "on a fenced write (FencedError logged)" : "on its lease check"}`,
      );
      assert.equal(FINAL.has(now.state), true);
    } finally {
      if (!resumed) b.proc.kill("SIGCONT");
    }
  });
});
