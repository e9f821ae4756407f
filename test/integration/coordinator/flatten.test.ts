/**
 * FlattenVolume through the public API on the lab clusters (real coordinator and agents): two CLONE
 * restores of one backup; one clone flattened by hand with `rbd flatten` still blocks the backup's
 * delete (it is listed), and FlattenVolume on it succeeds with a warning and drops it from
 * Backup.clones; so does one removed by hand; FlattenVolume on the other (backup named) detaches it for real, content intact; the
 * delete then goes through. Bad requests: exact statuses, nothing queued.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { ClientError, Status } from "nice-grpc";
import { BackupStatus, JobKind } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import { backedUp, cloneRestored, type Deployment, deploy, succeeded } from "../../helpers/coordinator";
import { rbd, uniqueName } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";

async function status(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "OK";
  } catch (e) {
    assert.ok(e instanceof ClientError, String(e));
    return Status[e.code];
  }
}

describe("coordinator: FlattenVolume", () => {
  let d: Deployment;
  const vols = new Volumes();

  before(async () => {
    d = await deploy();
  });
  after(async () => {
    await d?.stop();
    vols.made.reverse(); // clones before the base images they may still depend on
    await vols.cleanup();
  });

  it("a hand-flattened clone leaves Backup.clones through FlattenVolume; a real clone is detached; then the delete", async () => {
    const c = d.client;
    const image = uniqueName("flat");
    const io = await vols.io("site-a", "rbd");
    await io.imageCreate(image, 64 * MiB);
    vols.track("site-a", "rbd", image);
    const img = await io.imageOpen(image);
    await img.write(randomBytes(4 * MiB), 8 * MiB);
    await img.flush();
    await img.close();
    const volume: VolumeRef = { cluster: "site-a", pool: "rbd", namespace: "", image };
    const { backup: b, source } = await backedUp(c, vols, volume);
    const clone = (name: string) => cloneRestored(c, vols, b.id, name);
    const byHand = await clone("byhand");
    const real = await clone("real");
    const removed = await clone("removed");
    assert.deepEqual((await c.getBackup({ backupId: b.id })).clones, [byHand, real, removed]);

    // Bad requests: exact statuses, no job queued.
    const flattens = async () =>
      (await c.listJobs({ kind: JobKind.JOB_KIND_FLATTEN, backupId: b.id, state: 0, pageSize: 100, pageToken: "" }))
        .jobs.length;
    const none = { ...real, image: uniqueName("not-a-clone") };
    assert.equal(await status(c.flattenVolume({ volume: none, backupId: "", idempotencyKey: "" })), "NOT_FOUND");
    assert.equal(
      await status(c.flattenVolume({ volume: real, backupId: randomUUID(), idempotencyKey: "" })),
      "NOT_FOUND",
    );
    assert.equal(
      await status(c.flattenVolume({ volume: real, backupId: "nope", idempotencyKey: "" })),
      "INVALID_ARGUMENT",
    );
    assert.equal(
      await status(c.flattenVolume({ volume: { ...real, pool: "" }, backupId: "", idempotencyKey: "" })),
      "INVALID_ARGUMENT",
    );
    assert.equal(await flattens(), 0);

    // Removed by hand: FlattenVolume succeeds with a warning and drops it from the list.
    await rbd("site-b", ["rm", "--no-progress", spec(removed)]);
    const gone = await succeeded(c, (await c.flattenVolume({ volume: removed, backupId: "", idempotencyKey: "" })).id);
    assert.match(gone.warnings.join("\n"), /no longer exists/);
    assert.deepEqual((await c.getBackup({ backupId: b.id })).clones, [byHand, real]);

    // Flattened by hand: still listed, so the delete is refused naming it.
    await rbd("site-b", ["flatten", "--no-progress", spec(byHand)]);
    assert.equal(await status(c.deleteBackup({ backupId: b.id })), "FAILED_PRECONDITION");

    // FlattenVolume on it: the agent finds no clone, the job succeeds with a warning, the list is mended.
    const j1 = await c.flattenVolume({ volume: byHand, backupId: "", idempotencyKey: "flat-byhand" });
    assert.equal(j1.kind, JobKind.JOB_KIND_FLATTEN);
    assert.equal(j1.backupId, b.id);
    const again = await c.flattenVolume({ volume: byHand, backupId: "", idempotencyKey: "flat-byhand" });
    assert.equal(again.id, j1.id, "the same idempotency key returns the same job");
    const done1 = await succeeded(c, j1.id);
    assert.match(done1.warnings.join("\n"), /already flattened/);
    assert.deepEqual((await c.getBackup({ backupId: b.id })).clones, [real]);
    assert.equal(await status(c.deleteBackup({ backupId: b.id })), "FAILED_PRECONDITION", "the real clone still");

    // FlattenVolume on the real clone, backup named: detached, content intact.
    const j2 = await succeeded(
      c,
      (await c.flattenVolume({ volume: real, backupId: b.id, idempotencyKey: "" })).id,
      300_000,
    );
    assert.deepEqual(j2.volume, real);
    assert.deepEqual((await c.getBackup({ backupId: b.id })).clones, []);
    assert.equal((await rbd("site-b", ["info", spec(real)])).includes("parent:"), false, "no parent left");
    assert.equal(await sha("site-b", spec(real)), source, "the flattened clone reads as the backup did");
    assert.equal(await sha("site-b", spec(byHand)), source);

    // No clone left: the delete goes through.
    const del = await succeeded(c, (await c.deleteBackup({ backupId: b.id })).id);
    assert.equal(del.backup?.status, BackupStatus.BACKUP_STATUS_DELETED);
  });
});
