/**
 * Verification through the public API, on the lab clusters (real coordinator and agents): a backup's
 * digest map is recorded in Backup.integrity; VerifyBackup FULL and SOURCE pass on a clean backup; one
 * data object of the base image overwritten behind rbdbackup's back (`rados put`) makes a FULL verify
 * mark the backup CORRUPT naming that object's first block (the job SUCCEEDS); RestoreBackup then
 * refuses it (FAILED_PRECONDITION naming the backup) unless allow_corrupt; the next backup of the volume
 * to that location is FULL with forced_full_reason naming the corrupt backup; DeleteBackup still deletes
 * the CORRUPT backup.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { ClientError, Status } from "nice-grpc";
import { RestoreMode, VerifyMode } from "../../../src/gen/rbdbackup/v1/agent";
import { type Backup, BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import { backupRequest, type Deployment, deploy, succeeded } from "../../helpers/coordinator";
import { labCluster, rbdJson, uniqueName } from "../../helpers/lab";
import { MiB, Volumes } from "../../helpers/volumes";

const execFileP = promisify(execFile);
const OBJECT = 4 * MiB;
const CORRUPT_OBJECT = 5;
const BLOCK = 64 * 1024;

describe("coordinator: VerifyBackup, CORRUPT, restore refused, next backup FULL", () => {
  let d: Deployment;
  const vols = new Volumes();
  const tmp = mkdtempSync(path.join(tmpdir(), "rbdbackup-verify-api-"));
  let volume: VolumeRef;
  let first: Backup;

  const verify = async (backupId: string, mode: VerifyMode) => {
    const j = await d.client.verifyBackup({ backupId, mode, samplePercent: 0, idempotencyKey: "" });
    return succeeded(d.client, j.id, 300_000);
  };

  before(async () => {
    d = await deploy();
  });
  after(async () => {
    await d?.stop();
    await vols.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  });

  it("a backup records its digest map; FULL and SOURCE verify OK", async () => {
    const v = await vols.create("site-a", "rbd", 40, 10);
    const io = await vols.io("site-a", "rbd");
    const img = await io.imageOpen(v.image);
    try {
      await img.write(randomBytes(OBJECT), CORRUPT_OBJECT * OBJECT); // data in every block of that object
      await img.flush();
    } finally {
      await img.close();
    }
    volume = { cluster: "site-a", ...v };
    const job = await succeeded(d.client, (await d.client.createBackup(backupRequest(volume))).id, 300_000);
    assert.ok(job.backup);
    first = job.backup;
    vols.track("site-b", "backups", first.baseImage);
    assert.match(first.integrity?.imageDigest ?? "", /^[0-9a-f]{64}$/);
    assert.equal(first.integrity?.digestBlockSize, BLOCK);

    for (const mode of [VerifyMode.VERIFY_MODE_FULL, VerifyMode.VERIFY_MODE_SOURCE]) {
      const j = await verify(first.id, mode);
      assert.equal(j.verify?.ok, true, `${VerifyMode[mode]}: ${j.verify?.reason}`);
      assert.equal(j.verify?.mode, mode);
      const b = await d.client.getBackup({ backupId: first.id });
      assert.equal(b.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
      assert.equal(b.integrity?.lastVerifyOk, true);
      assert.equal(b.integrity?.lastVerifyMode, mode);
    }
  });

  it("rados put over a data object: FULL verify marks the backup CORRUPT naming that object's first block", async () => {
    const info = await rbdJson<{ id: string; object_size: number }>("site-b", ["info", `backups/${first.baseImage}`]);
    assert.equal(info.object_size, OBJECT);
    const oid = `rbd_data.${info.id}.${CORRUPT_OBJECT.toString(16).padStart(16, "0")}`;
    const file = path.join(tmp, "garbage");
    writeFileSync(file, randomBytes(OBJECT));
    await execFileP("rados", ["-c", labCluster("site-b").conf, "-p", "backups", "put", oid, file], {
      timeout: 120_000,
    });
    const j = await verify(first.id, VerifyMode.VERIFY_MODE_FULL);
    assert.equal(j.verify?.ok, false, "the mismatch is found");
    assert.equal(j.verify?.firstBadOffset, CORRUPT_OBJECT * OBJECT);
    assert.equal(j.verify?.firstBadLength, BLOCK);
    const b = await d.client.getBackup({ backupId: first.id });
    assert.equal(b.status, BackupStatus.BACKUP_STATUS_CORRUPT);
    assert.equal(b.integrity?.lastVerifyOk, false);
    assert.equal(b.integrity?.firstBadOffset, CORRUPT_OBJECT * OBJECT);
    assert.equal(b.integrity?.firstBadLength, BLOCK);
    assert.ok(b.integrity?.corruptReason);
  });

  it("RestoreBackup refuses the CORRUPT backup unless allow_corrupt", async () => {
    const target: VolumeRef = { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName("corrupt-restore") };
    const req = { backupId: first.id, target, mode: RestoreMode.RESTORE_MODE_NEW, idempotencyKey: "", flatten: false };
    await assert.rejects(d.client.restoreBackup({ ...req, allowCorrupt: false }), (e: unknown) => {
      assert.ok(e instanceof ClientError);
      assert.equal(Status[e.code], "FAILED_PRECONDITION", e.details);
      assert.match(e.details, new RegExp(`^backup ${first.id} is CORRUPT`));
      return true;
    });
    const r = await d.client.restoreBackup({ ...req, allowCorrupt: true });
    vols.track("site-b", "rbd", target.image);
    await succeeded(d.client, r.id, 300_000);
  });

  it("the next backup of the volume there is FULL, naming the corrupt backup; the CORRUPT one deletes", async () => {
    const job = await succeeded(d.client, (await d.client.createBackup(backupRequest(volume))).id, 300_000);
    const next = job.backup;
    assert.ok(next);
    vols.track("site-b", "backups", next.baseImage);
    assert.equal(next.incremental, false);
    assert.notEqual(next.baseImage, first.baseImage, "a new chain");
    assert.match(next.forcedFullReason, new RegExp(`^backup ${first.id} of chain ${first.baseImage} is CORRUPT`));
    const v = await verify(next.id, VerifyMode.VERIFY_MODE_FULL);
    assert.equal(v.verify?.ok, true, v.verify?.reason);

    await succeeded(d.client, (await d.client.deleteBackup({ backupId: first.id, idempotencyKey: "" })).id, 300_000);
    assert.equal((await d.client.getBackup({ backupId: first.id })).status, BackupStatus.BACKUP_STATUS_DELETED);
    await succeeded(d.client, (await d.client.deleteBackup({ backupId: next.id, idempotencyKey: "" })).id, 300_000);
  });
});
