/**
 * The CLI's CLONE restore and failover verbs (`backup restore --mode clone --flatten`, `volume
 * failover`) against a fake coordinator in this process: the request built from the flags, the
 * printed job, and usage errors caught before any call. No Ceph involved.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import {
  type BackupServiceImplementation,
  type FailoverVolumeRequest,
  JobKind,
  JobState,
  type RestoreBackupRequest,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import { FakeApi } from "./fake-api";

const ID = "0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60";

let restored: RestoreBackupRequest | undefined;
let failedOver: FailoverVolumeRequest | undefined;
let calls = 0;

const handlers: Partial<BackupServiceImplementation> = {
  async restoreBackup(req) {
    calls++;
    restored = req;
    return { id: "job-r", kind: JobKind.JOB_KIND_RESTORE, state: JobState.JOB_STATE_QUEUED, backupId: req.backupId };
  },
  async failoverVolume(req) {
    calls++;
    failedOver = req;
    return {
      job: { id: "job-f", kind: JobKind.JOB_KIND_RESTORE, state: JobState.JOB_STATE_QUEUED, backupId: ID },
      backup: { id: ID },
      pausedPolicies: ["gold"],
    };
  },
};
const api = new FakeApi(handlers);
const cli = (args: string[]) => api.cli(args);

describe("CLI: clone restore and failover", () => {
  before(() => api.start());
  after(() => api.stop());

  it("backup restore --mode clone --flatten: a CLONE request with flatten", async () => {
    const r = await cli(["backup", "restore", ID, "--target", "site-b/rbd/vol-1-now", "--mode", "clone", "--flatten"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(restored?.mode, RestoreMode.RESTORE_MODE_CLONE);
    assert.equal(restored?.flatten, true);
    assert.deepEqual(restored?.target, { cluster: "site-b", pool: "rbd", namespace: "", image: "vol-1-now" });
    assert.match(r.stdout, /job-r/);
  });

  it("backup restore --mode original --allow-open --skip-image-meta: both in the request; without them both false", async () => {
    const args = ["backup", "restore", ID, "--target", "site-b/rbd/vol-1", "--mode", "original"];
    const r = await cli([...args, "--allow-open", "--skip-image-meta"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual([restored?.allowOpen, restored?.skipImageMeta], [true, true]);
    assert.equal((await cli(args)).code, 0);
    assert.deepEqual([restored?.allowOpen, restored?.skipImageMeta], [false, false]);
  });

  it("--flatten without --mode clone: usage error, no call", async () => {
    const before = calls;
    const r = await cli(["backup", "restore", ID, "--target", "site-b/rbd/x", "--flatten"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--flatten needs --mode clone/);
    assert.equal(calls, before);
  });

  it("volume failover: the request from the flags; the paused policies named", async () => {
    const r = await cli([
      "volume",
      "failover",
      "site-a/rbd/vol-1",
      "--from",
      "site-b/backups",
      "--target",
      "site-b/rbd/vol-1",
      "--flatten",
      "--reason",
      "site-a down",
      "--idempotency-key",
      "drill-1",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(failedOver, {
      volume: { cluster: "site-a", pool: "rbd", namespace: "", image: "vol-1" },
      location: { cluster: "site-b", pool: "backups", namespace: "" },
      target: { cluster: "site-b", pool: "rbd", namespace: "", image: "vol-1" },
      flatten: true,
      idempotencyKey: "drill-1",
      reason: "site-a down",
    });
    assert.match(r.stdout, /job-f/);
    assert.match(r.stderr, /paused for policies: gold/);
  });

  it("volume failover --json: the response's JSON", async () => {
    const r = await cli([
      "--json",
      "volume",
      "failover",
      "site-a/rbd/v",
      "--from",
      "site-b",
      "--target",
      "site-b/rbd/v",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.job.id, "job-f");
    assert.deepEqual(doc.pausedPolicies, ["gold"]);
  });

  it("volume failover: a target on another cluster, or no --from, is a usage error before any call", async () => {
    const before = calls;
    const other = await cli(["volume", "failover", "site-a/rbd/v", "--from", "site-b", "--target", "site-a/rbd/v"]);
    assert.equal(other.code, 2);
    assert.match(other.stderr, /--target must be on the --from cluster site-b/);
    const none = await cli(["volume", "failover", "site-a/rbd/v", "--target", "site-b/rbd/v"]);
    assert.equal(none.code, 2);
    assert.equal(calls, before);
  });
});
