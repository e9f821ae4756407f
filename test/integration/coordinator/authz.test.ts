/**
 * Who may call what on the coordinator, against a real coordinator process with the lab's TLS (no Ceph:
 * the coordinator runs without agents; its catalog is seeded with one AVAILABLE backup). Table-driven:
 * every credential kind × every BackupService method (and the agent Session) → allowed (any status but
 * UNAUTHENTICATED / PERMISSION_DENIED) or the exact status; the catalog is the same after the table.
 * Then the attacks of issue 12 on the coordinator: a session as another agent, cluster or fsid, a second
 * session for a live agent (attack 2); an agent certificate deleting a backup (attack 5). Then the audit
 * log and refusal metric, and token rotation by SIGHUP.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ChannelCredentials } from "@grpc/grpc-js";
import { ClientError, createChannel, createClient, Metadata, Status } from "nice-grpc";
import type { Role } from "../../../src/common/identity";
import { type TlsConfig, tlsChannelOptions } from "../../../src/common/tls";
import { METHOD_ROLES } from "../../../src/coordinator/authz";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import { RestoreMode, VerifyMode } from "../../../src/gen/rbdbackup/v1/agent";
import {
  Backup,
  type BackupServiceClient,
  BackupStatus,
  JobKind,
  JobState,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import { Policy } from "../../../src/gen/rbdbackup/v1/policy";
import {
  CoordinatorAgentServiceDefinition,
  type CoordinatorMessage,
  type Lease,
  type Register,
} from "../../../src/gen/rbdbackup/v1/session";
import { labTls, repoRoot } from "../../../src/lab/agent-process";
import { apiClient, type CoordinatorProcess, tokensFileText } from "../../../src/lab/coordinator-process";
import { scrape, startCoordinator } from "../../helpers/coordinator";
import { tempDir, waitFor } from "../../helpers/wait";

const TOKENS: Record<Role, string> = {
  reader: `reader-${randomUUID()}`,
  operator: `operator-${randomUUID()}`,
  admin: `admin-${randomUUID()}`,
};
const FSID = "0a0a0a0a-0000-4000-8000-00000000000a";
const OTHER_FSID = "0b0b0b0b-0000-4000-8000-00000000000b";
const SEEDED = randomUUID();

/** A credential kind: TLS (CA + maybe a certificate) and maybe a token; what it may do. */
interface Cred {
  name: string;
  tls: TlsConfig;
  token?: string;
  /** API role (null: none — PERMISSION_DENIED), or "unauthenticated" (no credential the CA vouches for). */
  role: Role | null | "unauthenticated";
  /** What opening an agent session gives. */
  session: "registered" | Status;
}

type Outcome = "allowed" | Status;

async function outcome(p: Promise<unknown>): Promise<{ code: Status | "ok"; details: string }> {
  try {
    await p;
    return { code: "ok", details: "" };
  } catch (e) {
    if (e instanceof ClientError) return { code: e.code, details: e.details };
    throw e;
  }
}

const RANK: Role[] = ["reader", "operator", "admin"];
const vol = (image: string) => ({ cluster: "site-a", pool: "rbd", namespace: "", image });
const loc = { cluster: "site-b", pool: "backups", namespace: "" };

/**
 * Each method: the role it needs and a request. `refused` = the caller is expected to be refused: the
 * request then names the seeded backup (so a bypass would change it); allowed callers name nothing real.
 */
const METHODS: Record<
  string,
  {
    role: Role;
    /** The role it needs of a caller the scopes file does not confine (none here), when higher. */
    unscopedNeeds?: Role;
    call: (c: BackupServiceClient, refused: boolean) => Promise<unknown>;
  }
> = {
  GetBackup: { role: "reader", call: (c, r) => c.getBackup({ backupId: r ? SEEDED : randomUUID() }) },
  ListBackups: {
    role: "reader",
    call: (c) =>
      c.listBackups({
        cluster: "",
        pool: "",
        image: "",
        volumeId: "",
        locationCluster: "",
        status: 0,
        pageSize: 1,
        pageToken: "",
      }),
  },
  ListBackupSnapshots: {
    role: "reader",
    call: (c) => c.listBackupSnapshots({ volume: { ...vol("prod"), cluster: "nowhere" } }),
  },
  GetJob: { role: "reader", call: (c) => c.getJob({ jobId: randomUUID() }) },
  ListJobs: {
    role: "reader",
    call: (c) => c.listJobs({ state: 0, kind: 0, backupId: "", pageSize: 1, pageToken: "" }),
  },
  WatchJob: {
    role: "reader",
    call: async (c) => {
      for await (const _ of c.watchJob({ jobId: randomUUID() })) break;
    },
  },
  ListAgents: { role: "reader", call: (c) => c.listAgents({}) },
  // Refused: a real agent (it would be gone); allowed (admin): one nobody knows, NOT_FOUND, nothing changed.
  ForgetAgent: {
    role: "admin",
    call: (c, r) =>
      c.forgetAgent(r ? { cluster: "site-a", agentId: "agent-site-a" } : { cluster: "site-a", agentId: "nobody" }),
  },
  CheckCluster: { role: "reader", call: (c) => c.checkCluster({ cluster: "nowhere", backupPool: "" }) },
  ExportBackupRecord: { role: "reader", call: (c) => c.exportBackupRecord({ backupId: SEEDED }) },
  CreateBackup: {
    role: "operator",
    call: (c, r) =>
      c.createBackup({
        volume: r ? vol("prod") : { ...vol("prod"), cluster: "nowhere" },
        location: loc,
        mode: 0,
        volumeId: "",
        volumeMetadata: {},
        idempotencyKey: "",
        maxSnapshots: 0,
      }),
  },
  RestoreBackup: {
    role: "operator",
    call: (c, r) =>
      c.restoreBackup({
        backupId: r ? SEEDED : randomUUID(),
        target: vol("prod"),
        mode: RestoreMode.RESTORE_MODE_ORIGINAL,
        idempotencyKey: "",
      }),
  },
  DeleteBackup: {
    role: "operator",
    call: (c, r) => c.deleteBackup({ backupId: r ? SEEDED : randomUUID(), idempotencyKey: "" }),
  },
  CancelJob: { role: "operator", call: (c) => c.cancelJob({ jobId: randomUUID() }) },
  // A refused caller names the seeded backup (a bypass would queue a VERIFY job of it).
  VerifyBackup: {
    role: "operator",
    call: (c, r) =>
      c.verifyBackup({
        backupId: r ? SEEDED : randomUUID(),
        mode: VerifyMode.VERIFY_MODE_METADATA,
        samplePercent: 0,
        idempotencyKey: "",
      }),
  },
  ImportBackupRecord: {
    role: "admin",
    call: (c, r) =>
      c.importBackupRecord({
        record: r
          ? { version: 1, backup: { ...seededBackup(), id: randomUUID() } }
          : { version: 99, backup: undefined },
      }),
  },
  // Protection policies: a refused caller names the seeded policy (a bypass would change or remove it).
  GetPolicy: { role: "reader", call: (c, r) => c.getPolicy({ name: r ? SEEDED_POLICY : "no-such-policy" }) },
  ListPolicies: { role: "reader", call: (c) => c.listPolicies({ pageSize: 1, pageToken: "" }) },
  GetVolumeProtection: { role: "reader", call: (c) => c.getVolumeProtection({ volume: vol("prod"), policy: "" }) },
  ListVolumeProtection: {
    role: "reader",
    call: (c) => c.listVolumeProtection({ policy: "", state: 0, cluster: "", pageSize: 1, pageToken: "" }),
  },
  CreatePolicy: {
    role: "operator",
    call: (c, r) =>
      c.createPolicy({
        policy: {
          ...seededPolicy(),
          name: r ? "intruder" : "nowhere",
          destination: { cluster: "nowhere", pool: "", namespace: "" },
        },
      }),
  },
  UpdatePolicy: {
    role: "operator",
    call: (c, r) =>
      c.updatePolicy({
        policy: { ...seededPolicy(), name: r ? SEEDED_POLICY : "no-such-policy", paused: true },
        expectedRevision: 0,
      }),
  },
  DeletePolicy: { role: "operator", call: (c, r) => c.deletePolicy({ name: r ? SEEDED_POLICY : "no-such-policy" }) },
  PausePolicy: { role: "operator", call: (c, r) => c.pausePolicy({ name: r ? SEEDED_POLICY : "no-such-policy" }) },
  ResumePolicy: { role: "operator", call: (c) => c.resumePolicy({ name: "no-such-policy" }) },
  RunPolicyNow: { role: "operator", call: (c, r) => c.runPolicyNow({ name: r ? SEEDED_POLICY : "no-such-policy" }) },
  FailoverVolume: {
    role: "operator",
    call: (c, r) =>
      c.failoverVolume({
        volume: vol("prod"),
        location: r ? loc : { ...loc, cluster: "nowhere" },
        target: { ...vol("prod-failover"), cluster: "site-b" },
        flatten: false,
        idempotencyKey: "",
        reason: "",
      }),
  },
  FailbackVolume: {
    role: "operator",
    call: (c, r) =>
      c.failbackVolume({
        volume: vol("prod"),
        source: { ...vol("prod-failover"), cluster: r ? "site-b" : "nowhere" },
        backupId: r ? SEEDED : randomUUID(),
        idempotencyKey: "",
      }),
  },
  // Interchange: a refused caller names the seeded backup / volume (a bypass would queue a job or make a
  // backup); an allowed one names nothing real (NOT_FOUND).
  ExportBackup: {
    role: "operator",
    call: async (c, r) => {
      for await (const _ of c.exportBackup({ backupId: r ? SEEDED : randomUUID(), fromBackupId: "", format: 0 })) break;
    },
  },
  // METHOD_ROLES says operator: an operator whose scopes confine it may import (scopes.test.ts); this
  // coordinator has no scopes file, so every operator is unscoped and needs admin for it.
  ImportBackup: {
    role: "operator",
    unscopedNeeds: "admin",
    call: (c, r) =>
      c.importBackup(
        (async function* () {
          yield {
            body: {
              $case: "header" as const,
              value: {
                volume: vol("prod"),
                location: r ? loc : { ...loc, cluster: "nowhere" },
                volumeId: "",
                volumeMetadata: {},
                parentBackupId: "",
                idempotencyKey: "",
                format: 0,
              },
            },
          };
          yield { body: { $case: "data" as const, value: Buffer.from("rbd diff v1\n") } };
        })(),
      ),
  },
  FlattenVolume: {
    role: "operator",
    call: (c, r) =>
      c.flattenVolume({
        volume: { ...vol(r ? "prod-clone" : "no-such-clone"), cluster: "site-b" },
        backupId: r ? SEEDED : "",
        idempotencyKey: "",
      }),
  },
  // A refused caller asks for a real rebuild of the backup cluster (a bypass would write the catalog);
  // an allowed one names a cluster no agent serves.
  RebuildCatalog: {
    role: "admin",
    call: (c, r) => c.rebuildCatalog({ cluster: r ? "site-b" : "nowhere", pools: [], dryRun: false }),
  },
  GetCoordinatorStatus: { role: "reader", call: (c) => c.getCoordinatorStatus({}) },
};

const SEEDED_POLICY = "seeded";

function seededPolicy(): Policy {
  return Policy.fromPartial({
    name: SEEDED_POLICY,
    selector: { volumes: [vol("prod")] },
    destination: loc,
    schedule: { intervalSeconds: 3600 },
    retention: { keepLast: 3 },
    revision: 1,
    createdAt: new Date(),
    updatedAt: new Date(),
  });
}

function seededBackup(): Backup {
  return Backup.fromPartial({
    id: SEEDED,
    volume: vol("prod"),
    location: loc,
    locationFsid: OTHER_FSID,
    status: BackupStatus.BACKUP_STATUS_AVAILABLE,
    baseImage: `prod.backup.${SEEDED}`,
    snapshot: `backup.${SEEDED}.snap.1`,
    sizeBytes: 1 << 20,
    createdAt: new Date(),
    completedAt: new Date(),
  });
}

function expected(cred: Cred, needed: Role): Outcome {
  if (cred.role === "unauthenticated") return Status.UNAUTHENTICATED;
  if (cred.role === null) return Status.PERMISSION_DENIED;
  return RANK.indexOf(cred.role) >= RANK.indexOf(needed) ? "allowed" : Status.PERMISSION_DENIED;
}

function register(agentId: string, clusterName: string, clusterFsid = FSID): Register {
  return {
    agentId,
    clusterName,
    clusterFsid,
    version: "0",
    transferAddress: "127.0.0.1:1",
    capacity: 1,
    leases: [],
    librbdVersion: "",
    defaultBackupPool: "backups",
    cephClientAddrs: "",
    features: [],
  };
}

/** An agent session: `first` is "registered" or the status the coordinator ended it with (10 s at most). */
function openSession(
  address: string,
  cred: Pick<Cred, "tls" | "token">,
  reg: Register,
  onMessage: (m: CoordinatorMessage) => void = () => {},
) {
  const ca = readFileSync(cred.tls.ca as string);
  const creds =
    cred.tls.cert && cred.tls.key
      ? ChannelCredentials.createSsl(ca, readFileSync(cred.tls.key), readFileSync(cred.tls.cert))
      : ChannelCredentials.createSsl(ca);
  const ch = createChannel(address, creds, tlsChannelOptions(address, labTls("test-client")));
  const client = createClient(CoordinatorAgentServiceDefinition, ch);
  const stop = new AbortController();
  let end = () => {};
  const ended = new Promise<void>((r) => {
    end = r;
  });
  const messages = (async function* () {
    yield { msg: { $case: "register" as const, value: reg } };
    await ended;
  })();
  // The stream is read to its end in the background (leaving the loop early would cancel the call).
  let settle: (r: { code: "registered" | Status; details: string }) => void = () => {};
  const first = new Promise<{ code: "registered" | Status; details: string }>((r) => {
    settle = r;
  });
  const timer = setTimeout(() => stop.abort(), 10_000);
  void (async () => {
    try {
      for await (const m of client.session(messages, {
        signal: stop.signal,
        ...(cred.token ? { metadata: Metadata({ authorization: `Bearer ${cred.token}` }) } : {}),
      })) {
        onMessage(m);
        if (m.msg?.$case === "registered") {
          clearTimeout(timer);
          settle({ code: "registered", details: "" });
        }
      }
      settle({ code: Status.UNKNOWN, details: "the session ended without Registered" });
    } catch (e) {
      if (stop.signal.aborted) settle({ code: Status.DEADLINE_EXCEEDED, details: "no answer within 10 s" });
      settle(
        e instanceof ClientError ? { code: e.code, details: e.details } : { code: Status.UNKNOWN, details: `${e}` },
      );
    } finally {
      clearTimeout(timer);
    }
  })();
  const close = () => {
    end();
    stop.abort();
    ch.close();
  };
  return { first, close };
}

async function sessionOutcome(address: string, cred: Pick<Cred, "tls" | "token">, reg: Register) {
  const s = openSession(address, cred, reg);
  try {
    return await s.first;
  } finally {
    s.close();
  }
}

describe("coordinator: who may call what", () => {
  let coord: CoordinatorProcess;
  let admin: BackupServiceClient;
  let auditLog: string;
  const creds: Cred[] = [];
  const channels: Array<{ close(): void }> = [];
  const agentCred = () => creds.find((c) => c.name === "agent-site-a cert") as Cred;

  const client = (cred: Cred): BackupServiceClient => {
    const c = apiClient(coord.address, cred.tls, cred.token);
    channels.push(c.channel);
    return c.client;
  };
  const state = async () => {
    const b = await admin.listBackups({
      cluster: "",
      pool: "",
      image: "",
      volumeId: "",
      locationCluster: "",
      status: 0,
      pageSize: 1000,
      pageToken: "",
    });
    const j = await admin.listJobs({ state: 0, kind: 0, backupId: "", pageSize: 1000, pageToken: "" });
    const p = await admin.listPolicies({ pageSize: 1000, pageToken: "" });
    const a = await admin.listAgents({});
    return JSON.stringify({
      backups: b.backups,
      jobs: j.jobs,
      policies: p.policies,
      agents: a.agents.map((x) => `${x.clusterName}/${x.agentId}`),
    });
  };
  const agentConnected = async (agentId: string) =>
    (await admin.listAgents({})).agents.find((a) => a.agentId === agentId)?.connected ?? false;

  before(async () => {
    const dir = tempDir("rbdbackup-authz-");
    const seed = new SqliteCatalog(path.join(dir, "catalog.sqlite"));
    seed.insertBackup(seededBackup());
    seed.policies.insertPolicy(seededPolicy());
    seed.close();
    auditLog = path.join(dir, "audit.log");
    coord = await startCoordinator({
      dir,
      auditLog,
      tokens: RANK.map((role) => ({ role, token: TOKENS[role] })),
    });
    const own = labTls("test-client");
    const ca = own.ca as string;
    const foreign = tempDir("rbdbackup-foreign-ca-");
    execFileSync(
      path.join(repoRoot, "deploy/tls/gen-certs.sh"),
      [foreign, "intruder=rbdbackup://client/admin/intruder"],
      {
        stdio: "ignore",
      },
    );
    const U = Status.UNAUTHENTICATED;
    const P = Status.PERMISSION_DENIED;
    creds.push(
      { name: "none", tls: { ca }, role: "unauthenticated", session: U },
      {
        name: "foreign CA (admin URI)",
        tls: { ca, cert: path.join(foreign, "intruder.pem"), key: path.join(foreign, "intruder.key") },
        role: "unauthenticated",
        session: U,
      },
      { name: "wrong token", tls: { ca }, token: `admin-${randomUUID()}`, role: "unauthenticated", session: U },
      { name: "no-identity cert", tls: labTls("no-identity"), role: null, session: P },
      ...RANK.map((role) => ({ name: `${role} token`, tls: { ca }, token: TOKENS[role], role, session: U })),
      { name: "reader cert", tls: labTls("reader"), role: "reader", session: P },
      { name: "operator cert", tls: labTls("operator"), role: "operator", session: P },
      { name: "admin cert (test-client)", tls: own, role: "admin", session: P },
      { name: "agent-site-a cert", tls: labTls("agent-site-a"), role: null, session: "registered" },
      { name: "coordinator cert", tls: labTls("coordinator"), role: null, session: P },
    );
    admin = coord.client;
  });
  after(async () => {
    for (const c of channels) c.close();
    await coord?.stop();
  });

  it("every credential kind × every BackupService method: allowed or the exact status; nothing changed", async () => {
    assert.deepEqual(Object.keys(METHODS).sort(), Object.keys(METHOD_ROLES).sort(), "the table covers every method");
    for (const [m, { role }] of Object.entries(METHODS)) assert.equal(role, METHOD_ROLES[m], `${m}'s role`);
    const before = await state();
    const problems: string[] = [];
    for (const cred of creds) {
      const c = client(cred);
      for (const [method, m] of Object.entries(METHODS)) {
        const needs = m.unscopedNeeds ?? m.role;
        const want = expected(cred, needs);
        const got = await outcome(m.call(c, want !== "allowed"));
        const line = `${cred.name} × ${method}: expected ${want === "allowed" ? "allowed" : Status[want]}, got ${got.code === "ok" ? "ok" : Status[got.code]} ${got.details}`;
        if (want === "allowed") {
          if (got.code === Status.UNAUTHENTICATED || got.code === Status.PERMISSION_DENIED) problems.push(line);
        } else if (got.code !== want) problems.push(line);
        else if (
          want === Status.PERMISSION_DENIED &&
          cred.role !== null &&
          !got.details.includes(
            `needs role ${RANK.indexOf(cred.role as Role) >= RANK.indexOf(m.role) ? needs : m.role}`,
          )
        )
          problems.push(`${line} (the message must name the role needed)`);
      }
    }
    assert.deepEqual(problems, []);
    assert.equal(await state(), before, "no refused call changed the catalog");
    const b = await admin.getBackup({ backupId: SEEDED });
    assert.equal(b.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
  });

  it("every credential kind × CoordinatorAgentService.Session: only the agent certificate registers", async () => {
    const problems: string[] = [];
    for (const cred of creds) {
      const got = await sessionOutcome(coord.address, cred, register("agent-site-a", "site-a"));
      if (got.code !== cred.session)
        problems.push(
          `${cred.name}: expected ${typeof cred.session === "string" ? cred.session : Status[cred.session]}, got ${typeof got.code === "string" ? got.code : Status[got.code]} ${got.details}`,
        );
    }
    assert.deepEqual(problems, []);
    await waitFor(async () => !(await agentConnected("agent-site-a")), {
      what: "the test session to end",
      timeoutMs: 20_000,
    });
  });

  it("attack 2: a session as another agent, cluster or fsid, or a second one for a live agent, is refused", async () => {
    const real = openSession(coord.address, agentCred(), register("agent-site-a", "site-a"));
    try {
      assert.equal((await real.first).code, "registered");
      const claims: Array<[Register, Status, RegExp]> = [
        [
          register("agent-site-b", "site-b"),
          Status.PERMISSION_DENIED,
          /agent-site-a of cluster site-a.*claims agent agent-site-b of cluster site-b/,
        ],
        [register("agent-site-a", "site-b"), Status.PERMISSION_DENIED, /claims agent agent-site-a of cluster site-b/],
        [register("rogue", "site-a"), Status.PERMISSION_DENIED, /claims agent rogue of cluster site-a/],
        [
          register("agent-site-a", "site-a", OTHER_FSID),
          Status.FAILED_PRECONDITION,
          new RegExp(`pinned to fsid ${FSID}.*${OTHER_FSID}`),
        ],
        [
          register("agent-site-a", "site-a"),
          Status.ALREADY_EXISTS,
          /agent agent-site-a already has a live session; retry after it ends/,
        ],
      ];
      for (const [reg, code, msg] of claims) {
        const got = await sessionOutcome(coord.address, agentCred(), reg);
        assert.equal(got.code, code, `${reg.agentId}/${reg.clusterName}/${reg.clusterFsid}: ${got.details}`);
        assert.match(got.details, msg);
      }
      // The real agent's session is untouched: still connected, as it registered.
      const a = (await admin.listAgents({})).agents.filter(
        (x) => x.clusterName === "site-a" || x.clusterName === "site-b",
      );
      assert.deepEqual(
        a.map((x) => [x.agentId, x.clusterName, x.clusterFsid, x.connected]),
        [["agent-site-a", "site-a", FSID, true]],
      );
    } finally {
      real.close();
    }
    await waitFor(async () => !(await agentConnected("agent-site-a")), {
      what: "the session to end",
      timeoutMs: 20_000,
    });
    // The fsid stays pinned; the agent itself reconnects once its old session ended.
    assert.equal(
      (await sessionOutcome(coord.address, agentCred(), register("agent-site-a", "site-a", OTHER_FSID))).code,
      Status.FAILED_PRECONDITION,
    );
    assert.equal(
      (await sessionOutcome(coord.address, agentCred(), register("agent-site-a", "site-a"))).code,
      "registered",
    );
  });

  it("attack 5: an agent (or coordinator) certificate cannot delete a backup through BackupService", async () => {
    const before = await state();
    for (const name of ["agent-site-a cert", "coordinator cert"]) {
      const c = client(creds.find((x) => x.name === name) as Cred);
      const got = await outcome(c.deleteBackup({ backupId: SEEDED, idempotencyKey: "" }));
      assert.equal(got.code, Status.PERMISSION_DENIED, name);
      assert.match(got.details, /may not use the public API; DeleteBackup needs role operator/);
    }
    assert.equal((await admin.getBackup({ backupId: SEEDED })).status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    const jobs = await admin.listJobs({
      state: JobState.JOB_STATE_UNSPECIFIED,
      kind: 0,
      backupId: SEEDED,
      pageSize: 10,
      pageToken: "",
    });
    assert.equal(jobs.jobs.length, 0, "no delete job was queued");
    assert.equal(await state(), before);
  });

  it("ExportData/ImportData: an agent certificate without the lease is refused (PERMISSION_DENIED, audited)", async () => {
    // agent-site-b holds the EXPORT lease of the seeded backup (kept on site-b); agent-site-a tries its data.
    const leases: Lease[] = [];
    const holder = openSession(
      coord.address,
      { tls: labTls("agent-site-b") },
      register("agent-site-b", "site-b", OTHER_FSID),
      (m) => {
        if (m.msg?.$case === "lease") leases.push(m.msg.value);
      },
    );
    const stop = new AbortController();
    try {
      assert.equal((await holder.first).code, "registered");
      const reading = (async () => {
        for await (const _ of admin.exportBackup(
          { backupId: SEEDED, fromBackupId: "", format: 0 },
          { signal: stop.signal },
        )) {
        }
      })().catch(() => {});
      await waitFor(() => leases.some((l) => l.operation?.$case === "export"), {
        what: "the EXPORT lease",
        timeoutMs: 20_000,
      });
      const lease = leases.find((l) => l.operation?.$case === "export") as Lease;
      const agentA = (() => {
        const t = labTls("agent-site-a");
        const ca = readFileSync(t.ca as string);
        const ch = createChannel(
          coord.address,
          ChannelCredentials.createSsl(ca, readFileSync(t.key as string), readFileSync(t.cert as string)),
          tlsChannelOptions(coord.address, labTls("test-client")),
        );
        channels.push(ch);
        return createClient(CoordinatorAgentServiceDefinition, ch);
      })();
      const exportAs = async (token: string) =>
        outcome(
          agentA.exportData(
            (async function* () {
              yield { jobId: lease.jobId, token, data: Buffer.from("rbd diff v1\n") };
            })(),
          ),
        );
      const importAs = async (token: string) =>
        outcome(
          (async () => {
            for await (const _ of agentA.importData({ jobId: lease.jobId, token })) assert.fail("data relayed");
          })(),
        );
      const e1 = await exportAs(lease.token);
      assert.equal(e1.code, Status.PERMISSION_DENIED, e1.details);
      assert.match(e1.details, /the lease of EXPORT job .* is agent agent-site-b's, not agent agent-site-a's/);
      const e2 = await importAs(lease.token);
      assert.equal(e2.code, Status.PERMISSION_DENIED, e2.details);
      const e3 = await exportAs(randomUUID());
      assert.equal(e3.code, Status.PERMISSION_DENIED, e3.details);
      // A token caller never reaches the handler (agents need a certificate).
      const tokenCaller = createClient(
        CoordinatorAgentServiceDefinition,
        (() => {
          const ch = createChannel(
            coord.address,
            ChannelCredentials.createSsl(readFileSync(labTls("test-client").ca as string)),
            tlsChannelOptions(coord.address, labTls("test-client")),
          );
          channels.push(ch);
          return ch;
        })(),
      );
      const e4 = await outcome(
        tokenCaller.exportData(
          (async function* () {
            yield { jobId: lease.jobId, token: lease.token, data: new Uint8Array(0) };
          })(),
          { metadata: Metadata({ authorization: `Bearer ${TOKENS.admin}` }) },
        ),
      );
      assert.equal(e4.code, Status.UNAUTHENTICATED, e4.details);
      const lines = readFileSync(auditLog, "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Record<string, string>);
      const refusals = lines.filter(
        (l) =>
          l.identity === "rbdbackup://agent/site-a/agent-site-a" &&
          /\/(ExportData|ImportData)$/.test(l.method ?? "") &&
          l.result === "PERMISSION_DENIED" &&
          l.reason === "no_lease" &&
          l.target === `job=${lease.jobId}`,
      );
      assert.equal(refusals.length, 3, "each refusal is audited");
      const metrics = await scrape(coord.metricsAddress);
      assert.match(
        metrics,
        /^rbdbackup_authorization_refusals_total\{service="rbdbackup.v1.CoordinatorAgentService",reason="no_lease"\} 3$/m,
      );
      stop.abort();
      await reading;
      await waitFor(async () => (await admin.getJob({ jobId: lease.jobId })).cancelRequested, {
        what: "the export to be cancelled with its call",
        timeoutMs: 10_000,
      });
    } finally {
      stop.abort();
      holder.close();
    }
    // Its agent gone, the cancelled attempt ends at its lease's expiry: the catalog settles before the next test.
    const job = (
      await admin.listJobs({ state: 0, kind: JobKind.JOB_KIND_EXPORT, backupId: SEEDED, pageSize: 10, pageToken: "" })
    ).jobs[0];
    assert.ok(job, "the EXPORT job");
    await waitFor(async () => (await admin.getJob({ jobId: job.id })).state === JobState.JOB_STATE_CANCELLED, {
      what: "the export job to end CANCELLED",
      timeoutMs: 90_000,
    });
  });

  it("the audit log has refusals, mutating calls and registrations; refusals are counted by reason", async () => {
    const lines = readFileSync(auditLog, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, string>);
    const has = (f: (l: Record<string, string>) => boolean, what: string) => assert.ok(lines.some(f), `audit: ${what}`);
    has(
      (l) =>
        l.identity === "rbdbackup://agent/site-a/agent-site-a" &&
        l.method === "/rbdbackup.v1.BackupService/DeleteBackup" &&
        l.result === "PERMISSION_DENIED" &&
        l.reason === "wrong_kind",
      "the agent's refused delete",
    );
    has(
      (l) =>
        l.identity === "token:operator" &&
        l.method === "/rbdbackup.v1.BackupService/DeleteBackup" &&
        l.result === "NOT_FOUND" &&
        /^backup=[0-9a-f-]{36}$/.test(l.target ?? ""),
      "an operator's delete that ended NOT_FOUND, with its target",
    );
    has((l) => l.identity === "none" && l.result === "UNAUTHENTICATED", "a call without a credential");
    has(
      (l) =>
        (l.method ?? "").endsWith("/Session") &&
        l.result === "OK" &&
        l.target === "agent agent-site-a of cluster site-a",
      "a registration",
    );
    has((l) => (l.method ?? "").endsWith("/Session") && l.result === "ALREADY_EXISTS", "a refused second session");
    for (const l of lines) assert.ok(l.time && l.identity && l.method && l.result, JSON.stringify(l));
    assert.ok(
      !lines.some((l) => l.method === "/rbdbackup.v1.BackupService/ListBackups" && l.result === "OK"),
      "reads are not audited",
    );
    const metrics = await scrape(coord.metricsAddress);
    for (const [service, reason] of [
      ["rbdbackup.v1.BackupService", "wrong_kind"],
      ["rbdbackup.v1.BackupService", "wrong_role"],
      ["rbdbackup.v1.BackupService", "no_identity"],
      ["rbdbackup.v1.BackupService", "bad_token"],
      ["rbdbackup.v1.BackupService", "no_credential"],
      ["rbdbackup.v1.CoordinatorAgentService", "identity_mismatch"],
      ["rbdbackup.v1.CoordinatorAgentService", "fsid_mismatch"],
      ["rbdbackup.v1.CoordinatorAgentService", "duplicate_session"],
    ]) {
      const m = new RegExp(
        `^rbdbackup_authorization_refusals_total\\{service="${service}",reason="${reason}"\\} (\\d+)$`,
        "m",
      ).exec(metrics);
      assert.ok(m && Number(m[1]) > 0, `${service} ${reason} counted`);
    }
  });

  it("tokens rotate on SIGHUP; a bad tokens file keeps the tokens in force", async () => {
    const fresh = `reader-${randomUUID()}`;
    const can = async (token: string) =>
      (
        await outcome(
          client({
            name: "t",
            tls: { ca: labTls("test-client").ca as string },
            token,
            role: null,
            session: 0,
          }).listAgents({}),
        )
      ).code;
    writeFileSync(coord.tokensFile, tokensFileText([{ role: "reader", token: fresh }]));
    coord.proc.kill("SIGHUP");
    await waitFor(async () => (await can(fresh)) === "ok", { what: "the new token to work", timeoutMs: 10_000 });
    assert.equal(await can(TOKENS.reader), Status.UNAUTHENTICATED, "a removed token stops working");
    assert.equal(await can(TOKENS.admin), Status.UNAUTHENTICATED);
    writeFileSync(coord.tokensFile, `${TOKENS.admin}\n`); // a line without a role
    coord.proc.kill("SIGHUP");
    await waitFor(() => coord.logs().includes("API tokens NOT reloaded"), {
      what: "the reload error",
      timeoutMs: 10_000,
    });
    assert.match(coord.logs(), /line 1: expected/);
    assert.equal(await can(fresh), "ok", "the tokens in force stay");
    assert.equal(await can(TOKENS.admin), Status.UNAUTHENTICATED);
  });
});
