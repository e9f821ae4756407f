/**
 * The policy RPCs without Ceph: the real handlers and error middleware on a gRPC server on 127.0.0.1:0,
 * the in-memory catalog of the harness, fake agents answering pool probes, and a fake PolicyRunnerPort
 * that records what the API tells it. Asserts exact statuses naming the field, that a refused request
 * writes nothing, revisions, paging, overlap between policies and the protection views.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { ApiDeps } from "../../../src/coordinator/api/deps";
import { targetOf } from "../../../src/coordinator/api-audit";
import { type ProtectionRecord, volumeKey } from "../../../src/coordinator/policy/model";
import { enforceRetention } from "../../../src/coordinator/policy/retention-jobs";
import type { PolicyRunnerPort, RunNowResult } from "../../../src/coordinator/policy/runner-port";
import { nextRun, runRequest } from "../../../src/coordinator/policy/slots";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { type Backup, BackupStatus, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { Compression, type VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import type { DeepPartial, Policy, ProtectionState } from "../../../src/gen/rbdbackup/v1/policy";
import type { Answer } from "../../helpers/fake-agent";
import { type Api, type ApiServer, assertStatus, serveApi } from "./api-server";
import { Harness, newBackup, vol } from "./harness";

const POOLS: Record<string, string[]> = { a: ["rbd", "other", "backups"], b: ["backups", "bk2"] };

function poolAnswer(cluster: string) {
  return (req: CallRequest): Answer => {
    if (req.$case !== "probe") return new AppError(Status.UNIMPLEMENTED, req.$case);
    const pools = POOLS[cluster] ?? [];
    const value = {
      missingPools: req.value.pools.filter((p) => !pools.includes(p)),
      missingNamespaces: req.value.namespaces.map((n) => n.namespace),
      imageExists: false,
      imageSize: 0,
      imageSnapshots: [],
    };
    return { $case: "probe", value };
  };
}

/** Records what the API tells the runner; `discovered` plays the volumes discovery found. */
class FakeRunner implements PolicyRunnerPort {
  changes: string[] = [];
  runs: Array<{ policy: string; volume?: VolumeRef }> = [];
  discovered = new Map<string, VolumeRef[]>();
  constructor(private readonly deps: () => ApiDeps) {}
  async runNow(policy: Policy, volume?: VolumeRef): Promise<RunNowResult> {
    this.runs.push({ policy: policy.name, ...(volume ? { volume } : {}) });
    return { jobIds: (volume ? [volume] : this.selected(policy.name)).map(() => randomUUID()), skipped: [] };
  }
  changed(name: string): void {
    this.changes.push(name);
  }
  selected(name: string): VolumeRef[] {
    const p = this.deps().catalog.policies.getPolicy(name);
    return [...(p?.selector?.volumes ?? []), ...(this.discovered.get(name) ?? [])];
  }
}

const policy = (name: string, o: DeepPartial<Policy> = {}): DeepPartial<Policy> => ({
  name,
  selector: { volumes: [vol("v1")] },
  destination: { cluster: "b" },
  mode: BackupMode.BACKUP_MODE_AUTO,
  schedule: { intervalSeconds: 3600 },
  retention: { keepLast: 3 },
  ...o,
});

describe("policy API", () => {
  let h: Harness;
  let served: ApiServer;
  let api: Api;
  let runner: FakeRunner;
  let deps: ApiDeps;

  before(async () => {
    h = new Harness();
    h.scheduler.stop();
    runner = new FakeRunner(() => deps);
    deps = {
      catalog: h.catalog,
      sessions: h.sessions,
      scheduler: h.scheduler,
      log: h.log,
      maxAttempts: 3,
      policies: runner,
      policyMinIntervalSeconds: 30,
    };
    served = await serveApi(deps);
    api = served.api;
    h.connect("a1", "a").answer = poolAnswer("a");
    h.connect("b1", "b").answer = poolAnswer("b");
  });
  after(async () => {
    await served.close();
    h.close();
  });
  beforeEach(() => {
    for (const p of h.catalog.policies.allPolicies()) h.catalog.policies.deletePolicy(p.name);
    runner.changes = [];
    runner.runs = [];
    runner.discovered.clear();
  });

  const count = () => h.catalog.policies.allPolicies().length;

  describe("bad input: exact status naming the field, nothing created", () => {
    const many = (n: number) => Array.from({ length: n }, (_, i) => vol(`v${i}`));
    const cases: Array<[string, DeepPartial<Policy> | undefined, Status, RegExp]> = [
      ["no policy", undefined, Status.INVALID_ARGUMENT, /^policy is required$/],
      ["a bad name", policy("Bad_Name"), Status.INVALID_ARGUMENT, /^policy\.name "Bad_Name" must be 1-63/],
      ["no name", policy(""), Status.INVALID_ARGUMENT, /^policy\.name is required/],
      [
        "a long description",
        policy("p", { description: "x".repeat(1025) }),
        Status.INVALID_ARGUMENT,
        /^policy\.description/,
      ],
      ["no selector", policy("p", { selector: undefined }), Status.INVALID_ARGUMENT, /^policy\.selector is required/],
      [
        "an empty selector",
        policy("p", { selector: {} }),
        Status.INVALID_ARGUMENT,
        /^policy\.selector selects nothing/,
      ],
      [
        "10,000 explicit volumes",
        policy("p", { selector: { volumes: many(10_000) } }),
        Status.INVALID_ARGUMENT,
        /^policy\.selector\.volumes has 10000 volumes; at most 1000/,
      ],
      [
        "a bad explicit volume",
        policy("p", { selector: { volumes: [vol("v1"), { ...vol("v2"), pool: "r/bd" }] } }),
        Status.INVALID_ARGUMENT,
        /^policy\.selector\.volumes\[1\]\.pool "r\/bd"/,
      ],
      [
        "a volume listed twice",
        policy("p", { selector: { volumes: [vol("v1"), vol("v1")] } }),
        Status.INVALID_ARGUMENT,
        /^policy\.selector\.volumes\[1\]: a\/rbd\/v1 is listed twice/,
      ],
      [
        "a pool without a cluster",
        policy("p", { selector: { pool: "rbd" } }),
        Status.INVALID_ARGUMENT,
        /^policy\.selector\.cluster and policy\.selector\.pool go together/,
      ],
      [
        "a regex that does not compile",
        policy("p", { selector: { cluster: "a", pool: "rbd", imageRegex: "vol-(" } }),
        Status.INVALID_ARGUMENT,
        /^policy\.selector\.image_regex "vol-\(" does not compile/,
      ],
      [
        "a regex that cannot be matched in linear time (a backreference)",
        policy("p", { selector: { cluster: "a", pool: "rbd", imageRegex: "(vol)-\\1" } }),
        Status.INVALID_ARGUMENT,
        /^policy\.selector\.image_regex "\(vol\)-\\1" does not compile: .*linear time/,
      ],
      [
        "a regex of 257 characters",
        policy("p", { selector: { cluster: "a", pool: "rbd", imageRegex: "a".repeat(257) } }),
        Status.INVALID_ARGUMENT,
        /^policy\.selector\.image_regex is 257 characters long; at most 256/,
      ],
      [
        "no destination",
        policy("p", { destination: undefined }),
        Status.INVALID_ARGUMENT,
        /^policy\.destination is required/,
      ],
      [
        "an unknown mode",
        policy("p", { mode: 42 as BackupMode }),
        Status.INVALID_ARGUMENT,
        /^policy\.mode: unknown value 42/,
      ],
      [
        "an unknown compression",
        policy("p", { transfer: { compression: 7 as Compression } }),
        Status.INVALID_ARGUMENT,
        /^policy\.transfer\.compression: unknown value 7/,
      ],
      [
        "a bandwidth cap under 1 MiB/s",
        policy("p", { transfer: { bandwidthLimitBytesPerSecond: 1000 } }),
        Status.INVALID_ARGUMENT,
        /^policy\.transfer\.bandwidth_limit_bytes_per_second: 1000 is not 0/,
      ],
      [
        "too many snapshots",
        policy("p", { maxSnapshots: 5000 }),
        Status.INVALID_ARGUMENT,
        /^policy\.max_snapshots 5000/,
      ],
      [
        "a metadata template that would outgrow a value once filled in (585 × {image}: up to 117,000 characters)",
        policy("p", { volumeMetadata: { k0: "{image}".repeat(585) } }),
        Status.INVALID_ARGUMENT,
        /^policy\.volume_metadata\["k0"\] can become 117000 characters with its placeholders filled .*; at most 4096$/,
      ],
      [
        "an empty metadata key",
        policy("p", { volumeMetadata: { "": "x" } }),
        Status.INVALID_ARGUMENT,
        /^policy\.volume_metadata keys must not be empty/,
      ],
      ["no schedule", policy("p", { schedule: undefined }), Status.INVALID_ARGUMENT, /^policy\.schedule is required/],
      [
        "an interval below the minimum",
        policy("p", { schedule: { intervalSeconds: 10 } }),
        Status.INVALID_ARGUMENT,
        /^policy\.schedule\.interval_seconds/,
      ],
      [
        "a bad cron expression",
        policy("p", { schedule: { cron: "61 * * * *" } }),
        Status.INVALID_ARGUMENT,
        /^policy\.schedule\.cron/,
      ],
      [
        "no retention",
        policy("p", { retention: undefined }),
        Status.INVALID_ARGUMENT,
        /^policy\.retention is required/,
      ],
      ["retention all zero", policy("p", { retention: {} }), Status.INVALID_ARGUMENT, /^policy\.retention/],
      [
        "an unknown destination cluster",
        policy("p", { destination: { cluster: "nowhere" } }),
        Status.NOT_FOUND,
        /^policy\.destination\.cluster: cluster nowhere is unknown/,
      ],
      [
        "an unknown selector cluster",
        policy("p", { selector: { cluster: "nowhere", pool: "rbd" } }),
        Status.NOT_FOUND,
        /^policy\.selector\.cluster: cluster nowhere is unknown/,
      ],
      [
        "an explicit volume of an unknown cluster",
        policy("p", { selector: { volumes: [vol("v1"), vol("v2", "nowhere")] } }),
        Status.NOT_FOUND,
        /^policy\.selector\.volumes\[1\]\.cluster: cluster nowhere is unknown/,
      ],
      [
        "an unknown selector pool",
        policy("p", { selector: { cluster: "a", pool: "nopool" } }),
        Status.NOT_FOUND,
        /^policy\.selector\.pool: pool nopool not found on cluster a/,
      ],
      [
        "an unknown destination pool",
        policy("p", { destination: { cluster: "b", pool: "nopool" } }),
        Status.NOT_FOUND,
        /^policy\.destination\.pool: pool nopool not found on cluster b/,
      ],
    ];
    for (const [what, p, code, message] of cases) {
      it(`CreatePolicy with ${what}`, async () => {
        await assertStatus(api.createPolicy({ policy: p }), code, message);
        assert.equal(count(), 0);
        assert.deepEqual(runner.changes, []);
      });
    }

    it("UpdatePolicy validates the same way and changes nothing", async () => {
      const p = await api.createPolicy({ policy: policy("p") });
      await assertStatus(
        api.updatePolicy({ policy: policy("p", { retention: {} }) }),
        Status.INVALID_ARGUMENT,
        /^policy\.retention/,
      );
      assert.deepEqual(h.catalog.policies.getPolicy("p"), { ...p, selectedVolumes: 0 });
      // A revision the generated code cannot read as a number: INVALID_ARGUMENT (grpc-js said INTERNAL).
      await assertStatus(
        api.updatePolicy({ policy: policy("p", { description: "changed" }), expectedRevision: 2 ** 60 }),
        Status.INVALID_ARGUMENT,
        /^the request message could not be decoded \(.*\): a 64-bit number field holds more than 2\^53/,
      );
      assert.deepEqual(h.catalog.policies.getPolicy("p"), { ...p, selectedVolumes: 0 });
    });

    it("names, page sizes, tokens and filters of the other methods", async () => {
      await assertStatus(api.getPolicy({ name: "" }), Status.INVALID_ARGUMENT, /^name is required/);
      await assertStatus(api.deletePolicy({ name: "A" }), Status.INVALID_ARGUMENT, /^name "A" must be/);
      await assertStatus(api.listPolicies({ pageSize: 5000 }), Status.INVALID_ARGUMENT, /^page_size 5000/);
      await assertStatus(api.listPolicies({ pageToken: "garbage" }), Status.INVALID_ARGUMENT, /page_token/);
      await assertStatus(
        api.listVolumeProtection({ state: 42 as ProtectionState }),
        Status.INVALID_ARGUMENT,
        /^state: unknown value 42/,
      );
      await assertStatus(api.listVolumeProtection({ cluster: "-x" }), Status.INVALID_ARGUMENT, /^cluster "-x"/);
      await assertStatus(api.getVolumeProtection({}), Status.INVALID_ARGUMENT, /^volume is required/);
      await assertStatus(api.runPolicyNow({ name: "nope" }), Status.NOT_FOUND, /^policy nope not found/);
    });
  });

  /** Two AVAILABLE backups with a retention DELETE queued for each: p1's, and p10's (a name p1 begins). */
  function retentionDeletes() {
    const [mine, theirs] = [0, 1].map(() => {
      const x = { ...newBackup(vol("v-del"), "b", h.t), status: BackupStatus.BACKUP_STATUS_AVAILABLE };
      h.catalog.insertBackup(x);
      return x;
    });
    const delMine = h.queueDelete(mine?.id ?? "", `pol:p1:del:${mine?.id}`);
    const delTheirs = h.queueDelete(theirs?.id ?? "", `pol:p10:del:${theirs?.id}`);
    return { mine, delMine, delTheirs };
  }

  describe("create, read, update, pause, delete", () => {
    it("CreatePolicy stores revision 1 with times, tells the runner, and a taken name is ALREADY_EXISTS", async () => {
      const before = Date.now();
      const p = await api.createPolicy({ policy: policy("p1", { revision: 99, selectedVolumes: 7 }) });
      assert.equal(p.revision, 1);
      assert.equal(p.selectedVolumes, 1);
      assert.ok((p.createdAt?.getTime() ?? 0) >= before - 1000);
      assert.deepEqual(p.createdAt, p.updatedAt);
      assert.deepEqual(runner.changes, ["p1"]);
      assert.deepEqual(await api.getPolicy({ name: "p1" }), p);
      await assertStatus(
        api.createPolicy({ policy: policy("p1", { destination: { cluster: "a" } }) }),
        Status.ALREADY_EXISTS,
        /^policy p1 already exists/,
      );
      await assertStatus(api.getPolicy({ name: "p2" }), Status.NOT_FOUND, /^policy p2 not found/);
    });

    it("UpdatePolicy replaces the policy, bumps the revision, keeps created_at; expected_revision else ABORTED", async () => {
      const p = await api.createPolicy({ policy: policy("p1") });
      await assertStatus(
        api.updatePolicy({ policy: policy("p1", { description: "x" }), expectedRevision: 5 }),
        Status.ABORTED,
        /policy p1 is at revision 1, not expected_revision 5/,
      );
      const u = await api.updatePolicy({ policy: policy("p1", { description: "nightly" }), expectedRevision: 1 });
      assert.equal(u.revision, 2);
      assert.equal(u.description, "nightly");
      assert.deepEqual(u.createdAt, p.createdAt);
      const u2 = await api.updatePolicy({ policy: policy("p1", { selector: { volumes: [vol("v1"), vol("v2")] } }) });
      assert.equal(u2.revision, 3);
      assert.equal(u2.selectedVolumes, 2);
      assert.equal(u2.description, "");
      await assertStatus(api.updatePolicy({ policy: policy("p9") }), Status.NOT_FOUND, /^policy p9 not found/);
      assert.deepEqual(runner.changes, ["p1", "p1", "p1"]);
    });

    it("UpdatePolicy with a new schedule moves every record to its next slot in the same commit; other changes leave them", async () => {
      // No runner sees it (the fake one touches no record): a coordinator that dies right after the
      // commit, before its runner's tick, keeps the change.
      await api.createPolicy({ policy: policy("p1", { selector: { volumes: [vol("v1"), vol("v2")] } }) });
      const daily = Date.now() + 86_400_000;
      for (const v of [vol("v1"), vol("v2")])
        h.catalog.policies.upsertProtection({ ...record("p1", v), nextSlotAt: daily, nextRunAt: daily });
      const volumes = [vol("v1"), vol("v2")];
      await api.updatePolicy({ policy: policy("p1", { selector: { volumes }, description: "same schedule" }) });
      for (const v of volumes) assert.equal(h.catalog.policies.getProtection("p1", volumeKey(v))?.nextSlotAt, daily);
      const before = Date.now();
      const u = await api.updatePolicy({
        policy: policy("p1", { selector: { volumes }, schedule: { intervalSeconds: 60 } }),
      });
      for (const v of volumes) {
        const rec = h.catalog.policies.getProtection("p1", volumeKey(v));
        const stored = h.catalog.policies.getPolicy("p1") as Policy;
        assert.deepEqual(
          { nextSlotAt: rec?.nextSlotAt, nextRunAt: rec?.nextRunAt },
          nextRun(stored, v, u.updatedAt?.getTime() ?? 0),
        );
        assert.ok((rec?.nextSlotAt ?? daily) <= before + 61_000, `${volumeKey(v)} on the minutely schedule`);
      }
    });

    it("a policy's TransferOptions are kept, replaced by an update, and go into every run's CreateBackup", async () => {
      const transfer = { compression: Compression.COMPRESSION_LZ4, bandwidthLimitBytesPerSecond: 8 * 1048576 };
      const p = await api.createPolicy({ policy: policy("p1", { transfer }) });
      assert.deepEqual(p.transfer, transfer);
      assert.deepEqual((await api.getPolicy({ name: "p1" })).transfer, transfer);
      assert.deepEqual(runRequest(p, vol("v1"), "k").transfer, transfer);
      const capped = { compression: Compression.COMPRESSION_NONE, bandwidthLimitBytesPerSecond: 1048576 };
      const u = await api.updatePolicy({ policy: policy("p1", { transfer: capped }) });
      assert.deepEqual(u.transfer, capped);
      const none = await api.updatePolicy({ policy: policy("p1", { transfer: { compression: 0 } }) });
      assert.equal(none.transfer, undefined, "options that ask for nothing are not kept");
      assert.equal(runRequest(none, vol("v1"), "k").transfer, undefined);
    });

    it("pause and resume bump the revision once; again is a no-op", async () => {
      await api.createPolicy({ policy: policy("p1") });
      const paused = await api.pausePolicy({ name: "p1" });
      assert.equal(paused.paused, true);
      assert.equal(paused.revision, 2);
      assert.equal((await api.pausePolicy({ name: "p1" })).revision, 2);
      const resumed = await api.resumePolicy({ name: "p1" });
      assert.equal(resumed.paused, false);
      assert.equal(resumed.revision, 3);
      await assertStatus(api.pausePolicy({ name: "nope" }), Status.NOT_FOUND, /^policy nope not found/);
    });

    it("ListPolicies pages by name", async () => {
      for (const [i, n] of ["c", "a", "b"].entries()) {
        await api.createPolicy({ policy: policy(n, { selector: { volumes: [vol(`v${i}`)] } }) });
      }
      const p1 = await api.listPolicies({ pageSize: 2 });
      assert.deepEqual(
        p1.policies.map((p) => p.name),
        ["a", "b"],
      );
      assert.ok(p1.nextPageToken);
      const p2 = await api.listPolicies({ pageSize: 2, pageToken: p1.nextPageToken });
      assert.deepEqual(
        p2.policies.map((p) => p.name),
        ["c"],
      );
      assert.equal(p2.nextPageToken, "");
    });

    it("DeletePolicy removes the policy and its protection records, keeps backups", async () => {
      await api.createPolicy({ policy: policy("p1") });
      h.catalog.policies.upsertProtection(record("p1", vol("v1")));
      const b = newBackup(vol("v1"), "b", h.t);
      h.catalog.insertBackup(b);
      // Its retention's DELETEs no agent ran yet go with it (its backups stay); another policy's stay queued.
      const { mine, delMine, delTheirs } = retentionDeletes();
      await api.deletePolicy({ name: "p1" });
      assert.equal(h.catalog.policies.getPolicy("p1"), undefined);
      assert.deepEqual(h.catalog.policies.protectionOfVolume(volumeKey(vol("v1"))), []);
      assert.ok(h.catalog.getBackup(b.id));
      assert.equal(h.job(delMine.id).state, JobState.JOB_STATE_CANCELLED);
      assert.equal(h.job(delMine.id).errorMessage, "withdrawn before it ran: policy p1 was deleted");
      assert.equal(h.backup(mine?.id ?? "").status, BackupStatus.BACKUP_STATUS_AVAILABLE);
      assert.equal(h.job(delTheirs.id).state, JobState.JOB_STATE_QUEUED, "policy p10's (a name p1 begins)");
      h.scheduler.cancel(h.job(delTheirs.id));
      await assertStatus(api.deletePolicy({ name: "p1" }), Status.NOT_FOUND, /^policy p1 not found/);
      assert.deepEqual(runner.changes, ["p1", "p1"]);
    });

    it("RunPolicyNow asks the runner, for one selected volume or all", async () => {
      await api.createPolicy({ policy: policy("p1", { selector: { volumes: [vol("v1"), vol("v2")] } }) });
      assert.equal((await api.runPolicyNow({ name: "p1" })).jobIds.length, 2);
      assert.equal((await api.runPolicyNow({ name: "p1", volume: vol("v2") })).jobIds.length, 1);
      await assertStatus(
        api.runPolicyNow({ name: "p1", volume: vol("v3") }),
        Status.FAILED_PRECONDITION,
        /^volume a\/rbd\/v3 is not selected by policy p1/,
      );
      assert.deepEqual(runner.runs, [{ policy: "p1" }, { policy: "p1", volume: vol("v2") }]);
    });
  });

  describe("overlap: a volume in one policy per destination", () => {
    const clash = (p: DeepPartial<Policy>, message: RegExp) =>
      assertStatus(api.createPolicy({ policy: p }), Status.FAILED_PRECONDITION, message);

    it("an explicit volume in a pool selector, both ways; another destination is fine", async () => {
      await api.createPolicy({ policy: policy("one") });
      await clash(
        policy("two", { selector: { cluster: "a", pool: "rbd", imageRegex: "v[0-9]" } }),
        /^policy\.selector: volume a\/rbd\/v1 is in both policy "two" and policy "one", to the same destination b\/backups\//,
      );
      await clash(policy("two", { destination: { cluster: "b", pool: "backups" } }), /policy "two" and policy "one"/);
      assert.equal(count(), 1);
      await api.createPolicy({ policy: policy("two", { destination: { cluster: "b", pool: "bk2" } }) });
      await api.createPolicy({
        policy: policy("pool", { selector: { cluster: "a", pool: "rbd", imageRegex: "w.*" } }),
      });
      await clash(
        policy("three", { selector: { volumes: [vol("w1")] } }),
        /volume a\/rbd\/w1 is in both policy "three" and policy "pool"/,
      );
    });

    it("an explicit volume and a selector of its whole pool (no regex) to the same destination, either way round", async () => {
      await api.createPolicy({ policy: policy("one") });
      await clash(
        policy("two", { selector: { cluster: "a", pool: "rbd", imageRegex: "" } }),
        /volume a\/rbd\/v1 is in both policy "two" and policy "one"/,
      );
      await api.deletePolicy({ name: "one" });
      await api.createPolicy({ policy: policy("whole", { selector: { cluster: "a", pool: "rbd" } }) });
      await clash(policy("one"), /volume a\/rbd\/v1 is in both policy "one" and policy "whole"/);
      assert.equal(count(), 1);
    });

    it("two selectors of one pool (no regex or the same), and a discovered volume", async () => {
      await api.createPolicy({
        policy: policy("pool", { selector: { cluster: "a", pool: "rbd", imageRegex: "x.*" } }),
      });
      await clash(
        policy("p2", { selector: { cluster: "a", pool: "rbd" } }),
        /pool a\/rbd is in both policy "p2" and policy "pool"/,
      );
      await clash(policy("p2", { selector: { cluster: "a", pool: "rbd", imageRegex: "x.*" } }), /pool a\/rbd/);
      runner.discovered.set("pool", [vol("x9")]);
      await clash(
        policy("p2", { selector: { cluster: "a", pool: "rbd", imageRegex: "x9|y.*" } }),
        /volume a\/rbd\/x9 is in both policy "p2" and policy "pool"/,
      );
      await api.createPolicy({ policy: policy("p2", { selector: { cluster: "a", pool: "rbd", imageRegex: "y.*" } }) });
      await api.createPolicy({ policy: policy("p3", { selector: { cluster: "a", pool: "other" } }) });
    });

    it("an update that would overlap is refused and changes nothing", async () => {
      await api.createPolicy({ policy: policy("one") });
      await api.createPolicy({ policy: policy("two", { selector: { volumes: [vol("v2")] } }) });
      await assertStatus(
        api.updatePolicy({ policy: policy("two", { selector: { volumes: [vol("v2"), vol("v1")] } }) }),
        Status.FAILED_PRECONDITION,
        /volume a\/rbd\/v1 is in both policy "two" and policy "one"/,
      );
      assert.equal(h.catalog.policies.getPolicy("two")?.revision, 1);
    });
  });

  describe("volume protection", () => {
    it("GetVolumeProtection shows the record with the newest available backup at the destination", async () => {
      await api.createPolicy({ policy: policy("p1") });
      h.catalog.policies.upsertProtection({ ...record("p1", vol("v1")), lastJobId: "j1", missedRuns: 2 });
      const older = { ...newBackup(vol("v1"), "b", h.t - 7200_000), status: BackupStatus.BACKUP_STATUS_AVAILABLE };
      const newer = { ...newBackup(vol("v1"), "b", h.t - 3600_000), status: BackupStatus.BACKUP_STATUS_AVAILABLE };
      const elsewhere = { ...newBackup(vol("v1"), "a", h.t), status: BackupStatus.BACKUP_STATUS_AVAILABLE };
      const failed = { ...newBackup(vol("v1"), "b", h.t), status: BackupStatus.BACKUP_STATUS_FAILED };
      for (const b of [older, newer, elsewhere, failed]) h.catalog.insertBackup(b);
      const vp = await api.getVolumeProtection({ volume: vol("v1") });
      assert.equal(vp.policy, "p1");
      assert.deepEqual(vp.volume, vol("v1"));
      assert.equal(vp.lastBackupId, newer.id);
      assert.equal(vp.lastJobId, "j1");
      assert.equal(Number(vp.missedRuns), 2);
      assert.equal((await api.getVolumeProtection({ volume: vol("v1"), policy: "p1" })).lastBackupId, newer.id);
      await assertStatus(
        api.getVolumeProtection({ volume: vol("v9") }),
        Status.NOT_FOUND,
        /^volume a\/rbd\/v9 is not protected by any policy/,
      );
      await assertStatus(
        api.getVolumeProtection({ volume: vol("v9"), policy: "p1" }),
        Status.NOT_FOUND,
        /^volume a\/rbd\/v9 is not protected by policy p1/,
      );
    });

    it("a volume in two policies needs the policy named; lists filter by policy and cluster and page", async () => {
      await api.createPolicy({ policy: policy("p1") });
      await api.createPolicy({ policy: policy("p2", { destination: { cluster: "a" } }) });
      h.catalog.policies.upsertProtection(record("p1", vol("v1")));
      h.catalog.policies.upsertProtection(record("p2", vol("v1")));
      h.catalog.policies.upsertProtection(record("p2", vol("v2", "b")));
      await assertStatus(
        api.getVolumeProtection({ volume: vol("v1") }),
        Status.FAILED_PRECONDITION,
        /^volume a\/rbd\/v1 is in 2 policies \(p1, p2\): name one with policy/,
      );
      assert.equal((await api.getVolumeProtection({ volume: vol("v1"), policy: "p2" })).policy, "p2");
      const all = await api.listVolumeProtection({ pageSize: 2 });
      assert.deepEqual(
        all.volumes.map((x) => `${x.policy}:${x.volume?.cluster}/${x.volume?.image}`),
        ["p1:a/v1", "p2:a/v1"],
      );
      const rest = await api.listVolumeProtection({ pageSize: 2, pageToken: all.nextPageToken });
      assert.deepEqual(
        rest.volumes.map((x) => x.volume?.image),
        ["v2"],
      );
      assert.equal(rest.nextPageToken, "");
      assert.equal((await api.listVolumeProtection({ policy: "p2" })).volumes.length, 2);
      assert.equal((await api.listVolumeProtection({ cluster: "b" })).volumes.length, 1);
      await api.pausePolicy({ name: "p2" });
      const paused = await api.listVolumeProtection({ state: 4 /* PAUSED */ });
      assert.deepEqual(
        paused.volumes.map((x) => x.policy),
        ["p2", "p2"],
      );
    });
  });

  describe("a volume's own pause (failover)", () => {
    it("ResumePolicy with a volume clears only that volume's pause; the policy's flag stays", async () => {
      await api.createPolicy({ policy: policy("p1", { selector: { volumes: [vol("v1"), vol("v2")] } }) });
      await api.pausePolicy({ name: "p1" });
      h.catalog.policies.upsertProtection({ ...record("p1", vol("v1")), pausedReason: "failed over to b/rbd/v1" });
      h.catalog.policies.upsertProtection({ ...record("p1", vol("v2")), pausedReason: "failed over to b/rbd/v2" });
      runner.changes = [];
      const p = await api.resumePolicy({ name: "p1", volume: vol("v1") });
      assert.equal(p.paused, true, "the policy stays paused");
      assert.equal(h.catalog.policies.getProtection("p1", volumeKey(vol("v1")))?.pausedReason, "");
      assert.equal(
        h.catalog.policies.getProtection("p1", volumeKey(vol("v2")))?.pausedReason,
        "failed over to b/rbd/v2",
      );
      assert.deepEqual(runner.changes, ["p1"]);
      await assertStatus(
        api.resumePolicy({ name: "p1", volume: vol("v9") }),
        Status.NOT_FOUND,
        /^policy p1 has no protection record of volume a\/rbd\/\/v9/,
      );
      await assertStatus(
        api.resumePolicy({ name: "p1", volume: { ...vol("v1"), pool: "" } }),
        Status.INVALID_ARGUMENT,
        /^volume\.pool/,
      );
      assert.equal(h.catalog.policies.getPolicy("p1")?.paused, true);
    });
  });

  describe("UpdatePolicy: a retention that would delete backups the policy keeps is confirmed first", () => {
    /** `n` available backups `p` made of `v` at b/pool, a second apart after the policy was created. */
    function made(p: Policy, v: VolumeRef, n: number, o: { pool?: string; policy?: string; laterS?: number } = {}) {
      const t0 = p.createdAt?.getTime() ?? 0;
      return Array.from({ length: n }, (_, i) => {
        const at = t0 + ((o.laterS ?? 0) + i + 1) * 1000;
        const b = {
          ...newBackup(v, "b", at),
          location: { cluster: "b", pool: o.pool ?? "backups", namespace: "" },
          status: BackupStatus.BACKUP_STATUS_AVAILABLE,
          completedAt: new Date(at),
          policy: o.policy ?? p.name,
        };
        h.catalog.insertBackup(b);
        return b;
      });
    }
    const fresh = () => vol(`rd-${randomUUID().slice(0, 8)}`);
    const label = (v: VolumeRef) => `${v.cluster}/rbd/${v.image}`;

    it("fewer kept: FAILED_PRECONDITION naming how many, of how many volumes, and the newest; nothing changed", async () => {
      const [v1, v2] = [fresh(), fresh()];
      const p = await api.createPolicy({ policy: policy("rd1", { selector: { volumes: [v1] } }) });
      const b1 = made(p, v1, 3);
      // v2 joins with the update: its backups (left from an earlier time in the policy) were never judged.
      const b2 = made(p, v2, 3, { laterS: 10 });
      made(p, v1, 2, { policy: "" }); // a manual backup and one of another policy are not this policy's
      made(p, v1, 2, { policy: "other" });
      runner.changes = [];
      const tighter = policy("rd1", { selector: { volumes: [v1, v2] }, retention: { keepLast: 1 } });
      // v1: keep_last 3 already drops its oldest at the next run (whose backup takes a place); 1 drops all
      // three: 2 more. v2: all 3.
      await assertStatus(
        api.updatePolicy({ policy: tighter }),
        Status.FAILED_PRECONDITION,
        new RegExp(
          `^policy rd1: its new retention would delete 5 backups of 2 volumes that it keeps now \\(the newest: backup ${b2[2]?.id} of ${label(v2)}, made .*\\), at each volume's next successful run or the one after it\\. Set confirm_retention_drop to apply it .*nothing was changed$`,
        ),
      );
      const stored = h.catalog.policies.getPolicy("rd1");
      assert.equal(stored?.revision, 1);
      assert.equal(stored?.retention?.keepLast, 3);
      assert.deepEqual(stored?.selector?.volumes, [v1]);
      assert.deepEqual(runner.changes, []);

      // A backup a clone depends on is not counted: retention does not delete it either.
      h.catalog.updateBackup({ ...(b1[2] as Backup), clones: [vol("clone-x")] });
      await assertStatus(
        api.updatePolicy({ policy: tighter }),
        Status.FAILED_PRECONDITION,
        /would delete 4 backups of 2 volumes/,
      );
      // A volume the update leaves out is not judged: only v1's one.
      await assertStatus(
        api.updatePolicy({ policy: policy("rd1", { selector: { volumes: [v1] }, retention: { keepLast: 1 } }) }),
        Status.FAILED_PRECONDITION,
        /would delete 1 backup of 1 volume that/,
      );
      const u = await api.updatePolicy({ policy: tighter, confirmRetentionDrop: true });
      assert.equal(u.revision, 2);
      assert.equal(u.retention?.keepLast, 1);
    });

    it("a volume the update deselects is not judged: retention never runs for it again", async () => {
      const [va, vb] = [fresh(), fresh()];
      const p = await api.createPolicy({ policy: policy("rd5", { selector: { volumes: [va, vb] } }) });
      made(p, va, 3);
      made(p, vb, 3);
      await assertStatus(
        api.updatePolicy({ policy: policy("rd5", { selector: { volumes: [va] }, retention: { keepLast: 1 } }) }),
        Status.FAILED_PRECONDITION,
        new RegExp(`would delete 2 backups of 1 volume that it keeps now \\(the newest: backup \\S+ of ${label(va)},`),
      );
    });

    it("counts with the next run's backup in the plan, and retention then deletes exactly that many", async () => {
      const v = fresh();
      const p = await api.createPolicy({ policy: policy("rd4", { selector: { volumes: [v] } }) });
      made(p, v, 2);
      // keep_last 3 → 2 over two backups: free today, but the next run's backup takes a place.
      const two = policy("rd4", { selector: { volumes: [v] }, retention: { keepLast: 2 } });
      await assertStatus(
        api.updatePolicy({ policy: two }),
        Status.FAILED_PRECONDITION,
        /would delete 1 backup of 1 volume/,
      );
      const u = await api.updatePolicy({ policy: two, confirmRetentionDrop: true });
      // The next run: its backup, then retention as the runner applies it.
      const next = made(u, v, 1, { laterS: 60 })[0] as Backup;
      const queued = enforceRetention({ ...deps, log: h.log }, u, v, Date.now() + 120_000, () => "backups", next.id);
      assert.equal(queued, 1, "retention deleted what the refusal counted");
    });

    // keep_last 2 -> keep_last 1 with 6 h of min_age, daily runs, over backups 20 h and 1 h old: the 1 h old
    // one is young today. With the next run 12 h away, that run finds it old enough; 4.5 h away, the run
    // after it does (the next one failed, or was settled late).
    for (const [name, hours, what] of [
      ["rd6", 12, "judged at the volume's next run, not now: a backup min_age keeps today is old enough by then"],
      ["rd8", 4.5, "judged a period later too: a next run that fails or is settled late leaves min_age expired"],
    ] as const) {
      it(what, async () => {
        const v = fresh();
        const now = Date.now();
        const H = 3_600_000;
        const startOffsetSeconds = Math.floor(((now + hours * H) % (24 * H)) / 1000);
        const sel = { selector: { volumes: [v] }, schedule: { intervalSeconds: 86_400, startOffsetSeconds } };
        const p = await api.createPolicy({ policy: policy(name, { ...sel, retention: { keepLast: 2 } }) });
        // Made before: the policy is 10 days old.
        const older = { ...p, createdAt: new Date(now - 240 * H) };
        h.catalog.policies.updatePolicy({
          ...(h.catalog.policies.getPolicy(name) as Policy),
          createdAt: older.createdAt,
        });
        made(older, v, 1, { laterS: (240 * H - 20 * H) / 1000 });
        const recent = made(older, v, 1, { laterS: (240 * H - H) / 1000 })[0] as Backup;
        await assertStatus(
          api.updatePolicy({ policy: policy(name, { ...sel, retention: { keepLast: 1, minAgeSeconds: 6 * 3600 } }) }),
          Status.FAILED_PRECONDITION,
          new RegExp(`would delete 1 backup of 1 volume that it keeps now \\(the newest: backup ${recent.id} `),
        );
      });
    }

    it("a schedule kept: the volume's own next run (its record's, inside its jitter) is when it is judged", async (t) => {
      const now = Date.now();
      const H = 3_600_000;
      const dayStart = Math.floor(now / (24 * H)) * 24 * H;
      if (now - dayStart < 2 * H || now - dayStart > 22 * H)
        return t.skip("too near midnight UTC for this day's arithmetic");
      const v = fresh();
      // Daily slots; today's passed a minute ago and this volume's jittered run comes in 3 min.
      const startOffsetSeconds = Math.floor(((now - 60_000) % (24 * H)) / 1000);
      const daily = { intervalSeconds: 86_400, startOffsetSeconds, jitterSeconds: 600 };
      const sel = { selector: { volumes: [v] }, schedule: daily };
      await api.createPolicy({ policy: policy("rd9", { ...sel, retention: { keepLast: 2 } }) });
      const stored = h.catalog.policies.getPolicy("rd9") as Policy;
      h.catalog.policies.updatePolicy({ ...stored, createdAt: new Date(now - 240 * H) });
      h.catalog.policies.upsertProtection({ ...record("rd9", v), nextSlotAt: now - 60_000, nextRunAt: now + 180_000 });
      const older = { ...stored, createdAt: new Date(now - 240 * H) };
      // Yesterday noon, and today 01:00.
      made(older, v, 1, { laterS: (dayStart - 12 * H - (now - 240 * H)) / 1000 - 1 });
      const today = made(older, v, 1, { laterS: (dayStart + H - (now - 240 * H)) / 1000 - 1 })[0] as Backup;
      // keep_last 2 -> daily 2: the run in 3 min takes today's place, and today's 01:00 backup goes.
      await assertStatus(
        api.updatePolicy({ policy: policy("rd9", { ...sel, retention: { daily: 2 } }) }),
        Status.FAILED_PRECONDITION,
        new RegExp(`would delete 1 backup of 1 volume that it keeps now \\(the newest: backup ${today.id} `),
      );
    });

    it("a widened selector brings back volumes whose backups by this policy were left alone: they are judged", async () => {
      const v = fresh();
      const narrow = { cluster: "a", pool: "rbd", imageRegex: "^rdw-none$" };
      const p = await api.createPolicy({ policy: policy("rd7", { selector: narrow }) });
      made(p, v, 3); // made while an earlier selector took it
      await assertStatus(
        api.updatePolicy({
          policy: policy("rd7", { selector: { ...narrow, imageRegex: "^rd-.*$" }, retention: { keepLast: 1 } }),
        }),
        Status.FAILED_PRECONDITION,
        /would delete 3 backups of 1 volume that/,
      );
    });

    it("looser rules, other fields, min_age over their age: applied without confirming; the tighter ones between them refused", async () => {
      const v1 = fresh();
      const p = await api.createPolicy({ policy: policy("rd2", { selector: { volumes: [v1] } }) });
      made(p, v1, 2);
      const sel = { selector: { volumes: [v1] } };
      assert.equal(
        (await api.updatePolicy({ policy: policy("rd2", { ...sel, retention: { keepLast: 5 } }) })).revision,
        2,
      );
      const described = await api.updatePolicy({
        policy: policy("rd2", {
          ...sel,
          retention: { keepLast: 5 },
          description: "x",
          schedule: { intervalSeconds: 600 },
        }),
      });
      assert.equal(described.revision, 3);
      // keep_last 1 + daily 1: the next run's backup is today's newest; both go: refused. min_age over
      // their age (10 days, past the next two runs) keeps them: applied, and dropping it again is refused.
      await assertStatus(
        api.updatePolicy({ policy: policy("rd2", { ...sel, retention: { keepLast: 1, daily: 1 } }) }),
        Status.FAILED_PRECONDITION,
        /would delete 2 backups of 1 volume that/,
      );
      const young = await api.updatePolicy({
        policy: policy("rd2", { ...sel, retention: { keepLast: 1, minAgeSeconds: 864_000 } }),
      });
      assert.equal(young.revision, 4);
      await assertStatus(
        api.updatePolicy({ policy: policy("rd2", { ...sel, retention: { keepLast: 1 } }) }),
        Status.FAILED_PRECONDITION,
        /would delete 2 backups of 1 volume that/,
      );
    });

    it("a destination where the policy made backups before: what its retention would reach there counts", async () => {
      const v1 = fresh();
      // Its current rules keep fewer (1) than the new ones (2), but never reached b/bk2.
      const p = await api.createPolicy({
        policy: policy("rd3", { selector: { volumes: [v1] }, retention: { keepLast: 1 } }),
      });
      made(p, v1, 3, { pool: "bk2" }); // left at b/bk2 by an earlier destination
      await assertStatus(
        api.updatePolicy({
          policy: policy("rd3", {
            selector: { volumes: [v1] },
            destination: { cluster: "b", pool: "bk2" },
            retention: { keepLast: 2 },
          }),
        }),
        Status.FAILED_PRECONDITION,
        /would delete 2 backups of 1 volume that it keeps now/,
      );
      assert.equal(h.catalog.policies.getPolicy("rd3")?.destination?.pool, "");
      // Looser rules at the current destination (none there): nothing to confirm.
      const same = await api.updatePolicy({
        policy: policy("rd3", { selector: { volumes: [v1] }, retention: { keepLast: 2 } }),
      });
      assert.equal(same.revision, 2);
    });
  });

  it("the audit target of policy calls names the policy", () => {
    assert.equal(targetOf({ policy: { name: "p1" } }), "policy=p1");
    assert.equal(targetOf({ name: "p1" }), "policy=p1");
    assert.equal(targetOf({ name: "p1", volume: vol("v1") }), "policy=p1 volume=a/rbd/v1");
  });
});

function record(policyName: string, v: VolumeRef): ProtectionRecord {
  return {
    policy: policyName,
    volume: v,
    source: "explicit",
    nextSlotAt: 0,
    nextRunAt: 0,
    lastSlotAt: 0,
    lastJobId: "",
    lastError: "",
    consecutiveFailures: 0,
    missedRuns: 0,
    pausedReason: "",
    lastSeenAt: 0,
    createdAt: 0,
  };
}
