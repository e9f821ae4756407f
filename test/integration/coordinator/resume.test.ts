/**
 * Resumable transfers with real processes (issue 14): the destination agent of a 1 GiB full backup
 * (and of a 1 GiB restore) is killed (-9) at ~60 % and restarted on its state directory; the job's
 * retry resumes from the destination's checkpoint instead of from zero: the bytes sent by all attempts
 * stay under 1.5 GiB, and the result restores (or is) byte-identical.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, it } from "node:test";
import { RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import { type BackupServiceClient, type Job, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { ImageRef } from "../../../src/gen/rbdbackup/v1/common";
import { type RunningAgent, startAgent } from "../../helpers/agents";
import { backupRequest, startCoordinator, succeeded, waitAgents } from "../../helpers/coordinator";
import { uniqueName } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";
import { tempDir, waitFor } from "../../helpers/wait";

const GiB = 1024 * MiB;

/** Waits until the job's running attempt has done `fraction` of its bytes. */
function waitDone(c: BackupServiceClient, jobId: string, fraction: number): Promise<Job> {
  return waitFor(
    async () => {
      const j = await c.getJob({ jobId });
      assert.ok(j.state <= JobState.JOB_STATE_RUNNING, `job ended early: ${JobState[j.state]} ${j.errorMessage}`);
      const p = j.progress;
      return (
        j.state === JobState.JOB_STATE_RUNNING && p && p.bytesTotal > 0 && p.bytesDone >= fraction * p.bytesTotal && j
      );
    },
    { what: `job ${jobId} at ${fraction * 100} %`, timeoutMs: 300_000, intervalMs: 100 },
  );
}

describe("resumable transfers: kill -9 of the destination at ~60 %", () => {
  const vols = new Volumes();
  const running: Array<{ stop(): Promise<void> }> = [];
  after(async () => {
    for (const p of running.reverse()) await p.stop().catch(() => {});
    await vols.cleanup();
  });

  /** 1 GiB, every byte data (random 4 MiB writes, sequential). */
  async function fullVolume(): Promise<ImageRef> {
    const v = await vols.create("site-a", "rbd", 1024, 0);
    const img = await (await vols.io("site-a", "rbd")).imageOpen(v.image);
    try {
      const buf = randomBytes(4 * MiB);
      for (let off = 0; off < GiB; off += 16 * MiB) {
        await Promise.all(
          [0, 1, 2, 3].map((i) => {
            const b = Buffer.from(buf);
            b.writeUInt32LE(off + i, 0);
            return img.write(b, off + i * 4 * MiB);
          }),
        );
      }
      await img.flush();
    } finally {
      await img.close();
    }
    return v;
  }

  it("a 1 GiB full backup resumes after the destination agent was killed, then a restore resumes the same way", async () => {
    const coord = await startCoordinator({
      scheduler: { leaseTtlMs: 4000, heartbeatIntervalMs: 1000, backoffBaseMs: 300, maxAttempts: 3 },
    });
    running.push(coord);
    // Slow destinations (writes delayed), so ~60 % is a moment the test can catch.
    const slow = { testFaults: { writeDelayMs: 100 }, limits: { writesInFlight: 4 } };
    const aOpts = {
      coordinator: coord.address,
      stateDir: tempDir("rbdbackup-resume-a-"),
      agentId: "agent-site-a-resume",
      ...slow,
    };
    const bOpts = {
      coordinator: coord.address,
      stateDir: tempDir("rbdbackup-resume-b-"),
      agentId: "agent-site-b-resume",
      ...slow,
    };
    let a: RunningAgent = await startAgent("site-a", aOpts);
    let b: RunningAgent = await startAgent("site-b", bOpts);
    running.push(a, b);
    await waitAgents(coord.client, 2);
    const v = await fullVolume();

    // The backup: kill -9 site-b's agent (the destination) at ~60 %, restart it on its state.
    const job = await coord.client.createBackup(backupRequest({ cluster: "site-a", ...v }));
    await waitDone(coord.client, job.id, 0.6);
    await b.kill();
    b = await startAgent("site-b", bOpts);
    running.push(b);
    assert.match(b.logs(), /kept .* for a retry/);
    const end = await succeeded(coord.client, job.id, 600_000);
    console.log(
      `# backup: attempts ${end.attempts}, bytes sent by all attempts ${(end.bytesTransferredAllAttempts / MiB).toFixed(0)} MiB`,
    );
    assert.equal(end.attempts, 2);
    assert.match(b.logs(), /resuming a transfer cut short/);
    assert.ok(end.bytesTransferredAllAttempts >= GiB, `${end.bytesTransferredAllAttempts}`);
    assert.ok(end.bytesTransferredAllAttempts < 1.5 * GiB, `${end.bytesTransferredAllAttempts} bytes sent in all`);
    const bk = end.backup;
    assert.ok(bk);
    // One snapshot on the source (the first attempt's, reused), one base image.
    assert.deepEqual(
      (await vols.snapNames("site-a", v)).filter((s) => s.startsWith("backup.")),
      [bk.snapshot],
    );
    const want = await sha("site-a", spec(v, bk.snapshot));
    assert.equal(await sha("site-b", `backups/${bk.baseImage}@${bk.snapshot}`), want);

    // The restore to a new volume on site-a: kill -9 site-a's agent (the restore's destination) at ~60 %.
    const target = { cluster: "site-a", pool: "rbd", namespace: "", image: uniqueName("resumed") };
    vols.track("site-a", "rbd", target.image);
    const rjob = await coord.client.restoreBackup({
      backupId: bk.id,
      target,
      mode: RestoreMode.RESTORE_MODE_NEW,
      idempotencyKey: "",
    });
    await waitDone(coord.client, rjob.id, 0.6);
    await a.kill();
    a = await startAgent("site-a", aOpts);
    running.push(a);
    const rend = await succeeded(coord.client, rjob.id, 600_000);
    console.log(
      `# restore: attempts ${rend.attempts}, bytes sent by all attempts ${(rend.bytesTransferredAllAttempts / MiB).toFixed(0)} MiB, resumed from ${rend.restore?.resumedFrom}`,
    );
    assert.equal(rend.attempts, 2);
    assert.ok((rend.restore?.resumedFrom ?? 0) > 0, "the restore resumed");
    assert.ok(rend.bytesTransferredAllAttempts < 1.5 * GiB, `${rend.bytesTransferredAllAttempts} bytes sent in all`);
    assert.equal(await sha("site-a", spec(target)), want);
  });
});
