/**
 * The policy API of a real coordinator with the real agents of site-a and site-b (pools are asked of
 * them): bad input is refused with its exact status naming the field and creates nothing; overlapping
 * policies are FAILED_PRECONDITION naming both; a reader token may read but every mutation is
 * PERMISSION_DENIED and changes nothing; an operator's lifecycle (create, update with
 * expected_revision, pause, resume, delete) and the audit lines of policy mutations, with their target.
 * No image is created: policies are configuration (the runner's own test backs volumes up).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ClientError, Status } from "nice-grpc";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import type { BackupServiceClient } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import type { DeepPartial, Policy } from "../../../src/gen/rbdbackup/v1/policy";
import { labTls } from "../../../src/lab/agent-process";
import { apiClient } from "../../../src/lab/coordinator-process";
import { type Deployment, deploy } from "../../helpers/coordinator";
import { tempDir } from "../../helpers/wait";

const READER = `reader-${randomUUID()}`;
const OPERATOR = `operator-${randomUUID()}`;
const vol = (image: string, cluster = "site-a", pool = "rbd"): VolumeRef => ({ cluster, pool, namespace: "", image });

const policy = (name: string, o: DeepPartial<Policy> = {}): DeepPartial<Policy> => ({
  name,
  selector: { volumes: [vol("policy-api-v1")] },
  destination: { cluster: "site-b", pool: "backups" },
  mode: BackupMode.BACKUP_MODE_AUTO,
  schedule: { intervalSeconds: 3600 },
  retention: { keepLast: 3 },
  ...o,
});

async function status(p: Promise<unknown>): Promise<{ code: Status | "OK"; details: string }> {
  try {
    await p;
    return { code: "OK", details: "" };
  } catch (e) {
    if (!(e instanceof ClientError)) throw e;
    return { code: e.code, details: e.details };
  }
}

async function expect(p: Promise<unknown>, code: Status, message: RegExp): Promise<void> {
  const r = await status(p);
  assert.equal(r.code === "OK" ? "OK" : Status[r.code], Status[code], r.details);
  assert.match(r.details, message);
}

async function names(c: BackupServiceClient): Promise<string[]> {
  return (await c.listPolicies({ pageSize: 1000, pageToken: "" })).policies.map((p) => p.name);
}

describe("policy API against a real coordinator", () => {
  let d: Deployment;
  let admin: BackupServiceClient;
  let operator: BackupServiceClient;
  let reader: BackupServiceClient;
  let auditLog: string;
  const channels: Array<{ close(): void }> = [];

  before(async () => {
    auditLog = path.join(tempDir("rbdbackup-policy-api-"), "audit.log");
    d = await deploy({
      auditLog,
      tokens: [
        { role: "reader", token: READER },
        { role: "operator", token: OPERATOR },
      ],
    });
    admin = d.client;
    const ca = { ca: labTls("test-client").ca as string };
    for (const [token, set] of [
      [OPERATOR, (c: BackupServiceClient) => (operator = c)],
      [READER, (c: BackupServiceClient) => (reader = c)],
    ] as const) {
      const { client, channel } = apiClient(d.coord.address, ca, token);
      channels.push(channel);
      set(client);
    }
  });
  after(async () => {
    for (const c of channels) c.close();
    if (admin) for (const n of await names(admin).catch(() => [])) await admin.deletePolicy({ name: n });
    await d?.stop();
  });

  it("bad input: exact status naming the field; nothing created", async () => {
    const many = Array.from({ length: 10_000 }, (_, i) => vol(`v${i}`));
    const cases: Array<[string, DeepPartial<Policy>, Status, RegExp]> = [
      [
        "a bad cron",
        policy("bad", { schedule: { cron: "61 * * * *" } }),
        Status.INVALID_ARGUMENT,
        /^policy\.schedule\.cron/,
      ],
      [
        "an interval below the minimum",
        policy("bad", { schedule: { intervalSeconds: 10 } }),
        Status.INVALID_ARGUMENT,
        /^policy\.schedule\.interval_seconds/,
      ],
      [
        "an unknown destination cluster",
        policy("bad", { destination: { cluster: "site-nowhere" } }),
        Status.NOT_FOUND,
        /^policy\.destination\.cluster: cluster site-nowhere is unknown/,
      ],
      [
        "an unknown selector cluster",
        policy("bad", { selector: { cluster: "site-nowhere", pool: "rbd" } }),
        Status.NOT_FOUND,
        /^policy\.selector\.cluster: cluster site-nowhere is unknown/,
      ],
      [
        "an unknown pool (asked of site-a's agent)",
        policy("bad", { selector: { cluster: "site-a", pool: "no-such-pool" } }),
        Status.NOT_FOUND,
        /^policy\.selector\.pool: pool no-such-pool not found on cluster site-a/,
      ],
      [
        "an unknown destination pool (asked of site-b's agent)",
        policy("bad", { destination: { cluster: "site-b", pool: "no-such-pool" } }),
        Status.NOT_FOUND,
        /^policy\.destination\.pool: pool no-such-pool not found on cluster site-b/,
      ],
      [
        "a regex that does not compile",
        policy("bad", { selector: { cluster: "site-a", pool: "rbd", imageRegex: "vm-[" } }),
        Status.INVALID_ARGUMENT,
        /^policy\.selector\.image_regex "vm-\[" does not compile/,
      ],
      [
        "a regex of 257 characters",
        policy("bad", { selector: { cluster: "site-a", pool: "rbd", imageRegex: "x".repeat(257) } }),
        Status.INVALID_ARGUMENT,
        /^policy\.selector\.image_regex is 257 characters long; at most 256/,
      ],
      ["retention all zero", policy("bad", { retention: {} }), Status.INVALID_ARGUMENT, /^policy\.retention/],
      [
        "a 10,000-volume explicit list",
        policy("bad", { selector: { volumes: many } }),
        Status.INVALID_ARGUMENT,
        /^policy\.selector\.volumes has 10000 volumes; at most 1000/,
      ],
      ["a bad name", policy("Bad Name"), Status.INVALID_ARGUMENT, /^policy\.name "Bad Name" must be/],
    ];
    const problems: string[] = [];
    for (const [what, p, code, message] of cases) {
      const r = await status(operator.createPolicy({ policy: p }));
      const got = r.code === "OK" ? "OK" : Status[r.code];
      if (got !== Status[code] || !message.test(r.details))
        problems.push(`${what}: ${got}: ${r.details.slice(0, 200)}`);
    }
    assert.deepEqual(problems, []);
    assert.deepEqual(await names(admin), []);
  });

  it("overlapping policies: FAILED_PRECONDITION naming both; nothing created", async () => {
    await operator.createPolicy({ policy: policy("pa-one") });
    await expect(
      operator.createPolicy({
        policy: policy("pa-two", { selector: { cluster: "site-a", pool: "rbd", imageRegex: "policy-api-.*" } }),
      }),
      Status.FAILED_PRECONDITION,
      /^policy\.selector: volume site-a\/rbd\/policy-api-v1 is in both policy "pa-two" and policy "pa-one", to the same destination site-b\/backups\//,
    );
    // The same volume with the destination's pool left to its default (backups) is the same destination.
    await expect(
      operator.createPolicy({ policy: policy("pa-two", { destination: { cluster: "site-b" } }) }),
      Status.FAILED_PRECONDITION,
      /policy "pa-two" and policy "pa-one"/,
    );
    await expect(
      operator.createPolicy({ policy: policy("pa-one") }),
      Status.ALREADY_EXISTS,
      /^policy pa-one already exists/,
    );
    assert.deepEqual(await names(admin), ["pa-one"]);
    await operator.deletePolicy({ name: "pa-one" });
  });

  it("a reader may read; every mutation is PERMISSION_DENIED and changes nothing", async () => {
    const p = await operator.createPolicy({ policy: policy("pa-read") });
    assert.equal((await reader.getPolicy({ name: "pa-read" })).revision, 1);
    assert.deepEqual(
      (await reader.listPolicies({ pageSize: 10, pageToken: "" })).policies.map((x) => x.name),
      ["pa-read"],
    );
    const mutations: Array<[string, () => Promise<unknown>]> = [
      [
        "CreatePolicy",
        () => reader.createPolicy({ policy: policy("pa-reader", { destination: { cluster: "site-a" } }) }),
      ],
      ["UpdatePolicy", () => reader.updatePolicy({ policy: policy("pa-read", { description: "mine" }) })],
      ["DeletePolicy", () => reader.deletePolicy({ name: "pa-read" })],
      ["PausePolicy", () => reader.pausePolicy({ name: "pa-read" })],
      ["ResumePolicy", () => reader.resumePolicy({ name: "pa-read" })],
      ["RunPolicyNow", () => reader.runPolicyNow({ name: "pa-read" })],
    ];
    for (const [method, call] of mutations) {
      const r = await status(call());
      assert.equal(r.code === "OK" ? "OK" : Status[r.code], "PERMISSION_DENIED", `${method}: ${r.details}`);
    }
    assert.deepEqual(await admin.getPolicy({ name: "pa-read" }), p);
    assert.deepEqual(await names(admin), ["pa-read"]);
    await operator.deletePolicy({ name: "pa-read" });
  });

  it("an operator's lifecycle; mutations are audited with the policy as target", async () => {
    const p = await operator.createPolicy({ policy: policy("pa-life", { description: "first" }) });
    assert.equal(p.revision, 1);
    assert.equal(p.selectedVolumes, 1);
    await expect(
      operator.updatePolicy({ policy: policy("pa-life", { description: "x" }), expectedRevision: 7 }),
      Status.ABORTED,
      /revision 1, not expected_revision 7/,
    );
    const u = await operator.updatePolicy({
      policy: policy("pa-life", { schedule: { cron: "0 2 * * *", timeZone: "Europe/Paris" } }),
      expectedRevision: 1,
    });
    assert.equal(u.revision, 2);
    assert.equal(u.schedule?.cron, "0 2 * * *");
    assert.equal((await operator.pausePolicy({ name: "pa-life" })).paused, true);
    assert.equal((await operator.resumePolicy({ name: "pa-life" })).revision, 4);
    await expect(
      operator.getVolumeProtection({ volume: vol("not-protected-anywhere") }),
      Status.NOT_FOUND,
      /is not protected by any policy/,
    );
    await operator.deletePolicy({ name: "pa-life" });
    await expect(operator.getPolicy({ name: "pa-life" }), Status.NOT_FOUND, /^policy pa-life not found/);

    const lines = readFileSync(auditLog, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, string>);
    const of = (method: string, result: string) =>
      lines.filter((l) => l.method === `/rbdbackup.v1.BackupService/${method}` && l.result === result);
    for (const m of ["CreatePolicy", "UpdatePolicy", "PausePolicy", "ResumePolicy", "DeletePolicy"]) {
      assert.ok(
        of(m, "OK").some((l) => l.identity === "token:operator" && l.target === "policy=pa-life"),
        `${m} audited with its target`,
      );
    }
    assert.ok(of("UpdatePolicy", "ABORTED").some((l) => l.target === "policy=pa-life"));
    assert.ok(of("CreatePolicy", "INVALID_ARGUMENT").some((l) => l.target === "policy=bad"));
    assert.ok(of("PausePolicy", "PERMISSION_DENIED").some((l) => l.identity === "token:reader"));
    assert.ok(!lines.some((l) => l.method?.endsWith("/GetPolicy")), "reads are not audited");
  });
});
