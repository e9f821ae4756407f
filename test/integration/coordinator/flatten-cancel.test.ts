/**
 * CancelJob on a running FLATTEN (real coordinator and agents on the lab clusters): librbd stops copying
 * the parent's objects, the job ends CANCELLED, and the volume is still the backup's clone — listed in
 * Backup.clones, its parent still there, its data unchanged; FlattenVolume afterwards finishes it. The
 * cancel waits for the job's progress to show the flatten under way (phase "flatten", bytes done).
 *
 * The flatten is made slow on purpose, so that the cancel lands while it runs: the volume has 64 KiB
 * objects (128 of them hold data), and site-b's agent reads a ceph.conf of its own in which librbd copies
 * one object at a time and the OSDs' replies reach it up to 20 ms late (ms_inject_delay_*, client side).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { type Job, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import type { CoordinatorProcess } from "../../../src/lab/coordinator-process";
import { startAgent } from "../../helpers/agents";
import { backedUp, cloneRestored, startCoordinator, succeeded, waitAgents, waitJob } from "../../helpers/coordinator";
import { rbd, uniqueName } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";
import { waitFor } from "../../helpers/wait";

const SLOW_LIBRBD = [
  "[client]",
  "rbd_concurrent_management_ops = 1",
  "ms_inject_delay_type = osd",
  "ms_inject_delay_probability = 1",
  "ms_inject_delay_max = 0.02",
].join("\n");

describe("coordinator: CancelJob on a running FLATTEN", () => {
  let coord: CoordinatorProcess;
  const agents: Array<{ stop(): Promise<void> }> = [];
  const vols = new Volumes();

  before(async () => {
    coord = await startCoordinator();
    agents.push(await startAgent("site-a", { coordinator: coord.address }));
    agents.push(await startAgent("site-b", { coordinator: coord.address, cephConfExtra: SLOW_LIBRBD }));
    await waitAgents(coord.client, 2);
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await coord?.stop();
    vols.made.reverse(); // the clone before the base image it may still depend on
    await vols.cleanup();
  });

  it("stops librbd, ends CANCELLED with the clone intact and listed; a second FlattenVolume detaches it", async () => {
    const c = coord.client;
    const image = uniqueName("flatcancel");
    const io = await vols.io("site-a", "rbd");
    await io.imageCreate(image, 16 * MiB, { order: 16 });
    vols.track("site-a", "rbd", image);
    const img = await io.imageOpen(image);
    await img.write(randomBytes(8 * MiB), 4 * MiB);
    await img.flush();
    await img.close();
    const volume: VolumeRef = { cluster: "site-a", pool: "rbd", namespace: "", image };
    const { backup: b, source } = await backedUp(c, vols, volume);
    const target = await cloneRestored(c, vols, b.id, "flatcancel-clone", 120_000);
    const isClone = async () => (await rbd("site-b", ["info", spec(target)])).includes("parent:");
    assert.ok(await isClone());

    // Cancelled once the agent reports the flatten under way.
    const first = await c.flattenVolume({ volume: target, backupId: "", idempotencyKey: "" });
    let seen: Job | undefined;
    const running = await waitFor(
      async () => {
        seen = await c.getJob({ jobId: first.id });
        assert.notEqual(seen.state, JobState.JOB_STATE_SUCCEEDED, "the flatten ended before it could be cancelled");
        return seen.progress?.phase === "flatten" && (seen.progress.bytesDone ?? 0) > 0 && seen;
      },
      { what: () => `the flatten's progress (last: ${JSON.stringify(seen)})`, timeoutMs: 60_000, intervalMs: 20 },
    );
    assert.equal(running.progress?.bytesTotal, 16 * MiB);
    await c.cancelJob({ jobId: first.id });
    const ended = await waitJob(c, first.id, 60_000);
    assert.equal(JobState[ended.state], "JOB_STATE_CANCELLED", `${ended.errorCode}: ${ended.errorMessage}`);
    assert.ok(await isClone(), "still a clone: librbd stopped copying");
    assert.deepEqual((await c.getBackup({ backupId: b.id })).clones, [target], "still listed among the clones");
    assert.equal(await sha("site-b", spec(target)), source, "the clone reads as before");

    // Flattened for real this time.
    const second = await succeeded(
      c,
      (await c.flattenVolume({ volume: target, backupId: "", idempotencyKey: "" })).id,
      300_000,
    );
    assert.equal(second.kind, first.kind);
    assert.equal(await isClone(), false, "no parent left");
    assert.deepEqual((await c.getBackup({ backupId: b.id })).clones, []);
    assert.equal(await sha("site-b", spec(target)), source, "the flattened volume reads as the backup did");
  });
});
