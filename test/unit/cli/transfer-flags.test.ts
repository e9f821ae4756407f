/**
 * `--compression` and `--bandwidth-limit` (src/cli/transfer-flags.ts) against a fake BackupService:
 * rates with suffixes, the TransferOptions each verb sends (backup create, backup restore, policy
 * create and update — an update keeps the fields no flag names), usage errors before any call, help.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { parseRate, transferText } from "../../../src/cli/transfer-flags";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import {
  type CreateBackupRequest,
  JobKind,
  JobState,
  type RestoreBackupRequest,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import { Policy, type UpdatePolicyRequest } from "../../../src/gen/rbdbackup/v1/policy";
import { FakeApi } from "./fake-api";

const ID = "0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60";
const MiB = 1048576;
let created: CreateBackupRequest | undefined;
let restored: RestoreBackupRequest | undefined;
let policyCreated: Policy | undefined;
let updated: UpdatePolicyRequest | undefined;
let calls = 0;

const stored = Policy.fromPartial({
  name: "gold",
  selector: { cluster: "site-a", pool: "rbd" },
  destination: { cluster: "site-b" },
  mode: BackupMode.BACKUP_MODE_AUTO,
  schedule: { intervalSeconds: 900 },
  retention: { keepLast: 3 },
  revision: 3,
  transfer: { compression: Compression.COMPRESSION_ZSTD, bandwidthLimitBytesPerSecond: 50 * MiB },
});

const job = (id: string, kind: JobKind) => ({ id, kind, state: JobState.JOB_STATE_QUEUED, backupId: ID });
const api = new FakeApi({
  async createBackup(req) {
    calls++;
    created = req;
    return job("job-1", JobKind.JOB_KIND_BACKUP);
  },
  async restoreBackup(req) {
    calls++;
    restored = req;
    return job("job-r", JobKind.JOB_KIND_RESTORE);
  },
  async createPolicy(req) {
    calls++;
    policyCreated = req.policy;
    return { ...stored, ...req.policy, revision: 1 };
  },
  async getPolicy() {
    return stored;
  },
  async updatePolicy(req) {
    calls++;
    updated = req;
    return { ...stored, ...req.policy, revision: 4 };
  },
});
const cli = (args: string[]) => api.cli(args);

describe("CLI: --compression and --bandwidth-limit", () => {
  before(() => api.start());
  after(() => api.stop());

  it("rates: bytes per second, K/M/G/T are powers of 1024", () => {
    assert.equal(parseRate("8388608"), 8 * MiB);
    assert.equal(parseRate("100M"), 100 * MiB);
    assert.equal(parseRate("100MiB/s"), 100 * MiB);
    assert.equal(parseRate("1.5g"), 1.5 * 1024 * MiB);
    assert.equal(parseRate("512K"), 512 * 1024);
    assert.equal(parseRate("0"), 0);
    assert.equal(parseRate(undefined), undefined);
    for (const bad of ["", "fast", "-1M", "10X", "1e9", "M"]) assert.throws(() => parseRate(bad), /--bandwidth-limit/);
    assert.equal(
      transferText({ compression: Compression.COMPRESSION_LZ4, bandwidthLimitBytesPerSecond: MiB }),
      "lz4, at most 1 MiB/s",
    );
    assert.equal(
      transferText({ compression: Compression.COMPRESSION_NONE, bandwidthLimitBytesPerSecond: 0 }),
      undefined,
    );
  });

  it("backup create and backup restore send the options; without the flags, none", async () => {
    const flags = ["--compression", "zstd", "--bandwidth-limit", "100M"];
    const r = await cli(["backup", "create", "--volume", "site-a/rbd/vol-1", "--to", "site-b", ...flags]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(created?.transfer, {
      compression: Compression.COMPRESSION_ZSTD,
      bandwidthLimitBytesPerSecond: 100 * MiB,
    });
    const plain = await cli(["backup", "create", "--volume", "site-a/rbd/vol-1", "--to", "site-b"]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(created?.transfer, undefined);
    const rr = await cli(["backup", "restore", ID, "--target", "site-b/rbd/x", "--bandwidth-limit", "8M"]);
    assert.equal(rr.code, 0, rr.stderr);
    assert.deepEqual(restored?.transfer, {
      compression: Compression.COMPRESSION_NONE,
      bandwidthLimitBytesPerSecond: 8 * MiB,
    });
  });

  it("policy create sets them; policy update changes only the one named", async () => {
    const c = await cli(
      ["policy", "create", "p", "--volume", "a/rbd/v", "--to", "b", "--every", "1h"].concat([
        "--keep-last",
        "1",
        "--compression",
        "lz4",
      ]),
    );
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual(policyCreated?.transfer, {
      compression: Compression.COMPRESSION_LZ4,
      bandwidthLimitBytesPerSecond: 0,
    });
    const u = await cli(["policy", "update", "gold", "--bandwidth-limit", "1G"]);
    assert.equal(u.code, 0, u.stderr);
    assert.deepEqual(updated?.policy?.transfer, {
      compression: Compression.COMPRESSION_ZSTD,
      bandwidthLimitBytesPerSecond: 1024 * MiB,
    });
    const show = await cli(["policy", "update", "gold", "--compression", "none"]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^transfer: +at most 50 MiB\/s$/m);
  });

  it("bad values are usage errors (exit 2) before any call; help lists the flags", async () => {
    const before = calls;
    for (const [args, msg] of [
      [["--compression", "gzip"], /--compression must be one of none, zstd, lz4, got "gzip"/],
      [["--bandwidth-limit", "fast"], /--bandwidth-limit must be bytes per second like/],
    ] as const) {
      const r = await cli(["backup", "create", "--volume", "a/rbd/v", "--to", "b", ...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, msg);
    }
    assert.equal(calls, before);
    for (const verb of [
      ["backup", "create"],
      ["backup", "restore"],
      ["policy", "create"],
      ["policy", "update"],
    ]) {
      const h = await cli([...verb, "--help"]);
      assert.equal(h.code, 0, h.stderr);
      assert.match(h.stdout, /--compression none\|zstd\|lz4/, verb.join(" "));
      assert.match(h.stdout, /--bandwidth-limit RATE/, verb.join(" "));
    }
  });
});
