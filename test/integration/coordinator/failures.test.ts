/**
 * Crashes around a running job, with real processes: the coordinator killed (-9) and restarted on its
 * catalog; the source agent killed (-9) so its lease expires and the job retries on another agent; the
 * source agent dying between the destination's commit and its report (a lost outcome).
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import {
  type Backup,
  type BackupServiceClient,
  BackupStatus,
  type Job,
  JobState,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import type { ImageRef } from "../../../src/gen/rbdbackup/v1/common";
import type { CoordinatorProcess } from "../../../src/lab/coordinator-process";
import { type RunningAgent, startAgent } from "../../helpers/agents";
import { backupRequest, freePort, startCoordinator, succeeded, waitAgents, waitJob } from "../../helpers/coordinator";
import { uniqueName } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";
import { exited, waitFor } from "../../helpers/wait";

/** Waits until the job runs and has moved some bytes. */
function waitMoving(c: BackupServiceClient, jobId: string): Promise<Job> {
  return waitFor(
    async () => {
      const j = await c.getJob({ jobId });
      assert.ok(j.state <= JobState.JOB_STATE_RUNNING, `job ended early: ${JobState[j.state]} ${j.errorMessage}`);
      return j.state === JobState.JOB_STATE_RUNNING && (j.progress?.bytesDone ?? 0) > 0 && j;
    },
    { what: `job ${jobId} to move data`, timeoutMs: 60_000, intervalMs: 50 },
  );
}

describe("coordinator: crashes", () => {
  const vols = new Volumes();

  /** The backup restores byte-identical; one backup snapshot on the volume, one base image holding it. */
  async function oneCleanBackup(api: BackupServiceClient, v: ImageRef, bk: Backup): Promise<void> {
    const target = { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName("restored") };
    vols.track("site-b", "rbd", target.image);
    await succeeded(
      api,
      (await api.restoreBackup({ backupId: bk.id, target, mode: RestoreMode.RESTORE_MODE_NEW, idempotencyKey: "" })).id,
    );
    assert.equal(await sha("site-b", spec(target)), await sha("site-a", spec(v, bk.snapshot)));
    await vols.settledBackupSnaps("site-a", v, [bk.snapshot]);
    const bases = (await (await vols.io("site-b", "backups")).imageList()).filter((i) => i.startsWith(`${v.image}.`));
    assert.deepEqual(bases, [bk.baseImage]);
  }
  const running: Array<{ stop(): Promise<void> }> = [];
  after(async () => {
    for (const p of running.reverse()) await p.stop().catch(() => {});
    await vols.cleanup();
  });

  it("kill -9 of the coordinator mid-job: after a restart the job ends cleanly and the catalog kept every backup", async () => {
    const listen = `127.0.0.1:${await freePort()}`;
    const sched = { leaseTtlMs: 4000, heartbeatIntervalMs: 1000, backoffBaseMs: 500 };
    let coord: CoordinatorProcess = await startCoordinator({ listen, scheduler: sched });
    running.push(coord);
    const a = await startAgent("site-a", { coordinator: listen });
    // A slow destination keeps the job running long enough to kill the coordinator under it.
    const b = await startAgent("site-b", { coordinator: listen, testFaults: { writeDelayMs: 300 } });
    running.push(a, b);
    await waitAgents(coord.client, 2);
    const small = await vols.create("site-a", "rbd", 8, 5);
    const earlier = (
      await succeeded(
        coord.client,
        (
          await coord.client.createBackup(backupRequest({ cluster: "site-a", ...small }))
        ).id,
      )
    ).backup;
    assert.ok(earlier);

    const v = await vols.create("site-a", "rbd", 128, 0);
    await vols.change(v, "site-a", { writes: 60, maxWrite: 4 * MiB });
    const job = await coord.client.createBackup(backupRequest({ cluster: "site-a", ...v }));
    await waitMoving(coord.client, job.id);
    await coord.kill();

    coord = await startCoordinator({ listen, scheduler: sched, dir: coord.dir });
    running.push(coord);
    const end = await waitJob(coord.client, job.id, 180_000);
    // Both agents reconnect by themselves (the job may end before the second one is back).
    await waitAgents(coord.client, 2);
    console.log(`# after the coordinator's restart the job ended ${JobState[end.state]} (attempts ${end.attempts})`);
    assert.ok(
      end.state === JobState.JOB_STATE_SUCCEEDED || end.state === JobState.JOB_STATE_FAILED,
      `final: ${JobState[end.state]}`,
    );
    const b2 = await coord.client.getBackup({ backupId: end.backupId });
    if (end.state === JobState.JOB_STATE_SUCCEEDED) {
      assert.equal(b2.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
      const target = { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName("restored") };
      vols.track("site-b", "rbd", target.image);
      await succeeded(
        coord.client,
        (
          await coord.client.restoreBackup({
            backupId: b2.id,
            target,
            mode: RestoreMode.RESTORE_MODE_NEW,
            idempotencyKey: "",
          })
        ).id,
      );
      assert.equal(await sha("site-b", spec(target)), await sha("site-a", spec(v, b2.snapshot)));
    } else {
      // Failed and cleaned: no snapshot of it on either side.
      assert.equal(b2.status, BackupStatus.BACKUP_STATUS_FAILED);
      assert.ok(!(await vols.snapNames("site-a", v)).some((s) => s.includes(b2.id)));
    }
    // Every earlier backup is still in the catalog, available.
    const again = await coord.client.getBackup({ backupId: earlier.id });
    assert.equal(again.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.equal(again.snapshot, earlier.snapshot);
  });

  it("kill -9 of the source agent mid-job: the lease expires and the job retries on another agent and succeeds", async () => {
    const coord = await startCoordinator({
      scheduler: { leaseTtlMs: 3000, heartbeatIntervalMs: 1000, backoffBaseMs: 300, maxAttempts: 3 },
    });
    running.push(coord);
    const a1: RunningAgent = await startAgent("site-a", { coordinator: coord.address, agentId: "agent-site-a-1" });
    running.push(a1);
    const b = await startAgent("site-b", { coordinator: coord.address, testFaults: { writeDelayMs: 300 } });
    running.push(b);
    await waitAgents(coord.client, 2);
    const v = await vols.create("site-a", "rbd", 128, 0);
    await vols.change(v, "site-a", { writes: 60, maxWrite: 4 * MiB });
    const job = await coord.client.createBackup(backupRequest({ cluster: "site-a", ...v }));
    await waitMoving(coord.client, job.id);
    await a1.kill();
    const killedAt = Date.now();
    const a2 = await startAgent("site-a", { coordinator: coord.address, agentId: "agent-site-a-2" });
    running.push(a2);
    const end = await succeeded(coord.client, job.id, 180_000);
    console.log(
      `# source agent killed: job succeeded after ${(Date.now() - killedAt) / 1000} s, attempts ${end.attempts}`,
    );
    assert.equal(end.attempts, 2);
    assert.equal(end.agentId, "agent-site-a-2");
    assert.match(coord.logs(), /lease expired/);
    // The dead agent's Ceph client was fenced, so its exclusive lock on the volume did not have to
    // time out (without it the retry waited ~25 s for the OSDs' watch timeout).
    assert.match(a2.logs(), /fenced the Ceph client of an agent that died/);
    assert.ok(end.backup);
    // The first attempt left nothing behind.
    await oneCleanBackup(coord.client, v, end.backup);
  });

  it("the source agent dies after the backup committed, before reporting: the retry reports that backup, SUCCEEDED", async () => {
    const coord = await startCoordinator({
      scheduler: { leaseTtlMs: 3000, heartbeatIntervalMs: 1000, backoffBaseMs: 300, maxAttempts: 3 },
    });
    running.push(coord);
    const a1: RunningAgent = await startAgent("site-a", {
      coordinator: coord.address,
      agentId: "agent-site-a-dies",
      testFaults: { dieBeforeOutcome: true },
    });
    running.push(a1);
    const b = await startAgent("site-b", { coordinator: coord.address });
    running.push(b);
    await waitAgents(coord.client, 2);
    const v = await vols.create("site-a", "rbd", 16, 6);
    const job = await coord.client.createBackup(backupRequest({ cluster: "site-a", ...v }));
    // The first attempt commits the backup on site-b, then its agent is gone without a word.
    await exited(a1.proc, "the agent with the fault", 60_000);
    const a2 = await startAgent("site-a", { coordinator: coord.address, agentId: "agent-site-a-after" });
    running.push(a2);
    const end = await succeeded(coord.client, job.id, 120_000);
    assert.equal(end.attempts, 2);
    assert.equal(end.agentId, "agent-site-a-after");
    const bk = end.backup;
    assert.ok(bk);
    assert.equal(bk.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.match(bk.warnings.join("\n"), /completed by an earlier attempt/);
    // One backup, made once.
    await oneCleanBackup(coord.client, v, bk);
  });
});
