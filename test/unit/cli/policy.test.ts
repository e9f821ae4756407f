/**
 * `rbdbackup policy …` and `rbdbackup protection …` (the built CLI as a child process) against a fake
 * coordinator in this process: the requests built from the flags, update as read-modify-write with
 * expected_revision, output, --json and exit codes. No Ceph involved.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { createServer, type Server, ServerError, Status } from "nice-grpc";
import { parseDuration, parseWindow } from "../../../src/cli/commands/policy";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import {
  BackupServiceDefinition,
  type BackupServiceImplementation,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import {
  type ListVolumeProtectionRequest,
  type Policy,
  ProtectionState,
  type UpdatePolicyRequest,
} from "../../../src/gen/rbdbackup/v1/policy";

const CLI = path.join(__dirname, "../../../src/cli/main.js");

const unimplemented = async () => {
  throw new ServerError(Status.UNIMPLEMENTED, "not in the fake");
};

let created: Policy | undefined;
let updated: UpdatePolicyRequest | undefined;
let listed: ListVolumeProtectionRequest | undefined;
let ran: { name: string; volume?: unknown } | undefined;

const stored: Policy = {
  name: "gold",
  description: "",
  selector: { volumes: [], cluster: "site-a", pool: "rbd", namespace: "", imageRegex: "vm-.*" },
  destination: { cluster: "site-b", pool: "", namespace: "" },
  mode: BackupMode.BACKUP_MODE_AUTO,
  maxSnapshots: 0,
  volumeMetadata: {},
  schedule: {
    intervalSeconds: 900,
    cron: "",
    timeZone: "",
    startOffsetSeconds: 0,
    jitterSeconds: 0,
    window: undefined,
  },
  retention: { keepLast: 4, hourly: 0, daily: 7, weekly: 0, monthly: 0, yearly: 0, minAgeSeconds: 0 },
  paused: false,
  transfer: undefined,
  revision: 3,
  createdAt: new Date(Date.UTC(2026, 0, 1)),
  updatedAt: new Date(Date.UTC(2026, 0, 2)),
  selectedVolumes: 12,
  verify: undefined,
};

const impl: Partial<BackupServiceImplementation> = {
  async createPolicy(req) {
    created = req.policy;
    return { ...req.policy, revision: 1 };
  },
  async getPolicy(req) {
    if (req.name !== "gold") throw new ServerError(Status.NOT_FOUND, `policy ${req.name} not found`);
    return stored;
  },
  async updatePolicy(req) {
    updated = req;
    return { ...req.policy, revision: 4 };
  },
  async listPolicies() {
    return { policies: [stored], nextPageToken: "" };
  },
  async deletePolicy() {
    return {};
  },
  async pausePolicy() {
    return { ...stored, paused: true };
  },
  async resumePolicy() {
    return stored;
  },
  async runPolicyNow(req) {
    ran = req;
    return { jobIds: ["j-1", "j-2"] };
  },
  async getVolumeProtection(req) {
    return {
      volume: req.volume,
      policy: "gold",
      state: ProtectionState.PROTECTION_STATE_LATE,
      lastBackupId: "b-1",
      recoveryPointAgeSeconds: 1830,
      consecutiveFailures: 0,
      missedRuns: 2,
    };
  },
  async listVolumeProtection(req) {
    listed = req;
    return {
      volumes: [
        {
          volume: { cluster: "site-a", pool: "rbd", namespace: "", image: "vm-1" },
          policy: "gold",
          state: ProtectionState.PROTECTION_STATE_OK,
        },
      ],
      nextPageToken: "",
    };
  },
};

let server: Server;
let address = "";

function cli(args: string[], extra = ["--insecure"]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args, ...extra],
      { env: { PATH: process.env.PATH ?? "", RBDBACKUP_COORDINATOR: address }, timeout: 20_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: unknown }).code as number) : 0, stdout, stderr }),
    );
  });
}

describe("rbdbackup policy and protection", () => {
  before(async () => {
    server = createServer();
    const full = new Proxy(impl, { get: (t, k) => (t as Record<string, unknown>)[k as string] ?? unimplemented });
    server.add(BackupServiceDefinition, full as BackupServiceImplementation);
    address = `127.0.0.1:${await server.listen("127.0.0.1:0")}`;
  });
  after(() => server.forceShutdown());
  beforeEach(() => {
    created = undefined;
    updated = undefined;
    listed = undefined;
    ran = undefined;
  });

  it("durations and windows", () => {
    assert.equal(parseDuration("90", "every"), 90);
    assert.equal(parseDuration("15m", "every"), 900);
    assert.equal(parseDuration("2d", "every"), 172_800);
    assert.throws(() => parseDuration("1w", "every"), /--every must be a duration/);
    assert.deepEqual(parseWindow("22:00-06:00"), { start: "22:00", end: "06:00" });
    assert.throws(() => parseWindow("22-6"), /--window must be HH:MM-HH:MM/);
  });

  it("policy create: the policy built from the flags", async () => {
    const r = await cli([
      "policy",
      "create",
      "gold",
      "--pool",
      "site-a/rbd",
      "--regex",
      "vm-.*",
      "--volume",
      "site-a/rbd/db-1",
      "--volume",
      "site-a/other/ns/db-2",
      "--to",
      "site-b/backups",
      "--cron",
      "0 2 * * *",
      "--tz",
      "Europe/Paris",
      "--window",
      "22:00-06:00",
      "--jitter",
      "5m",
      "--keep-last",
      "3",
      "--daily",
      "7",
      "--min-age",
      "1h",
      "--mode",
      "full",
      "--meta",
      "owner={policy}",
      "--paused",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(created);
    assert.equal(created.name, "gold");
    assert.deepEqual(created.selector, {
      volumes: [
        { cluster: "site-a", pool: "rbd", namespace: "", image: "db-1" },
        { cluster: "site-a", pool: "other", namespace: "ns", image: "db-2" },
      ],
      cluster: "site-a",
      pool: "rbd",
      namespace: "",
      imageRegex: "vm-.*",
    });
    assert.deepEqual(created.destination, { cluster: "site-b", pool: "backups", namespace: "" });
    assert.deepEqual(created.schedule, {
      intervalSeconds: 0,
      cron: "0 2 * * *",
      timeZone: "Europe/Paris",
      startOffsetSeconds: 0,
      jitterSeconds: 300,
      window: { start: "22:00", end: "06:00" },
    });
    assert.deepEqual(created.retention, {
      keepLast: 3,
      hourly: 0,
      daily: 7,
      weekly: 0,
      monthly: 0,
      yearly: 0,
      minAgeSeconds: 3600,
    });
    assert.equal(created.mode, BackupMode.BACKUP_MODE_FULL);
    assert.deepEqual(created.volumeMetadata, { owner: "{policy}" });
    assert.equal(created.paused, true);
    assert.match(r.stdout, /^name: +gold$/m);
    assert.match(r.stdout, /^schedule: +cron "0 2 \* \* \*", tz Europe\/Paris, jitter 5m00s, window 22:00-06:00$/m);
  });

  it("policy create: bad flags are usage errors (exit 2) before any call", async () => {
    for (const [args, msg] of [
      [["--every", "5x"], /--every must be a duration/],
      [["--every", "5m", "--cron", "* * * * *"], /give --every or --cron, not both/],
      [["--pool", "site-a"], /--pool must be CLUSTER\/POOL/],
      [["--volume", "a/b"], /--volume "a\/b" must be CLUSTER\/POOL/],
      // The API's own limits, refused before a call (they were 100000 here, 1000 and 10000 there).
      [["--max-snapshots", "1001"], /--max-snapshots/],
      [["--keep-last", "10001"], /--keep-last/],
      [["--daily", "10001"], /--daily/],
    ] as const) {
      const r = await cli(["policy", "create", "p", ...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, msg);
    }
    assert.equal(created, undefined);
  });

  it("policy update: read, apply the flags given, write with expected_revision", async () => {
    const r = await cli(["policy", "update", "gold", "--every", "5m", "--weekly", "4", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(updated?.policy);
    assert.equal(updated.expectedRevision, 3);
    assert.equal(updated.policy.schedule?.intervalSeconds, 300);
    assert.equal(updated.policy.schedule?.cron, "");
    assert.deepEqual(
      { ...updated.policy.retention },
      { ...stored.retention, weekly: 4 },
      "the other retention counts stay",
    );
    assert.deepEqual(updated.policy.selector, stored.selector);
    assert.equal(JSON.parse(r.stdout).revision, 4);
    assert.equal(updated.confirmRetentionDrop, false, "a retention drop is confirmed only when asked");
    const confirmed = await cli(["policy", "update", "gold", "--keep-last", "1", "--confirm-retention-drop"]);
    assert.equal(confirmed.code, 0, confirmed.stderr);
    assert.equal(updated.confirmRetentionDrop, true);
    // Pausing is its own verb (update's help does not offer --paused): refused, nothing written.
    updated = undefined;
    const pausing = await cli(["policy", "update", "gold", "--paused"]);
    assert.equal(pausing.code, 2, pausing.stderr);
    assert.match(pausing.stderr, /use `rbdbackup policy pause NAME`/);
    assert.equal(updated, undefined);
    const missing = await cli(["policy", "update", "nope", "--every", "5m"]);
    assert.equal(missing.code, 4);
    assert.equal(missing.stderr, "rbdbackup: NOT_FOUND: policy nope not found\n");
  });

  it("policy list, show, pause, delete, run", async () => {
    const list = await cli(["policy", "list"]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^NAME +SELECTS +TO +SCHEDULE +RETENTION +VOLUMES +PAUSED$/m);
    assert.match(list.stdout, /^gold +site-a\/rbd \/vm-\.\*\/ +site-b +every 15m00s +last 4, daily 7 +12 +no$/m);
    const paused = await cli(["policy", "pause", "gold"]);
    assert.match(paused.stdout, /^paused: +yes$/m);
    const del = await cli(["policy", "delete", "gold"]);
    assert.equal(del.code, 0);
    assert.equal(del.stdout, "");
    assert.match(del.stderr, /policy gold deleted/);
    const run = await cli(["policy", "run", "gold", "--volume", "site-a/rbd/vm-1"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "j-1\nj-2\n");
    assert.deepEqual(ran?.volume, { cluster: "site-a", pool: "rbd", namespace: "", image: "vm-1" });
  });

  it("protection list and show", async () => {
    const list = await cli(["protection", "list", "--state", "late", "--policy", "gold", "--cluster", "site-a"]);
    assert.equal(list.code, 0, list.stderr);
    assert.equal(listed?.state, ProtectionState.PROTECTION_STATE_LATE);
    assert.equal(listed?.policy, "gold");
    assert.equal(listed?.cluster, "site-a");
    assert.match(list.stdout, /^site-a\/rbd\/vm-1 +gold +ok +- /m);
    const show = await cli(["protection", "show", "site-a/rbd/vm-1"]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^state: +late$/m);
    assert.match(show.stdout, /^recovery point age: +30m30s$/m);
    assert.match(show.stdout, /^missed runs: +2$/m);
    const bad = await cli(["protection", "list", "--state", "bad"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--state must be one of ok, late, failing, paused, pending/);
  });

  it("help of every verb", async () => {
    const r = await cli(["policy", "create", "--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^usage: rbdbackup policy create NAME/);
    const all = await cli(["help"], []);
    assert.match(all.stdout, / {2}policy run /);
    assert.match(all.stdout, / {2}protection list /);
  });
});
