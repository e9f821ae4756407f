/**
 * Failback without a full copy, through the public API on the lab clusters (real coordinator and
 * agents): a volume at site-a is backed up to site-b, failed over there (a CLONE restore), written at
 * site-b (8 MiB in two whole objects) while the original also changed after the backup, then failed
 * back: the original is rolled back to its snapshot of the backup and only the clone's own extents
 * travel — the job's bytes sent equal the bytes changed, not the volume — and the original reads
 * exactly as the failed-over volume (sha256 of `rbd export`, size included). Then the fallbacks, each
 * a full copy with its reason in the job and the same identity: the original without that snapshot,
 * the original gone (re-created), the failed-over volume shrunk and grown back, the failed-over volume
 * flattened.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { ClientError, Status } from "nice-grpc";
import { RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import { type Job, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import { backupRequest, type Deployment, deploy, succeeded, waitJob } from "../../helpers/coordinator";
import { rbd, uniqueName } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";

const OBJECT = 4 * MiB; // the lab's default object size (order 22)

describe("coordinator: failback without a full copy", () => {
  let d: Deployment;
  const vols = new Volumes();
  let backupId = "";
  let failedOver: VolumeRef | undefined;

  before(async () => {
    d = await deploy();
  });
  after(async () => {
    // The clone before the backup it depends on (with what a failed test left on it: snapshots); the
    // backup through the API (metadata object too). Each step runs whatever the one before said: a step
    // that threw before d.stop() left the daemons running and this file's process waiting on them.
    const steps: Array<() => Promise<unknown>> = [
      async () => {
        if (!failedOver) return;
        await rbd("site-b", ["snap", "purge", "--no-progress", spec(failedOver)]).catch(() => {});
        await rbd("site-b", ["rm", "--no-progress", spec(failedOver)]);
      },
      async () => {
        if (backupId) await succeeded(d.client, (await d.client.deleteBackup({ backupId })).id);
      },
      async () => d?.stop(),
      () => vols.cleanup(),
    ];
    const failed: unknown[] = [];
    for (const step of steps) await step().catch((e: unknown) => failed.push(e));
    if (failed.length > 0) throw failed[0]; // after every step: a cleanup that failed still fails the file
  });

  async function write(cluster: string, v: VolumeRef, at: number[], len: number): Promise<void> {
    const io = await vols.io(cluster, v.pool);
    const img = await io.imageOpen(v.image);
    await Promise.all(at.map((off) => img.write(randomBytes(len), off)));
    await img.flush();
    await img.close();
  }

  async function failback(volume: VolumeRef, source: VolumeRef): Promise<Job> {
    const r = await d.client.failbackVolume({ volume, source, backupId: "", idempotencyKey: "" });
    assert.equal(r.backup?.id, backupId, "the common point is the failed-over backup");
    const j = await succeeded(d.client, r.job?.id ?? "", 300_000);
    assert.equal(j.restore?.target?.image, volume.image);
    return j;
  }

  it("sends the changes since the failover, then falls back to full copies with the reason", async () => {
    const c = d.client;
    // V at site-a: 256 MiB thin, 16 MiB written; backed up to site-b.
    const image = uniqueName("fb");
    const ioA = await vols.io("site-a", "rbd");
    await ioA.imageCreate(image, 256 * MiB);
    vols.track("site-a", "rbd", image);
    const volume: VolumeRef = { cluster: "site-a", pool: "rbd", namespace: "", image };
    await write(
      "site-a",
      volume,
      [0, 20, 40, 60].map((i) => i * OBJECT),
      OBJECT,
    );
    const b = (await succeeded(c, (await c.createBackup(backupRequest(volume))).id)).backup;
    assert.ok(b);
    backupId = b.id;
    assert.ok((await vols.snapNames("site-a", volume)).includes(b.snapshot), "V keeps its snapshot of the backup");

    // Failover: V' at site-b, a clone of the backup. V changes after the backup too (lost writes).
    const target: VolumeRef = { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName("fb-over") };
    const fo = await c.failoverVolume({
      volume,
      location: { cluster: "site-b", pool: "backups", namespace: "" },
      target,
      flatten: false,
      idempotencyKey: "",
      reason: "failback test",
    });
    await succeeded(c, fo.job?.id ?? "");
    failedOver = target;
    await write("site-a", volume, [30 * OBJECT + 12345], MiB);

    // 8 MiB written at site-b, in two whole objects (one over data of the backup, one over a hole),
    // the volume grown by 64 MiB, one object of the backup's data trimmed.
    await write("site-b", target, [20 * OBJECT, 50 * OBJECT], OBJECT);
    await rbd("site-b", ["resize", "--no-progress", "--size", "320M", spec(target)]);
    // And a trim over the backup's data (an fstrim at site-b): V must read zeros there too.
    const ioB = await vols.io("site-b", "rbd");
    const over = await ioB.imageOpen(target.image);
    await over.discard(40 * OBJECT, OBJECT);
    await over.flush();
    await over.close();
    const changed = 2 * OBJECT;
    const want = await sha("site-b", spec(target));

    // A snapshot left by an attempt that died: the next attempt removes it; a user's own snapshot whose
    // name merely starts the same way stays.
    const leftover = `failback.${randomUUID()}`;
    await rbd("site-b", ["snap", "create", "--no-progress", spec(target, leftover)]);
    await rbd("site-b", ["snap", "create", "--no-progress", spec(target, "failback.safety")]);

    // V' still open by another client (a VM that kept running at site-b): refused, nothing changed —
    // its writes after the failback's snapshot would be lost.
    const vBefore = await sha("site-a", spec(volume));
    const vm = await ioB.imageOpen(target.image);
    try {
      const r = await c.failbackVolume({ volume, source: target, backupId: "", idempotencyKey: "" });
      const failed = await waitJob(c, r.job?.id ?? "");
      assert.equal(failed.state, JobState.JOB_STATE_FAILED);
      assert.equal(failed.errorCode, "FAILED_PRECONDITION", failed.errorMessage);
      assert.match(failed.errorMessage, /failed-over volume .* is in use \(watched by client\.\d+/);
    } finally {
      await vm.close();
    }
    assert.equal(await sha("site-a", spec(volume)), vBefore, "V unchanged by the refused failback");
    assert.ok(
      !(await vols.snapNames("site-b", target)).some(
        (s) => s.startsWith("failback.") && s !== "failback.safety" && s !== leftover,
      ),
      "no failback snapshot made",
    );

    // The failback: rollback + the clone's own objects only.
    const j1 = await failback(volume, target);
    // V's lost writes (made after the backup) are kept in a snapshot before the rollback, and said.
    const kept = `rbdbackup-before-failback.${j1.id}`;
    assert.ok((await vols.snapNames("site-a", volume)).includes(kept), "V's data before the failback kept");
    assert.equal(await sha("site-a", spec(volume, kept)), vBefore, "the kept snapshot reads as V did");
    assert.ok(
      j1.warnings.some((w) => w.includes(`kept in its snapshot ${kept}`)),
      `the job says so: ${j1.warnings}`,
    );
    assert.equal(j1.restore?.fullCopyReason, "", `no full copy (${j1.restore?.fullCopyReason})`);
    const sent = j1.restore?.dataBytesSent ?? 0;
    const zeros = j1.restore?.zeroBytes ?? 0;
    console.log(
      `# failback: ${changed / MiB} MiB written + ${OBJECT / MiB} MiB trimmed at site-b; sent ${(sent / MiB).toFixed(1)} MiB of data, ${(zeros / MiB).toFixed(1)} MiB of zeros`,
    );
    assert.equal(sent, changed, "bytes sent = bytes changed (whole objects), not the volume");
    assert.ok(zeros >= OBJECT, "the trimmed object travels as a zero range");
    assert.equal(await sha("site-a", spec(volume)), want, "V reads exactly as V' (size included)");
    const snaps = await vols.snapNames("site-b", target);
    assert.deepEqual(
      snaps.filter((s) => s.startsWith("failback.")),
      ["failback.safety"],
      `the failback snapshots of V' are gone, the user's stays: ${snaps}`,
    );
    await rbd("site-b", ["snap", "rm", "--no-progress", spec(target, "failback.safety")]);

    // Not possible: V lacks the snapshot → a full copy, the reason in the job.
    await write("site-b", target, [70 * OBJECT], MiB);
    await rbd("site-a", ["snap", "rm", "--no-progress", spec(volume, b.snapshot)]);
    const j2 = await failback(volume, target);
    assert.match(j2.restore?.fullCopyReason ?? "", new RegExp(`has no snapshot ${b.snapshot.replaceAll(".", "\\.")}`));
    // All of V''s data: the backup's 4 objects (one rewritten, one trimmed), the new object, the new 1 MiB.
    const all = 4 * OBJECT + MiB;
    const sent2 = j2.restore?.dataBytesSent ?? 0;
    assert.ok(sent2 >= all, `every allocated byte of V' was sent (${sent2} of ${all})`);
    assert.equal(await sha("site-a", spec(volume)), await sha("site-b", spec(target)));

    // V gone → re-created by a full copy.
    await rbd("site-a", ["snap", "purge", "--no-progress", spec(volume)]);
    await rbd("site-a", ["rm", "--no-progress", spec(volume)]);
    const j3 = await failback(volume, target);
    assert.match(j3.restore?.fullCopyReason ?? "", /does not exist/);
    assert.equal(await sha("site-a", spec(volume)), await sha("site-b", spec(target)));

    // V' shrunk below the backup's object at 240 MiB, then grown back: it reads zeros there, though no
    // object of its own says so (librbd lowered its parent overlap for good). V has a snapshot named as
    // the backup's again (taken now: it holds the parent's object there) → a full copy, the reason in the
    // job; its own objects alone would have left V that object.
    await rbd("site-a", ["snap", "create", "--no-progress", spec(volume, b.snapshot)]);
    await rbd("site-b", ["resize", "--no-progress", "--allow-shrink", "--size", `${59 * 4}M`, spec(target)]);
    await rbd("site-b", ["resize", "--no-progress", "--size", "320M", spec(target)]);
    const shrunk = await failback(volume, target);
    assert.match(shrunk.restore?.fullCopyReason ?? "", /was shrunk since the failover/);
    assert.equal(await sha("site-a", spec(volume)), await sha("site-b", spec(target)), "V reads as V' again");
    await rbd("site-a", ["snap", "purge", "--no-progress", spec(volume)]);

    // V' flattened → a full copy.
    await rbd("site-b", ["flatten", "--no-progress", spec(target)]);
    await write("site-b", target, [10 * OBJECT], MiB);
    const j4 = await failback(volume, target);
    assert.match(j4.restore?.fullCopyReason ?? "", /no longer a clone .* \(flattened\)/);
    assert.equal(await sha("site-a", spec(volume)), await sha("site-b", spec(target)));

    // RestoreBackup does not take mode FAILBACK (it needs the failed-over volume).
    await assert.rejects(
      c.restoreBackup({ backupId: b.id, target: volume, mode: RestoreMode.RESTORE_MODE_FAILBACK }),
      (e: unknown) =>
        e instanceof ClientError && e.code === Status.INVALID_ARGUMENT && /FailbackVolume/.test(e.details),
    );
  });
});
