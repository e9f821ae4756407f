/**
 * API clients' scopes (src/coordinator/scopes.ts, api/scoped.ts): the file's format and its refusals;
 * named tokens; and, through the real BackupService with the audit and scope middlewares in front, two
 * control planes on the same clusters — "cinder" (a/rbd, backups on b) and "k8s" (a/k8s, backups on b) —
 * each refused PERMISSION_DENIED on the other's volumes, backups, jobs and policies, nothing changed, and
 * shown only its own in listings; an unlisted operator refused; an admin unscoped.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Metadata } from "nice-grpc";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import { CHECKS } from "../../../src/coordinator/api/scoped";
import { Audit } from "../../../src/coordinator/audit";
import { CALLER_METADATA_KEY, type Caller, METHOD_ROLES } from "../../../src/coordinator/authz";
import { parseScopes, ScopeStore } from "../../../src/coordinator/scopes";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { parseTokens, TokenStore } from "../../../src/coordinator/tokens";
import { BackupMode, RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import { BackupStatus, type ImportBackupMessage, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import type { Answer } from "../../helpers/fake-agent";
import { repoRoot } from "../../helpers/lab";
import { type Api, type ApiServer, assertStatus, serveApi } from "./api-server";
import { Harness, importHeaderMessage, newBackup, vol } from "./harness";

const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-scopes-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("the scopes file", () => {
  it("parses clients, volume and backup scopes at three depths, the default namespace and *", () => {
    const m = parseScopes(
      "# who may touch what\nclient/cinder a/rbd backups:b/backups  # Cinder\ntoken/k8s a/k8s/ns1 backups:b/backups/ b\ntoken/ops *\n",
      "f",
    );
    assert.deepEqual(m.get("client/cinder")?.entries, [
      { kind: "volumes", cluster: "a", pool: "rbd" },
      { kind: "backups", cluster: "b", pool: "backups" },
    ]);
    assert.deepEqual(m.get("token/k8s")?.entries, [
      { kind: "volumes", cluster: "a", pool: "k8s", namespace: "ns1" },
      { kind: "backups", cluster: "b", pool: "backups", namespace: "" },
      { kind: "volumes", cluster: "b" },
    ]);
    assert.equal(m.get("token/ops")?.all, true);
  });

  it("the shipped example (deploy/examples/api-scopes) parses, and its commented example lines too", () => {
    const text = readFileSync(path.join(repoRoot, "deploy/examples/api-scopes"), "utf8");
    assert.equal(parseScopes(text, "api-scopes").size, 0, "every line a comment");
    // Its example clients, uncommented, are valid lines.
    const examples = text
      .split("\n")
      .filter((l) => /^# (client|token)\//.test(l))
      .map((l) => l.slice(2));
    assert.ok(examples.length >= 3, "the example lines are found");
    assert.equal(parseScopes(examples.join("\n"), "api-scopes").size, examples.length);
  });

  it("refuses a bad line, naming the file and line", () => {
    for (const [text, why] of [
      ["cinder a/rbd", /f line 1: "cinder" is not client\/<name> or token\/<name>/],
      ["client/cinder", /f line 1: client\/cinder names no scope/],
      ["\nclient/x a/b/c/d", /f line 2: scope "a\/b\/c\/d" is not/],
      ["client/x -a", /scope "-a" is not/],
      ["client/x a/r@d", /scope "a\/r@d" is not/],
      ["client/x a/pool#1", /scope "a\/pool#1" is not/],
      ["client/x a/*", /scope "a\/\*" is not/],
      ["client/x backups:", /scope "backups:" is not/],
      ["client/x a\nclient/x b", /line 2: client\/x is listed twice/],
    ] as const) {
      assert.throws(() => parseScopes(text, "f"), why, text);
    }
  });

  it("tokens may be named (the audit's token:<role>/<name>, the scopes file's token/<name>)", () => {
    const t = parseTokens("reader 0123456789abcdef-reader\noperator 0123456789abcdef-operator k8s\n", "t");
    assert.deepEqual(
      t.map((e) => [e.role, e.name]),
      [
        ["reader", ""],
        ["operator", "k8s"],
      ],
    );
    assert.throws(() => parseTokens("operator 0123456789abcdef-x k8s extra", "t"), /t line 1: expected/);
    assert.throws(() => parseTokens("operator 0123456789abcdef-x k/8s", "t"), /a token's name is/);
    assert.throws(
      () => parseTokens("operator 0123456789abcdef-x k8s\nreader 0123456789abcdef-y k8s", "t"),
      /line 2: its name is given on an earlier line too/,
    );
    assert.throws(
      () => parseTokens("reader 0123456789abcdef-x ro\nadmin 0123456789abcdef-x", "t"),
      /line 2: this token is on an earlier line too/,
    );
    const f = path.join(dir, "tokens");
    writeFileSync(f, "operator 0123456789abcdef-operator k8s\n", { mode: 0o600 });
    assert.deepEqual(new TokenStore(f).entryOf("0123456789abcdef-operator"), { role: "operator", name: "k8s" });
  });

  it("who is scoped: listed clients; unlisted readers and operators refused; admins, * and no file unscoped", () => {
    const f = path.join(dir, "scopes");
    writeFileSync(f, "client/cinder a/rbd backups:b/backups\ntoken/ops *\n");
    const s = new ScopeStore(f);
    const cert = (role: "reader" | "operator" | "admin", name: string): Caller => ({
      via: "certificate",
      identity: { kind: "client", role, name },
    });
    const of = (c: Caller) => s.of(c);
    const cinder = of(cert("operator", "cinder"));
    const sc = "scope" in cinder ? cinder.scope : null;
    assert.ok(sc);
    assert.ok(sc.sees(vol("v", "a", "rbd")) && !sc.sees(vol("v", "a", "k8s")));
    assert.ok(sc.keeps({ cluster: "b", pool: "backups", namespace: "" }), "its backups may be kept there");
    assert.ok(!sc.sees(vol("failed-over", "b", "backups")), "but the images there are not its volumes");
    assert.ok(!sc.keeps({ cluster: "a", pool: "rbd", namespace: "" }), "and its volumes' pool is no backup location");
    assert.match(String((of(cert("operator", "other")) as { refused: string }).refused), /client\/other is not listed/);
    assert.match(
      String((of({ via: "token", role: "reader" }) as { refused: string }).refused),
      /an unnamed token is not listed .*name the token/,
    );
    assert.deepEqual(of(cert("admin", "root")), { scope: null });
    assert.deepEqual(of({ via: "token", role: "operator", name: "ops" }), { scope: null });
    assert.deepEqual(new ScopeStore("").of(cert("operator", "other")), { scope: null });
    assert.ok("refused" in s.of(null), "a caller the file cannot name is refused (fail closed)");
    // A bad reload keeps the scopes in force.
    writeFileSync(f, "client/cinder\n");
    assert.throws(() => s.reload(), /names no scope/);
    assert.ok("scope" in of(cert("operator", "cinder")));
    // A line cut short while the file is rewritten in place names a wider scope: a file without its
    // final newline is refused on reload.
    writeFileSync(f, "client/cinder a/r");
    assert.throws(() => s.reload(), /does not end with a newline: it may be half-written/);
    const still = of(cert("operator", "cinder"));
    assert.ok("scope" in still && still.scope && !still.scope.sees(vol("v", "a", "k8s")), "the old scopes in force");
  });
});

const CLUSTERS: Record<string, { pools: string[]; images: string[] }> = {
  a: { pools: ["rbd", "k8s"], images: ["v1", "pvc-1", "new"] },
  b: { pools: ["backups"], images: [] },
};

function clusterAnswer(cluster: string) {
  return (req: CallRequest): Answer => {
    const c = CLUSTERS[cluster] ?? { pools: [], images: [] };
    if (req.$case !== "probe") return new AppError(Status.UNIMPLEMENTED, req.$case);
    const q = req.value;
    const exists = !!q.image && c.images.includes(q.image.image);
    return {
      $case: "probe",
      value: {
        missingPools: q.pools.filter((p) => !c.pools.includes(p)),
        missingNamespaces: q.namespaces.map((n) => n.namespace).filter((n) => n),
        imageExists: exists,
        imageSize: exists ? 1 << 20 : 0,
        imageSnapshots: [],
      },
    };
  };
}

describe("the scope guard's table", () => {
  it("has a check for every BackupService method, and nothing else (a new method is placed on purpose)", () => {
    assert.deepEqual(Object.keys(CHECKS).sort(), Object.keys(METHOD_ROLES).sort());
  });
});

describe("scoped API clients on the real BackupService", () => {
  let h: Harness;
  let audit: Audit;
  let served: ApiServer;
  let api: Api;
  const client = (role: "reader" | "operator" | "admin", name: string) => ({
    metadata: Metadata({
      [CALLER_METADATA_KEY]: JSON.stringify({ via: "certificate", identity: { kind: "client", role, name } }),
    }),
  });
  const cinder = client("operator", "cinder");
  const k8s = client("operator", "k8s");
  const admin = client("admin", "root");
  const pvc: VolumeRef = vol("pvc-1", "a", "k8s");
  let cinderBackup = "";
  let k8sBackup = "";

  function available(v: VolumeRef): string {
    const b = newBackup(v, "b", h.t);
    Object.assign(b, {
      status: BackupStatus.BACKUP_STATUS_AVAILABLE,
      baseImage: `${v.image}.backup.${b.id}`,
      snapshot: "s",
    });
    h.catalog.insertBackup(b);
    return b.id;
  }

  before(async () => {
    h = new Harness();
    h.scheduler.stop();
    audit = new Audit(h.log);
    const f = path.join(dir, "api-scopes");
    writeFileSync(f, "client/cinder a/rbd backups:b/backups\nclient/k8s a/k8s backups:b/backups\nclient/ops *\n");
    const deps = { catalog: h.catalog, sessions: h.sessions, scheduler: h.scheduler, log: h.log, maxAttempts: 3 };
    served = await serveApi(deps, { scopes: new ScopeStore(f), audit });
    api = served.api;
    h.connect("a1", "a").answer = clusterAnswer("a");
    h.connect("b1", "b").answer = clusterAnswer("b");
    cinderBackup = available(vol("v1"));
    k8sBackup = available(pvc);
  });
  after(async () => {
    await served.close();
    h.close();
  });

  const refusals = async () =>
    (await audit.refusals.get()).values.find((v) => v.labels.reason === "out_of_scope")?.value ?? 0;
  const jobs = () => h.catalog.listJobs({}, 1000, "").items.length;

  it("a backup of another's volume, or into a pool outside the scopes: PERMISSION_DENIED naming both, no job", async () => {
    const before = jobs();
    const counted = await refusals();
    await assertStatus(
      api.createBackup(
        { volume: pvc, location: { cluster: "b", pool: "", namespace: "" }, mode: BackupMode.BACKUP_MODE_AUTO },
        cinder,
      ),
      Status.PERMISSION_DENIED,
      /^volume a\/k8s\/pvc-1 is outside the scopes of client\/cinder \(scopes a\/rbd, backups:b\/backups\)/,
    );
    await assertStatus(
      api.createBackup({ volume: vol("v1"), location: { cluster: "a", pool: "k8s", namespace: "" } }, cinder),
      Status.PERMISSION_DENIED,
      /^location a\/k8s is outside the scopes/,
    );
    assert.equal(jobs(), before, "nothing queued");
    assert.equal(await refusals(), counted + 2, "counted as out_of_scope");
    // Its own volume, to its own backup pool (the default one, resolved): queued.
    const job = await api.createBackup(
      { volume: vol("v1"), location: { cluster: "b", pool: "", namespace: "" } },
      cinder,
    );
    assert.equal(job.state, JobState.JOB_STATE_QUEUED);
    const line = h.log.lines.filter((l) => l.fields?.audit && l.fields.result === "PERMISSION_DENIED").at(-1);
    assert.equal(
      line?.fields?.identity,
      "rbdbackup://client/operator/cinder",
      "the mutating call's refusal is audited",
    );
  });

  it("another's backup: not read, deleted, verified, exported or restored; its own restores only into its scopes", async () => {
    for (const call of [
      () => api.getBackup({ backupId: k8sBackup }, cinder),
      () => api.deleteBackup({ backupId: k8sBackup }, cinder),
      () => api.verifyBackup({ backupId: k8sBackup }, cinder),
      () => api.exportBackupRecord({ backupId: k8sBackup }, cinder),
      () => api.restoreBackup({ backupId: k8sBackup, target: vol("x"), mode: RestoreMode.RESTORE_MODE_NEW }, cinder),
    ]) {
      await assertStatus(
        call(),
        Status.PERMISSION_DENIED,
        new RegExp(`backup_id ${k8sBackup} \\(a backup of a/k8s/pvc-1\\) is outside`),
      );
    }
    assert.equal(h.backup(k8sBackup).status, BackupStatus.BACKUP_STATUS_AVAILABLE, "still there");
    await assertStatus(
      api.restoreBackup(
        { backupId: cinderBackup, target: vol("x", "a", "k8s"), mode: RestoreMode.RESTORE_MODE_NEW },
        cinder,
      ),
      Status.PERMISSION_DENIED,
      /^target a\/k8s\/x is outside the scopes of client\/cinder/,
    );
    assert.equal((await api.getBackup({ backupId: cinderBackup }, cinder)).id, cinderBackup);
    // An id nobody has: the handler's own NOT_FOUND, as for anyone.
    await assertStatus(api.getBackup({ backupId: crypto.randomUUID() }, cinder), Status.NOT_FOUND, /not found/);
  });

  it("listings show each client its own: backups, jobs, agents", async () => {
    const ids = (await api.listBackups({}, k8s)).backups.map((b) => b.volume?.image);
    assert.ok(ids.includes("pvc-1") && !ids.includes("v1"), String(ids));
    const all = (await api.listBackups({}, admin)).backups.map((b) => b.volume?.image);
    assert.ok(all.includes("pvc-1") && all.includes("v1"), "an admin sees everything");
    const cinderJobs = (await api.listJobs({}, cinder)).jobs;
    assert.ok(cinderJobs.length > 0 && cinderJobs.every((j) => j.volume?.pool === "rbd"));
    assert.deepEqual((await api.listJobs({}, k8s)).jobs, []);
    const job = cinderJobs[0];
    await assertStatus(api.getJob({ jobId: job?.id ?? "" }, k8s), Status.PERMISSION_DENIED, /^job .* is outside/);
    await assertStatus(api.cancelJob({ jobId: job?.id ?? "" }, k8s), Status.PERMISSION_DENIED, /^job .* is outside/);
    assert.equal(h.job(job?.id ?? "").cancelRequested, false, "not cancelled");
    const agents = (await api.listAgents({}, k8s)).agents.map((a) => a.clusterName).sort();
    assert.deepEqual(agents, ["a", "b"]);
    await assertStatus(api.checkCluster({ cluster: "z", backupPool: "" }, k8s), Status.PERMISSION_DENIED, /cluster z/);
  });

  it("policies: another's not made, read or changed; listings show one's own", async () => {
    const policy = (name: string, pool: string) => ({
      name,
      description: "",
      selector: { volumes: [], cluster: "a", pool, namespace: "", imageRegex: ".*" },
      destination: { cluster: "b", pool: "backups", namespace: "" },
      mode: BackupMode.BACKUP_MODE_AUTO,
      schedule: { intervalSeconds: 3600 },
      retention: { keepLast: 3 },
    });
    await assertStatus(
      api.createPolicy({ policy: policy("steal", "k8s") }, cinder),
      Status.PERMISSION_DENIED,
      /policy steal is outside/,
    );
    // Its destination's pool named: a default would be resolved again at every run, wherever it points then.
    const unnamed = policy("unnamed", "k8s");
    await assertStatus(
      api.createPolicy({ policy: { ...unnamed, destination: { cluster: "b", pool: "", namespace: "" } } }, k8s),
      Status.PERMISSION_DENIED,
      /destination b without a pool/,
    );
    await api.createPolicy({ policy: policy("pvcs", "k8s") }, k8s);
    for (const call of [
      () => api.getPolicy({ name: "pvcs" }, cinder),
      () => api.deletePolicy({ name: "pvcs" }, cinder),
      () => api.pausePolicy({ name: "pvcs" }, cinder),
    ]) {
      await assertStatus(call(), Status.PERMISSION_DENIED, /^policy pvcs is outside the scopes of client\/cinder/);
    }
    assert.equal(h.catalog.policies.getPolicy("pvcs")?.paused, false, "not paused");
    assert.deepEqual((await api.listPolicies({}, cinder)).policies, []);
    assert.deepEqual(
      (await api.listPolicies({}, k8s)).policies.map((p) => p.name),
      ["pvcs"],
    );
    await api.deletePolicy({ name: "pvcs" }, k8s);
  });

  it("a backup pool both clients keep backups in makes none of its images a client's volume", async () => {
    const failedOver = vol("pvc-1-fo", "b", "backups"); // k8s's failover volume, made in the backup pool
    await assertStatus(
      api.createBackup({ volume: failedOver, location: { cluster: "b", pool: "backups", namespace: "" } }, cinder),
      Status.PERMISSION_DENIED,
      /^volume b\/backups\/pvc-1-fo is outside/,
    );
    await assertStatus(
      api.restoreBackup(
        { backupId: cinderBackup, target: failedOver, mode: RestoreMode.RESTORE_MODE_ORIGINAL },
        cinder,
      ),
      Status.PERMISSION_DENIED,
      /^target b\/backups\/pvc-1-fo is outside/,
    );
    await assertStatus(
      api.failbackVolume({ volume: vol("v1"), source: failedOver, backupId: cinderBackup }, cinder),
      Status.PERMISSION_DENIED,
      /^source b\/backups\/pvc-1-fo is outside/,
    );
    await assertStatus(
      api.listBackupSnapshots({ volume: vol(h.backup(k8sBackup).baseImage, "b", "backups") }, cinder),
      Status.PERMISSION_DENIED,
      /is outside/,
    );
    // Its backup location is checked as such: the cluster's default pool, resolved (b's agents agree on it).
    await api.checkCluster({ cluster: "b", backupPool: "" }, cinder).catch((e: unknown) => {
      assert.doesNotMatch(String(e), /PERMISSION_DENIED|outside/);
    });
    await assertStatus(
      api.checkCluster({ cluster: "a", backupPool: "rbd" }, cinder),
      Status.PERMISSION_DENIED,
      /backup_pool a\/rbd/,
    );
    await assertStatus(
      api.checkCluster({ cluster: "z", backupPool: "" }, cinder),
      Status.PERMISSION_DENIED,
      /cluster z/,
    );
  });

  it("a filtered listing reads on until its page is full: no short page or token tells of another's items", async () => {
    for (let i = 0; i < 5; i++) available(vol(`pvc-${i}`, "a", "k8s"));
    const own = [available(vol("v1")), available(vol("v1"))];
    // cinder, asking for k8s's pool: nothing, and no token to count what was skipped.
    const theirs = await api.listBackups({ cluster: "a", pool: "k8s", pageSize: 1 }, cinder);
    assert.deepEqual(theirs.backups, []);
    assert.equal(theirs.nextPageToken, "");
    // Its own among the others: pages of 1 hold one of its own each, until the end.
    const seen: string[] = [];
    let token = "";
    do {
      const page = await api.listBackups({ cluster: "a", pageSize: 1, pageToken: token }, cinder);
      assert.ok(page.backups.length === 1 || (page.backups.length === 0 && !page.nextPageToken));
      seen.push(...page.backups.map((b) => b.id));
      token = page.nextPageToken;
    } while (token);
    for (const id of own) assert.ok(seen.includes(id), `its backup ${id} is listed`);
    assert.ok(seen.every((id) => h.backup(id).volume?.pool === "rbd"));
  });

  it("ImportBackup: a scoped operator imports only its own volume into its own pool; an unscoped operator not at all", async () => {
    async function* importOf(volume: VolumeRef, pool: string, parentBackupId = ""): AsyncIterable<ImportBackupMessage> {
      yield importHeaderMessage({ volume, location: { cluster: "b", pool, namespace: "" }, parentBackupId });
      yield { body: { $case: "data", value: Buffer.from("rbd diff v1\n") } };
    }
    const backups = () => h.catalog.listBackups({}, 1000, "").items.length;
    const [jobsBefore, backupsBefore, counted] = [jobs(), backups(), await refusals()];
    const wrongRole = async () =>
      (await audit.refusals.get()).values.find((v) => v.labels.reason === "wrong_role")?.value ?? 0;
    const roleRefusals = await wrongRole();
    await assertStatus(
      api.importBackup(importOf(pvc, "backups"), cinder),
      Status.PERMISSION_DENIED,
      /^header\.volume a\/k8s\/pvc-1 is outside the scopes of client\/cinder/,
    );
    await assertStatus(
      api.importBackup(importOf(vol("v1"), "rbd"), cinder),
      Status.PERMISSION_DENIED,
      /^header\.location b\/rbd is outside the scopes of client\/cinder/,
    );
    await assertStatus(
      api.importBackup(importOf(pvc, "backups", cinderBackup), k8s),
      Status.PERMISSION_DENIED,
      new RegExp(`^header\\.parent_backup_id ${cinderBackup} \\(a backup of a/rbd/v1\\) is outside`),
    );
    assert.equal(await refusals(), counted + 3, "counted as out_of_scope");
    // An operator the file leaves unscoped (*) could name any volume: ImportBackup stays an admin's call for it.
    await assertStatus(
      api.importBackup(importOf(vol("v1"), "backups"), client("operator", "ops")),
      Status.PERMISSION_DENIED,
      /^ImportBackup needs role admin, or an operator whose scopes .* confine it .*client\/operator\/ops is an operator without scopes/,
    );
    assert.equal(await wrongRole(), roleRefusals + 1, "counted as wrong_role");
    assert.equal(jobs(), jobsBefore, "no job");
    assert.equal(backups(), backupsBefore, "no backup");
    // Within its scopes, and an admin: past the guard, to the handler (this test's API relays no data).
    for (const caller of [cinder, admin])
      await assertStatus(
        api.importBackup(importOf(vol("v1"), "backups"), caller),
        Status.UNAVAILABLE,
        /this coordinator does not relay imports/,
      );
  });

  it("an operator the file does not list is refused every call; a reader's refused read is audited", async () => {
    const stranger = client("reader", "grafana");
    await assertStatus(
      api.listBackups({}, stranger),
      Status.PERMISSION_DENIED,
      /client\/grafana is not listed in the API scopes file/,
    );
    const line = h.log.lines.filter((l) => l.fields?.audit && l.fields.reason === "out_of_scope").at(-1);
    assert.equal(line?.fields?.identity, "rbdbackup://client/reader/grafana");
  });
});
