/**
 * The CLI's verification verbs against a fake coordinator in this process: `backup verify` (the request
 * built from the flags, usage errors caught before any call, --wait's exit code on a mismatch),
 * `backup restore --allow-corrupt`, and CORRUPT with its integrity in `backup show` / `backup list`.
 * No Ceph involved.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { VerifyMode } from "../../../src/gen/rbdbackup/v1/agent";
import {
  type Backup,
  type BackupServiceImplementation,
  BackupStatus,
  type Job,
  JobKind,
  JobState,
  type RestoreBackupRequest,
  type VerifyBackupRequest,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import { FakeApi } from "./fake-api";

const ID = "0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60";

let verified: VerifyBackupRequest | undefined;
let restored: RestoreBackupRequest | undefined;
let calls = 0;

const corrupt: Partial<Backup> = {
  id: ID,
  status: BackupStatus.BACKUP_STATUS_CORRUPT,
  volume: { cluster: "site-a", pool: "rbd", namespace: "", image: "vol-1" },
  location: { cluster: "site-b", pool: "backups", namespace: "" },
  integrity: {
    imageDigest: "ab".repeat(32),
    digestBlockSize: 65536,
    lastVerifiedAt: new Date(Date.UTC(2026, 11, 2)),
    lastVerifyMode: VerifyMode.VERIFY_MODE_FULL,
    lastVerifyOk: false,
    corruptReason: "block 64 differs",
    firstBadOffset: 4194304,
    firstBadLength: 65536,
  },
};

const verifyJob = (state: JobState, ok: boolean): Partial<Job> => ({
  id: "job-v",
  kind: JobKind.JOB_KIND_VERIFY,
  state,
  backupId: ID,
  verify:
    state === JobState.JOB_STATE_SUCCEEDED
      ? {
          backupId: ID,
          mode: VerifyMode.VERIFY_MODE_FULL,
          ok,
          blocksChecked: 16,
          bytesRead: 1 << 20,
          badBlocks: ok ? 0 : 1,
          firstBadOffset: ok ? 0 : 4194304,
          firstBadLength: ok ? 0 : 65536,
          reason: ok ? "" : "block 64 differs",
          seconds: 1,
          warnings: [],
        }
      : undefined,
});
let outcomeOk = true;

const handlers: Partial<BackupServiceImplementation> = {
  async verifyBackup(req) {
    calls++;
    verified = req;
    return verifyJob(JobState.JOB_STATE_QUEUED, true) as Job;
  },
  async getJob() {
    return verifyJob(JobState.JOB_STATE_SUCCEEDED, outcomeOk) as Job;
  },
  async *watchJob() {
    yield { job: verifyJob(JobState.JOB_STATE_SUCCEEDED, outcomeOk) as Job, keepalive: false };
  },
  async restoreBackup(req) {
    calls++;
    restored = req;
    return {
      id: "job-r",
      kind: JobKind.JOB_KIND_RESTORE,
      state: JobState.JOB_STATE_QUEUED,
      backupId: req.backupId,
    } as Job;
  },
  async getBackup() {
    return corrupt as Backup;
  },
  async listBackups() {
    return { backups: [corrupt as Backup], nextPageToken: "" };
  },
};
const api = new FakeApi(handlers);
const cli = (args: string[]) => api.cli(args);

describe("CLI: backup verify, restore --allow-corrupt, CORRUPT shown", () => {
  before(() => api.start());
  after(() => api.stop());

  it("backup verify: SAMPLE by default; --mode and --sample make the request", async () => {
    let r = await cli(["backup", "verify", ID]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(verified?.idempotencyKey ?? "", /^cli-[0-9a-f-]{36}$/, "a key made up for the call");
    assert.deepEqual(verified, {
      backupId: ID,
      mode: VerifyMode.VERIFY_MODE_SAMPLE,
      samplePercent: 0,
      idempotencyKey: verified?.idempotencyKey,
    });
    assert.match(r.stdout, /job-v/);
    r = await cli(["backup", "verify", ID, "--sample", "25"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(verified?.samplePercent, 25);
    r = await cli(["backup", "verify", ID, "--mode", "source"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(verified?.mode, VerifyMode.VERIFY_MODE_SOURCE);
  });

  it("usage errors are caught before any call", async () => {
    const before = calls;
    for (const args of [
      ["--mode", "deep"],
      ["--sample", "0"],
      ["--sample", "101"],
      ["--mode", "full", "--sample", "5"],
    ]) {
      const r = await cli(["backup", "verify", ID, ...args]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    }
    assert.equal((await cli(["backup", "verify"])).code, 2);
    assert.equal(calls, before);
  });

  it("--wait: exit 0 when everything matched, 1 on a mismatch (the finding printed)", async () => {
    outcomeOk = true;
    let r = await cli(["backup", "verify", ID, "--mode", "full", "--wait"]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    outcomeOk = false;
    r = await cli(["backup", "verify", ID, "--mode", "full", "--wait"]);
    assert.equal(r.code, 1, r.stderr + r.stdout);
    assert.match(r.stdout, /MISMATCH/);
  });

  it("backup restore --allow-corrupt sets allow_corrupt", async () => {
    let r = await cli(["backup", "restore", ID, "--target", "site-b/rbd/r1"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(restored?.allowCorrupt, false);
    r = await cli(["backup", "restore", ID, "--target", "site-b/rbd/r1", "--allow-corrupt"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(restored?.allowCorrupt, true);
  });

  it("backup show and list: CORRUPT, the last verification and the first bad extent", async () => {
    const show = await cli(["backup", "show", ID]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /status:?\s+corrupt/);
    assert.match(show.stdout, /last verified:?\s+2026-12-02T00:00:00.000Z \(full, MISMATCH\)/);
    assert.match(show.stdout, /first bad extent:?\s+offset 4194304 \(\+65536 bytes\)/);
    assert.match(show.stdout, /corrupt:?\s+block 64 differs/);
    const list = await cli(["backup", "list", "--status", "corrupt"]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`${ID}.*corrupt`));
  });
});
