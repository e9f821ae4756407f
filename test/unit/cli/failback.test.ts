/**
 * The CLI's `volume failback` against a fake coordinator in this process: the request built from the
 * flags, the printed job and backup, the --json response, and usage errors caught before any call.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  type BackupServiceImplementation,
  type FailbackVolumeRequest,
  JobKind,
  JobState,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import { FakeApi } from "./fake-api";

const ID = "0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60";

let failedBack: FailbackVolumeRequest | undefined;
let calls = 0;

const handlers: Partial<BackupServiceImplementation> = {
  async failbackVolume(req) {
    calls++;
    failedBack = req;
    return {
      job: { id: "job-fb", kind: JobKind.JOB_KIND_RESTORE, state: JobState.JOB_STATE_QUEUED, backupId: ID },
      backup: { id: ID },
    };
  },
};
const api = new FakeApi(handlers);
const cli = (args: string[]) => api.cli(args);

describe("CLI: volume failback", () => {
  before(() => api.start());
  after(() => api.stop());

  it("the request from the flags; the job and the common backup printed", async () => {
    const args = ["volume", "failback", "site-a/rbd/vol-1", "--from", "site-b/rbd/vol-1-over", "--backup", ID];
    const r = await cli([...args, "--idempotency-key", "back-1"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(failedBack, {
      volume: { cluster: "site-a", pool: "rbd", namespace: "", image: "vol-1" },
      source: { cluster: "site-b", pool: "rbd", namespace: "", image: "vol-1-over" },
      backupId: ID,
      idempotencyKey: "back-1",
      transfer: undefined,
    });
    assert.match(r.stdout, /job-fb/);
    assert.match(r.stderr, new RegExp(`backup ${ID}`));
  });

  it("--json: the response's JSON; no --backup: empty (the coordinator finds it)", async () => {
    const r = await cli(["--json", "volume", "failback", "site-a/rbd/v", "--from", "site-b/rbd/v"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).job.id, "job-fb");
    assert.equal(failedBack?.backupId, "");
  });

  it("no --from, or a --from that is not a volume: a usage error before any call", async () => {
    const before = calls;
    for (const args of [
      ["volume", "failback", "site-a/rbd/v"],
      ["volume", "failback", "site-a/rbd/v", "--from", "site-b"],
    ]) {
      const r = await cli(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    }
    assert.equal(calls, before);
  });
});
