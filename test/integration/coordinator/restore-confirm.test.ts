/**
 * A restore is SUCCEEDED only when an agent of its TARGET cluster confirms the restored image (issue 12:
 * outcomes are confirmed by the side that holds the data). A real coordinator and agents: a backup of a
 * site-a volume on site-b, restored to site-a — the restore runs on site-b's agent, site-a's agent
 * confirms; the job is seen RUNNING while it is confirmed, and the data is byte-identical.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import { type Job, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { backupRequest, type Deployment, deploy, removeBackups, succeeded } from "../../helpers/coordinator";
import { uniqueName } from "../../helpers/lab";
import { sha, spec, Volumes } from "../../helpers/volumes";

describe("coordinator: restores are confirmed by the target cluster", () => {
  let d: Deployment;
  const vols = new Volumes();

  before(async () => {
    d = await deploy();
  });
  after(async () => {
    // The backups this file made leave the lab with it (their base images, snapshots, metadata).
    if (d) await removeBackups(d.client).catch((e) => console.log(`# cleanup: ${(e as Error).message}`));
    await d?.stop();
    await vols.cleanup();
  });

  it("a restore to site-a from a backup on site-b: RUNNING while site-a's agent confirms, then SUCCEEDED, byte-identical", async () => {
    const c = d.client;
    const v = await vols.create("site-a", "rbd", 8, 10, "rconfirm");
    const b = (await succeeded(c, (await c.createBackup(backupRequest({ cluster: "site-a", ...v }))).id)).backup;
    assert.ok(b);
    const target = { cluster: "site-a", pool: "rbd", namespace: "", image: uniqueName("rconfirmed") };
    vols.track("site-a", "rbd", target.image);
    const rj = await c.restoreBackup({
      backupId: b.id,
      target,
      mode: RestoreMode.RESTORE_MODE_NEW,
      idempotencyKey: "",
      flatten: false,
    });
    const events: Job[] = [];
    for await (const e of c.watchJob({ jobId: rj.id })) if (e.job) events.push(e.job);
    const last = events.at(-1) as Job;
    assert.equal(last.state, JobState.JOB_STATE_SUCCEEDED, `${last.errorCode}: ${last.errorMessage}`);
    const confirming = events.filter(
      (j) =>
        j.state === JobState.JOB_STATE_RUNNING &&
        new RegExp(`^confirming the restore of backup ${b.id} with target cluster site-a`).test(j.waitingReason),
    );
    assert.ok(confirming.length > 0, `a RUNNING event while confirming (seen: ${events.map((j) => j.waitingReason)})`);
    assert.match(d.coord.logs(), /restore reported done; confirming it with the cluster that holds it/);
    assert.equal(await sha("site-a", spec(target)), await sha("site-b", `backups/${b.baseImage}@${b.snapshot}`));
  });
});
