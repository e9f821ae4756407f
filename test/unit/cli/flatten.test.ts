/**
 * The CLI's `volume flatten` against a fake coordinator in this process: the request built from the
 * flags, the printed job, --json, and usage errors caught before any call.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  type BackupServiceImplementation,
  type FlattenVolumeRequest,
  JobKind,
  JobState,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import { FakeApi } from "./fake-api";

const ID = "0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60";

let asked: FlattenVolumeRequest | undefined;
let calls = 0;

const handlers: Partial<BackupServiceImplementation> = {
  async flattenVolume(req) {
    calls++;
    asked = req;
    return { id: "job-fl", kind: JobKind.JOB_KIND_FLATTEN, state: JobState.JOB_STATE_QUEUED, backupId: ID } as never;
  },
};
const api = new FakeApi(handlers);
const cli = (args: string[]) => api.cli(args);

describe("CLI: volume flatten", () => {
  before(() => api.start());
  after(() => api.stop());

  it("the request from the flags; the job printed", async () => {
    const r = await cli(["volume", "flatten", "site-b/rbd/ns1/vol-1", "--backup", ID, "--idempotency-key", "fl-1"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(asked, {
      volume: { cluster: "site-b", pool: "rbd", namespace: "ns1", image: "vol-1" },
      backupId: ID,
      idempotencyKey: "fl-1",
    });
    assert.match(r.stdout, /job-fl/);
    assert.match(r.stderr, new RegExp(`backup ${ID}`));
  });

  it("--json: the job's JSON; no --backup: empty (the coordinator finds it)", async () => {
    const r = await cli(["--json", "volume", "flatten", "site-b/rbd/v"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).id, "job-fl");
    assert.equal(asked?.backupId, "");
  });

  it("no volume, or one that is not CLUSTER/POOL/IMAGE: a usage error before any call", async () => {
    const before = calls;
    for (const args of [
      ["volume", "flatten"],
      ["volume", "flatten", "site-b"],
    ]) {
      const r = await cli(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    }
    assert.equal(calls, before);
  });
});
