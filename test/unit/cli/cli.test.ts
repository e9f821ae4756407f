/**
 * The built `rbdbackup` CLI (dist/src/cli/main.js, run as a child process) against a fake coordinator
 * served in this process: requests built from the flags, output, the bearer token, watching, and the
 * exit codes of each outcome. No Ceph involved.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ServerCredentials } from "@grpc/grpc-js";
import { type CallContext, createServer, type Server, ServerError, Status } from "nice-grpc";
import { rfc3339 } from "../../../src/cli/commands/interchange";
import { tlsFiles } from "../../../src/common/tls";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import {
  type AgentStatus,
  type Backup,
  BackupServiceDefinition,
  type BackupServiceImplementation,
  BackupStatus,
  type CreateBackupRequest,
  type DeepPartial,
  type Job,
  JobKind,
  JobState,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import { labTls } from "../../../src/lab/agent-process";

const CLI = path.join(__dirname, "../../../src/cli/main.js");
const TOKEN = "t0ken";
const ID = "0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60";

const backup: DeepPartial<Backup> = {
  id: ID,
  volume: { cluster: "site-a", pool: "volumes", image: "vol-1" },
  location: { cluster: "site-b", pool: "backups" },
  status: BackupStatus.BACKUP_STATUS_AVAILABLE,
  sizeBytes: 10 * 1024 ** 3,
  dataBytesSent: 3 * 1024 ** 3,
  createdAt: new Date(Date.UTC(2025, 0, 1)),
};

function job(state: JobState, over: DeepPartial<Job> = {}): DeepPartial<Job> {
  return { id: "job-1", kind: JobKind.JOB_KIND_BACKUP, state, backupId: ID, ...over };
}

let created: CreateBackupRequest | undefined;
/** What the watch of job-N ends with: job-1 SUCCEEDED, job-2 FAILED, job-3 CANCELLED. */
const outcomes: Record<string, JobState> = {
  "job-1": JobState.JOB_STATE_SUCCEEDED,
  "job-2": JobState.JOB_STATE_FAILED,
  "job-3": JobState.JOB_STATE_CANCELLED,
};

function auth(ctx: CallContext) {
  if (ctx.metadata.get("authorization") !== `Bearer ${TOKEN}`) {
    throw new ServerError(Status.UNAUTHENTICATED, "a client certificate or a bearer token is required");
  }
}

const unimplemented = async () => {
  throw new ServerError(Status.UNIMPLEMENTED, "not in the fake");
};

/** The fake's ExportBackup: refuses, unless a test puts another in (the server holds `impl`'s methods). */
// biome-ignore lint/correctness/useYield: a fake that refuses
const refuseExport = async function* (): AsyncGenerator<never> {
  throw new ServerError(Status.UNIMPLEMENTED, "not in the fake");
};
let exportFake: BackupServiceImplementation["exportBackup"] = refuseExport;

const impl: BackupServiceImplementation = {
  createPolicy: unimplemented,
  flattenVolume: unimplemented,
  verifyBackup: unimplemented,
  rebuildCatalog: unimplemented,
  getCoordinatorStatus: unimplemented,
  importBackup: unimplemented,
  exportBackup: (req, ctx) => exportFake(req, ctx),
  failbackVolume: unimplemented,
  updatePolicy: unimplemented,
  getPolicy: unimplemented,
  listPolicies: unimplemented,
  deletePolicy: unimplemented,
  pausePolicy: unimplemented,
  resumePolicy: unimplemented,
  runPolicyNow: unimplemented,
  getVolumeProtection: unimplemented,
  listVolumeProtection: unimplemented,
  async createBackup(req, ctx) {
    auth(ctx);
    created = req;
    const id = req.idempotencyKey === "fail" ? "job-2" : req.idempotencyKey === "cancel" ? "job-3" : "job-1";
    return job(JobState.JOB_STATE_QUEUED, { id, volume: req.volume });
  },
  async getBackup(req, ctx) {
    auth(ctx);
    if (req.backupId !== ID) throw new ServerError(Status.NOT_FOUND, `backup ${req.backupId} does not exist`);
    return backup;
  },
  async listBackups(req, ctx) {
    auth(ctx);
    const page = Number(req.pageToken || "0");
    return { backups: [{ ...backup, id: `b-${page}` }], nextPageToken: page < 2 ? String(page + 1) : "" };
  },
  async getJob(req, ctx) {
    auth(ctx);
    if (req.jobId === "slow") await sleep(3000, undefined, { signal: ctx.signal }).catch(() => {});
    if (req.jobId === "db-down") {
      throw new ServerError(
        Status.UNAVAILABLE,
        "the catalog database at 127.0.0.1:5432 did not answer: connect ECONNREFUSED 127.0.0.1:5432",
      );
    }
    return job(JobState.JOB_STATE_RUNNING, { id: req.jobId });
  },
  async *watchJob(req, ctx) {
    auth(ctx);
    const final = outcomes[req.jobId];
    if (final === undefined) throw new ServerError(Status.NOT_FOUND, `job ${req.jobId} does not exist`);
    yield { job: job(JobState.JOB_STATE_QUEUED, { id: req.jobId, waitingReason: "no free slot" }) };
    for (const done of [0, 1, 2]) {
      yield {
        job: job(JobState.JOB_STATE_RUNNING, {
          id: req.jobId,
          progress: { phase: "transfer", bytesDone: done * 1024 ** 2, bytesTotal: 4 * 1024 ** 2 },
        }),
      };
    }
    yield {
      job: job(final, {
        id: req.jobId,
        ...(final === JobState.JOB_STATE_FAILED ? { errorCode: "DATA_LOSS", errorMessage: "bad chunk" } : {}),
        ...(final === JobState.JOB_STATE_SUCCEEDED ? { backup } : {}),
      }),
    };
  },
  async exportBackupRecord(req, ctx) {
    auth(ctx);
    return { version: 1, backup: { ...backup, id: req.backupId } };
  },
  async importBackupRecord(req, ctx) {
    auth(ctx);
    if (req.record?.backup?.id === ID) throw new ServerError(Status.ALREADY_EXISTS, `backup ${ID} is known`);
    return req.record?.backup ?? {};
  },
  restoreBackup: unimplemented,
  failoverVolume: unimplemented,
  deleteBackup: unimplemented,
  listBackupSnapshots: unimplemented,
  async listJobs(req, ctx) {
    auth(ctx);
    return { jobs: [job(JobState.JOB_STATE_SUCCEEDED, { id: `kind-${req.kind}`, kind: req.kind })], nextPageToken: "" };
  },
  cancelJob: unimplemented,
  listAgents: unimplemented,
  async forgetAgent(req, ctx) {
    auth(ctx);
    if (req.agentId !== "agent-old")
      throw new ServerError(Status.NOT_FOUND, `no agent ${req.agentId} of cluster ${req.cluster} is known`);
    return { agent: { agentId: req.agentId, clusterName: req.cluster, connected: false } as AgentStatus };
  },
  checkCluster: unimplemented,
};

let server: Server;
let address = "";
let dir = "";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string> = { RBDBACKUP_TOKEN: TOKEN }): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { PATH: process.env.PATH ?? "", RBDBACKUP_COORDINATOR: address, ...env }, timeout: 20_000 },
      (err, stdout, stderr) => {
        const code = err ? ((err as { code?: unknown }).code as number) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe("rbdbackup CLI against a fake coordinator", () => {
  before(async () => {
    server = createServer();
    server.add(BackupServiceDefinition, impl);
    const port = await server.listen("127.0.0.1:0");
    address = `127.0.0.1:${port}`;
    dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-cli-"));
  });

  after(async () => {
    server.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it("backup show: a key: value block, the token sent as bearer", async () => {
    const r = await cli(["backup", "show", ID, "--insecure"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^id: +${ID}$`, "m"));
    assert.match(r.stdout, /^size: +10\.0 GiB$/m);
    assert.equal(r.stderr, "");
  });

  it("with the deployment's CA the server must be a coordinator: one presenting an agent's certificate is refused", async () => {
    const serve = async (name: string) => {
      const t = tlsFiles(labTls(name), "test server");
      const s = createServer();
      s.add(BackupServiceDefinition, impl);
      const port = await s.listen(
        "127.0.0.1:0",
        ServerCredentials.createSsl(t.ca, [{ private_key: t.key, cert_chain: t.cert }], true),
      );
      return { s, at: `127.0.0.1:${port}` };
    };
    const client = labTls("test-client");
    const env = {
      RBDBACKUP_TOKEN: TOKEN,
      RBDBACKUP_TLS_CA: client.ca as string,
      RBDBACKUP_TLS_CERT: client.cert as string,
      RBDBACKUP_TLS_KEY: client.key as string,
    };
    for (const [name, ok] of [
      ["agent-site-b", false],
      ["coordinator", true],
    ] as const) {
      const { s, at } = await serve(name);
      try {
        const r = await cli(["backup", "show", ID], { ...env, RBDBACKUP_COORDINATOR: at });
        if (ok) assert.equal(r.code, 0, r.stderr);
        else {
          assert.notEqual(r.code, 0, r.stdout);
          assert.match(r.stderr, /not a coordinator/, name);
        }
      } finally {
        s.forceShutdown();
      }
    }
  });

  it("--json: the API's JSON and nothing else", async () => {
    const r = await cli(["--json", "backup", "show", ID, "--insecure"]);
    assert.equal(r.code, 0, r.stderr);
    const b = JSON.parse(r.stdout);
    assert.equal(b.id, ID);
    assert.equal(b.status, "BACKUP_STATUS_AVAILABLE");
  });

  it("NOT_FOUND: exit code 4 and the status on stderr", async () => {
    const r = await cli(["backup", "show", "nope", "--insecure"]);
    assert.equal(r.code, 4);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr, "rbdbackup: NOT_FOUND: backup nope does not exist\n");
  });

  it("no token: exit code 5", async () => {
    const r = await cli(["backup", "show", ID, "--insecure"], {});
    assert.equal(r.code, 5);
    assert.match(r.stderr, /^rbdbackup: UNAUTHENTICATED: /);
  });

  it("--token-file", async () => {
    const file = path.join(dir, "token");
    writeFileSync(file, `${TOKEN}\n`);
    const r = await cli(["backup", "show", ID, "--insecure", "--token-file", file], {});
    assert.equal(r.code, 0, r.stderr);
    const missing = await cli(["backup", "show", ID, "--insecure", "--token-file", path.join(dir, "none")], {});
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read the --token-file/);
    // A comment line above the token: refused as a usage error that never shows the token.
    const commented = path.join(dir, "token-commented");
    writeFileSync(commented, `# ops token\n${TOKEN}\n`);
    const bad = await cli(["backup", "show", ID, "--insecure", "--token-file", commented], {});
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /a token is one line of printable characters/);
    assert.ok(!bad.stderr.includes(TOKEN), "the token is not echoed");
    assert.ok(!bad.stderr.includes("    at "), "no stack trace");
  });

  it("Ctrl-C during backup export: one line, exit code 130, nothing left and an existing --out FILE as it was", async () => {
    let streaming: () => void = () => {};
    const started = new Promise<void>((resolve) => {
      streaming = resolve;
    });
    exportFake = async function* (_req: unknown, ctx: CallContext) {
      yield { jobId: "job-x", data: Buffer.alloc(1024, 7) };
      streaming();
      // Streams on until the caller goes away (no more data: the fake's job is "slow").
      await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
    } as unknown as BackupServiceImplementation["exportBackup"];
    try {
      const out = path.join(dir, "partial.diff");
      writeFileSync(out, "the user's own file");
      const p = spawn(process.execPath, [CLI, "backup", "export", ID, "--out", out, "--insecure"], {
        env: { PATH: process.env.PATH ?? "", RBDBACKUP_COORDINATOR: address },
      });
      let stderr = "";
      p.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
      });
      const exited = new Promise<number | null>((resolve) => p.on("exit", (code) => resolve(code)));
      // Streaming, or the CLI gave up first (then its exit code and stderr say why).
      const first = await Promise.race([started.then(() => "streaming" as const), exited, sleep(15_000)]);
      assert.equal(first, "streaming", stderr);
      p.kill("SIGINT");
      const code = await Promise.race([exited, sleep(15_000).then(() => "timeout" as const)]);
      if (code === "timeout") p.kill("SIGKILL");
      assert.equal(code, 130, stderr);
      assert.match(stderr, /^rbdbackup: interrupted: the export stopped \(.*partial\.diff not written\)/);
      assert.ok(!stderr.includes("    at "), "no stack trace");
      assert.equal(readFileSync(out, "utf8"), "the user's own file", "an existing FILE is left as it was");
      assert.deepEqual(
        readdirSync(dir).filter((n) => n.endsWith(".partial")),
        [],
        "the partial export is removed",
      );
      rmSync(out);
    } finally {
      exportFake = refuseExport;
    }
  });

  it("backup export --out over an existing FILE: refused or failed, the FILE stays as it was; done, it is replaced", async () => {
    const out = path.join(dir, "existing.diff");
    writeFileSync(out, "the user's own file");
    const bad = await cli(["backup", "export", ID, "--out", out, "--insecure", "--timeout", "0"]);
    assert.equal(bad.code, 2, bad.stderr);
    const refused = await cli(["backup", "export", ID, "--out", out, "--insecure"]); // the fake refuses
    assert.notEqual(refused.code, 0, refused.stderr);
    assert.equal(readFileSync(out, "utf8"), "the user's own file", "a failed export leaves it alone");
    exportFake = async function* () {
      yield { jobId: "job-x", data: Buffer.from("rbd diff v1\n") };
      yield { jobId: "", data: Buffer.from("e") };
    } as unknown as BackupServiceImplementation["exportBackup"];
    try {
      const ok = await cli(["backup", "export", ID, "--out", out, "--insecure"]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(readFileSync(out, "utf8"), "rbd diff v1\ne");
    } finally {
      exportFake = refuseExport;
    }
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.endsWith(".partial")),
      [],
    );
    rmSync(out);
  });

  it("list --all follows the page tokens; --json is one document", async () => {
    const r = await cli(["backup", "list", "--all", "--json", "--insecure"]);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.deepEqual(
      doc.backups.map((b: { id: string }) => b.id),
      ["b-0", "b-1", "b-2"],
    );
    assert.equal(doc.nextPageToken, "");
    const one = await cli(["backup", "list", "--insecure"]);
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stdout, /^ID +VOLUME +LOCATION +STATUS/);
    assert.match(one.stdout, /^b-0 +site-a\/volumes\/vol-1 +site-b\/backups +available +full +10\.0 GiB +3\.0 GiB/m);
    assert.match(one.stderr, /more backups: --page-token 1/);
  });

  it("backup create: the request from the flags", async () => {
    const r = await cli([
      "backup",
      "create",
      "--insecure",
      "--volume",
      "site-a/volumes/ns1/vol-1",
      "--to",
      "site-b/backups",
      "--mode",
      "full",
      "--volume-id",
      "cinder-1",
      "--meta",
      "a=1",
      "--meta",
      "b=x=y",
      "--max-snapshots",
      "3",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^id: +job-1$/m);
    assert.match(r.stdout, /^state: +queued$/m);
    assert.deepEqual(created, {
      volume: { cluster: "site-a", pool: "volumes", namespace: "ns1", image: "vol-1" },
      location: { cluster: "site-b", pool: "backups", namespace: "" },
      mode: BackupMode.BACKUP_MODE_FULL,
      volumeId: "cinder-1",
      volumeMetadata: { a: "1", b: "x=y" },
      idempotencyKey: created?.idempotencyKey,
      maxSnapshots: 3,
      transfer: undefined,
    });
    assert.match(created?.idempotencyKey ?? "", /^cli-[0-9a-f-]{36}$/, "none given: one made up for the call");
  });

  it("usage errors: exit code 2 before any call", async () => {
    for (const args of [
      ["backup", "create", "--volume", "site-a/vol-1", "--to", "site-b"],
      ["backup", "create", "--to", "site-b"],
      ["backup", "create", "--volume", "a/b/c", "--to", "b", "--mode", "fast"],
      ["backup", "list", "--limit", "0"],
      ["backup", "show"],
      ["backup", "frobnicate"],
      ["backup", "show", ID, "--bogus"],
      ...["yesterday", "1", "2026-02-30T00:00:00Z", "2026-12-01T03:00:00"].map((t) => [
        "backup",
        "import",
        "--volume",
        "a/b/c",
        "--location",
        "b",
        "--taken-at",
        t,
        "--in",
        "/dev/null",
      ]),
      ["nonsense"],
    ]) {
      const r = await cli([...args, "--insecure"]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /^rbdbackup: /, args.join(" "));
      assert.equal(r.stdout, "");
    }
  });

  it("--wait: progress lines off a terminal, the summary, exit code by outcome", async () => {
    const base = ["backup", "create", "--volume", "a/b/c", "--to", "b", "--wait", "--insecure"];
    const ok = await cli(base);
    assert.equal(ok.code, 0, ok.stderr);
    const lines = ok.stderr.trim().split("\n");
    assert.deepEqual(
      lines.map((l) => l.replace(/^\S+ job job-1 /, "")),
      ["queued", "running transfer 0.0%", "succeeded"],
    );
    assert.match(ok.stdout, /^job: +job-1$/m);
    assert.match(ok.stdout, /^state: +succeeded$/m);
    assert.match(ok.stdout, /^backup size: +10\.0 GiB$/m);

    const failed = await cli([...base, "--idempotency-key", "fail"]);
    assert.equal(failed.code, 1);
    assert.match(failed.stdout, /^error: +DATA_LOSS: bad chunk$/m);
    const cancelled = await cli([...base, "--idempotency-key", "cancel"]);
    assert.equal(cancelled.code, 3);
  });

  it("job list --kind: each kind the API has, export and import included, is asked for by name", async () => {
    for (const [name, kind] of [
      ["backup", JobKind.JOB_KIND_BACKUP],
      ["export", JobKind.JOB_KIND_EXPORT],
      ["import", JobKind.JOB_KIND_IMPORT],
    ] as const) {
      const r = await cli(["job", "list", "--kind", name, "--insecure", "--json"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`"kind-${kind}"`));
    }
    const bad = await cli(["job", "list", "--kind", "exports", "--insecure"]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /export/);
  });

  it("job watch --json: one JobEvent per line, nothing else", async () => {
    const r = await cli(["job", "watch", "job-1", "--json", "--insecure"]);
    assert.equal(r.code, 0, r.stderr);
    const events = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.equal(events.length, 5);
    assert.equal(events[0].job.state, "JOB_STATE_QUEUED");
    assert.equal(events[4].job.state, "JOB_STATE_SUCCEEDED");
    assert.equal(r.stderr, "");
    const missing = await cli(["job", "watch", "job-9", "--insecure"]);
    assert.equal(missing.code, 4);
  });

  it("--timeout: DEADLINE_EXCEEDED, exit code 6", async () => {
    const r = await cli(["job", "show", "slow", "--timeout", "0.3", "--insecure"]);
    assert.equal(r.code, 6, r.stderr);
    assert.match(r.stderr, /^rbdbackup: DEADLINE_EXCEEDED: no answer from the coordinator/);
  });

  it("an unreachable coordinator: UNAVAILABLE, exit code 6", async () => {
    const r = await cli(["backup", "show", ID, "--insecure", "--coordinator", "127.0.0.1:1"]);
    assert.equal(r.code, 6);
    assert.match(r.stderr, /^rbdbackup: UNAVAILABLE: /);
    assert.match(r.stderr, /no coordinator answered: check the address \(--coordinator, or RBDBACKUP_COORDINATOR\)/);
    assert.doesNotMatch(r.stderr, /may have been acted on/, "a coordinator never reached acted on nothing");
  });

  it("a coordinator that answered UNAVAILABLE naming a refused connection of its own was reached: no 'no coordinator answered'", async () => {
    const r = await cli(["job", "show", "db-down", "--insecure"]);
    assert.equal(r.code, 6, r.stderr);
    assert.match(r.stderr, /^rbdbackup: UNAVAILABLE: the catalog database/);
    assert.doesNotMatch(r.stderr, /no coordinator answered/);
  });

  it("a certificate and key that are no pair, a file that is not PEM, an expired certificate: usage errors naming the files, no stack", async () => {
    const a = labTls("test-client");
    const b = labTls("coordinator");
    const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-cli-certs-"));
    try {
      const expired = path.join(dir, "expired.pem");
      const expiredKey = path.join(dir, "expired.key");
      // Valid until a day before it was made (openssl 3.0 has no -not_after).
      const csr = path.join(dir, "expired.csr");
      execFileSync(
        "openssl",
        [
          "req",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:prime256v1",
          "-nodes",
          "-keyout",
          expiredKey,
          "-out",
          csr,
          "-subj",
          "/CN=old",
        ],
        { stdio: "ignore" },
      );
      execFileSync("openssl", ["x509", "-req", "-in", csr, "-signkey", expiredKey, "-days", "-1", "-out", expired], {
        stdio: "ignore",
      });
      for (const [cert, key, want] of [
        [a.cert, b.key, /are not a usable CA, certificate and its key: .*key values mismatch/],
        [a.key, a.key, /is not a PEM certificate/],
        [expired, expiredKey, /expired\.pem expired on .* GMT: renew it/],
      ] as const) {
        const r = await cli([
          "backup",
          "show",
          ID,
          "--ca",
          a.ca as string,
          "--cert",
          cert as string,
          "--key",
          key as string,
        ]);
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, want);
        assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("global flags before the command land before a '--' (after it every word is an operand)", async () => {
    const r = await cli(["--json", "backup", "show", "--insecure", "--", ID]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).id, ID);
  });

  it("--timeout below 0.1 s is a usage error (it rounded to a deadline of 0 ms)", async () => {
    const r = await cli(["backup", "show", ID, "--insecure", "--timeout", "0.0001"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--timeout must be a number of seconds from 0\.1 to 86400/);
  });

  it("record export, then import (ALREADY_EXISTS: exit code 7)", async () => {
    const file = path.join(dir, "record.json");
    const exp = await cli(["record", "export", ID, "--out", file, "--insecure"]);
    assert.equal(exp.code, 0, exp.stderr);
    const record = JSON.parse(readFileSync(file, "utf8"));
    assert.equal(record.version, 1);
    assert.equal(record.backup.id, ID);
    const imp = await cli(["record", "import", file, "--insecure"]);
    assert.equal(imp.code, 7);
    assert.equal(imp.stderr, `rbdbackup: ALREADY_EXISTS: backup ${ID} is known\n`);
  });

  it("agent forget CLUSTER/AGENT_ID: the request, its answer; a malformed spec is a usage error before any call", async () => {
    const ok = await cli(["agent", "forget", "site-a/agent-old", "--insecure"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, "forgot agent agent-old of cluster site-a\n");
    const json = await cli(["agent", "forget", "site-a/agent-old", "--insecure", "--json"]);
    assert.equal(JSON.parse(json.stdout).agent.clusterName, "site-a");
    const missing = await cli(["agent", "forget", "site-a/nobody", "--insecure"]);
    assert.equal(missing.code, 4);
    assert.match(missing.stderr, /NOT_FOUND: no agent nobody of cluster site-a is known/);
    for (const bad of ["agent-old", "site-a/", "site-a/x/y"]) {
      const r = await cli(["agent", "forget", bad, "--insecure"]);
      assert.equal(r.code, 2, bad);
      assert.match(r.stderr, /is not CLUSTER\/AGENT_ID/, bad);
    }
  });

  it("help: usage with the exit codes", async () => {
    const r = await cli(["help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /exit codes:/);
    assert.match(r.stdout, /backup create --volume CLUSTER\/POOL\[\/NAMESPACE\]\/IMAGE/);
  });
});

describe("backup import --taken-at", () => {
  it("an RFC 3339 time with its zone, on a day that exists; anything else is a usage error", () => {
    assert.equal(rfc3339("2026-12-01T03:00:00Z", "--taken-at").toISOString(), "2026-12-01T03:00:00.000Z");
    assert.equal(rfc3339("2026-12-01T03:00:00.5+02:00", "--taken-at").toISOString(), "2026-12-01T01:00:00.500Z");
    for (const bad of ["1", "yesterday", "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z", "2026-12-01T03:00:00"])
      assert.throws(() => rfc3339(bad, "--taken-at"), /--taken-at ".*" is not an RFC 3339 time with its zone/, bad);
  });
});
