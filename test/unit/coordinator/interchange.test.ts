/**
 * EXPORT and IMPORT through the coordinator without Ceph: the real BackupService and the real
 * ExportData/ImportData handlers on one gRPC server, the harness's scheduler (fake clock, kicks run
 * ticks) and fake agent sessions that take the leases; the test plays the agent's data calls. The caller
 * identity the auth interceptor would establish is put in the internal metadata key by the client.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { ChannelCredentials } from "@grpc/grpc-js";
import { type Client, createChannel, createClient, createServer, Metadata } from "nice-grpc";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import { backupService, errorStatus } from "../../../src/coordinator/api/service";
import { auditCalls } from "../../../src/coordinator/api-audit";
import { Audit } from "../../../src/coordinator/audit";
import { CALLER_METADATA_KEY, type Caller } from "../../../src/coordinator/authz";
import { agentDataService, leaseRefusal } from "../../../src/coordinator/interchange/agent-data";
import { BytePipe, MIN_CHARGE } from "../../../src/coordinator/interchange/pipe";
import { Relays } from "../../../src/coordinator/interchange/relays";
import type { CallRequest } from "../../../src/coordinator/sessions";
import {
  BackupServiceDefinition,
  BackupStatus,
  DiffFormat,
  type ImportBackupMessage,
  JobKind,
  JobState,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import { CoordinatorAgentServiceDefinition, type ExportDataMessage } from "../../../src/gen/rbdbackup/v1/session";
import type { Answer, FakeAgentSession } from "../../helpers/fake-agent";
import { until } from "../../helpers/wait";
import { refused } from "./api-server";
import { backupResult, Harness, importHeaderMessage, newBackup, vol } from "./harness";

const agentCaller = (agentId: string, cluster = "b"): Caller => ({
  via: "certificate",
  identity: { kind: "agent", cluster, agentId },
});
const as = (c: Caller) => ({ metadata: Metadata({ [CALLER_METADATA_KEY]: JSON.stringify(c) }) });

function probeAnswer(req: CallRequest): Answer {
  if (req.$case === "probe") {
    return {
      $case: "probe",
      value: { missingPools: [], missingNamespaces: [], imageExists: false, imageSize: 0, imageSnapshots: [] },
    };
  }
  return new AppError(Status.UNIMPLEMENTED, req.$case);
}

async function* exportStream(jobId: string, token: string, chunks: Uint8Array[]): AsyncIterable<ExportDataMessage> {
  yield { jobId, token, data: new Uint8Array(0) };
  for (const data of chunks) yield { jobId: "", token: "", data };
}

describe("rbd-diff interchange (coordinator side)", () => {
  let h: Harness;
  let b1: FakeAgentSession;
  let relays: Relays;
  let audit: Audit;
  let close: () => Promise<void>;
  let api: Client<typeof BackupServiceDefinition>;
  let agentApi: Client<typeof CoordinatorAgentServiceDefinition>;
  // connectMs 5 s: the tests that act on a lease must not race the agent's connect bound (a pause of this
  // process of ~250 ms lost that race at 300 ms); the two that want the bound met set it short themselves
  // (shortConnect: a run copies the bounds when it is made).
  const timeouts = { startMs: 2_000, connectMs: 5_000, endMs: 2_000, bufferBytes: 64 << 10 };
  async function shortConnect<T>(f: () => Promise<T>): Promise<T> {
    timeouts.connectMs = 300;
    try {
      return await f();
    } finally {
      timeouts.connectMs = 5_000;
    }
  }

  before(async () => {
    h = new Harness({ maxAttempts: 3 });
    relays = new Relays();
    audit = new Audit(h.log);
    const server = createServer();
    const deps = {
      catalog: h.catalog,
      sessions: h.sessions,
      scheduler: h.scheduler,
      log: h.log,
      maxAttempts: 3,
      interchange: { relays, scheduler: h.scheduler, timeouts },
    };
    server.with(auditCalls(audit)).with(errorStatus(h.log)).add(BackupServiceDefinition, backupService(deps));
    server.add(CoordinatorAgentServiceDefinition, {
      ...agentDataService({ catalog: h.catalog, relays, audit, log: h.log }),
      // biome-ignore lint/correctness/useYield: not used here
      session: async function* () {
        throw new Error("not here");
      },
    });
    const port = await server.listen("127.0.0.1:0");
    const channel = createChannel(`127.0.0.1:${port}`, ChannelCredentials.createInsecure());
    api = createClient(BackupServiceDefinition, channel);
    agentApi = createClient(CoordinatorAgentServiceDefinition, channel);
    close = async () => {
      channel.close();
      await server.shutdown();
    };
    b1 = h.connect("b1", "b");
    b1.answer = (req) => (req.$case === "probe" ? probeAnswer(req) : h.destinationAnswer("b", req));
  });
  after(async () => {
    await close();
    h.close();
  });

  /** An AVAILABLE full backup of `image` kept on cluster b. */
  function available(image: string): string {
    const j = h.queueBackup(vol(image), "b");
    const b = h.backup(j.backupId);
    const r = backupResult(b.id);
    Object.assign(b, { status: BackupStatus.BACKUP_STATUS_AVAILABLE, baseImage: r.baseImage, snapshot: r.snapshot });
    h.catalog.updateBackup(b);
    const job = h.job(j.id);
    job.state = JobState.JOB_STATE_SUCCEEDED;
    h.catalog.updateJob(job);
    return b.id;
  }

  it("ExportBackup relays the agent's bytes in order and ends once the job SUCCEEDED", async () => {
    const id = available("e1");
    const chunks = Array.from({ length: 40 }, () => randomBytes(16 << 10));
    const got: Buffer[] = [];
    let jobId = "";
    const reading = (async () => {
      for await (const c of api.exportBackup({ backupId: id, format: DiffFormat.DIFF_FORMAT_RBD_V2 })) {
        if (c.jobId) jobId = c.jobId;
        else got.push(Buffer.from(c.data));
      }
    })();
    await until(() => !!jobId && b1.leases().some((l) => l.jobId === jobId), "the EXPORT lease");
    const lease = b1.lease(jobId);
    assert.equal(lease.operation?.$case, "export");
    const op = lease.operation?.$case === "export" ? lease.operation.value : undefined;
    assert.equal(op?.format, 2);
    assert.equal(op?.snapshot, h.backup(id).snapshot);
    assert.equal(op?.fromSnapshot, "");
    const ack = await agentApi.exportData(exportStream(jobId, lease.token, chunks), as(agentCaller("b1")));
    assert.equal(ack.bytesReceived, 40 * (16 << 10));
    h.outcome(b1, jobId, Status.OK, "", {
      $case: "export",
      value: { bytesStreamed: ack.bytesReceived, dataBytes: 0, zeroBytes: 0, seconds: 1 },
    });
    await reading;
    assert.ok(Buffer.concat(got).equals(Buffer.concat(chunks)), "the bytes arrive as the agent sent them");
    assert.equal(h.job(jobId).state, JobState.JOB_STATE_SUCCEEDED);
    assert.equal(h.job(jobId).kind, JobKind.JOB_KIND_EXPORT);
    assert.equal(relays.size, 0);
  });

  it("ExportData/ImportData refuse every caller but the lease holder: PERMISSION_DENIED, audited, nothing relayed", () =>
    shortConnect(async () => {
      const id = available("e2");
      let jobId = "";
      let failure: unknown;
      const reading = (async () => {
        try {
          for await (const c of api.exportBackup({ backupId: id })) if (c.jobId) jobId = c.jobId;
        } catch (e) {
          failure = e;
        }
      })();
      await until(() => !!jobId && b1.leases().some((l) => l.jobId === jobId), "the EXPORT lease");
      const token = b1.lease(jobId).token;
      const before = h.log.lines.length;
      for (const [caller, data] of [
        [agentCaller("b2"), token], // another agent's certificate, with the right token
        [agentCaller("b1"), "not-the-token"], // the holder with a wrong token
        [{ via: "certificate", identity: { kind: "client", role: "admin", name: "x" } } as Caller, token],
      ] as const) {
        const e = await refused(agentApi.exportData(exportStream(jobId, data, [randomBytes(10)]), as(caller)));
        assert.equal(Status[e.code], "PERMISSION_DENIED", e.details);
        const e2 = await refused(
          (async () => {
            for await (const _ of agentApi.importData({ jobId, token: data }, as(caller))) assert.fail("data relayed");
          })(),
        );
        assert.equal(Status[e2.code], "PERMISSION_DENIED", e2.details);
      }
      const audited = h.log.lines.slice(before).filter((l) => l.fields?.reason === "no_lease");
      assert.equal(audited.length, 6, "each refusal is audited");
      assert.match(String(audited[0]?.fields?.message), /agent b1's, not agent b2's/);
      // Nobody claimed the relay: the holder's lease fails for want of data, with a clear message.
      await reading;
      assert.match(
        String((failure as Error).message),
        /agent b1 took the lease .* did not call ExportData within 0.3 s/,
      );
      const j = h.job(jobId);
      assert.equal(j.state, JobState.JOB_STATE_FAILED);
      assert.equal(j.errorCode, "DEADLINE_EXCEEDED");
      assert.ok(
        b1.cancels().some((c) => c.jobId === jobId),
        "the agent is told to stop",
      );
    }));

  /** An ExportBackup call of `id` whose EXPORT job is leased to b1; `ac` ends the call, `reading` its reader. */
  async function exportLeased(id: string): Promise<{ ac: AbortController; jobId: string; reading: Promise<void> }> {
    const ac = new AbortController();
    let jobId = "";
    const reading = (async () => {
      for await (const c of api.exportBackup({ backupId: id }, { signal: ac.signal })) if (c.jobId) jobId = c.jobId;
    })().catch(() => {});
    await until(() => !!jobId && b1.leases().some((l) => l.jobId === jobId), "the EXPORT lease");
    return { ac, jobId, reading };
  }

  it("leaseRefusal: only the certificate's agent with the current token", () => {
    const id = available("e3");
    const j = h.job(h.backup(id).jobId);
    assert.match(String(leaseRefusal(h.catalog, agentCaller("b1"), "export", j.id, "t")), /no EXPORT job/);
    assert.match(String(leaseRefusal(h.catalog, null, "export", j.id, "t")), /agent's certificate/);
    assert.match(String(leaseRefusal(h.catalog, { via: "token", role: "admin" }, "export", j.id, "t")), /certificate/);
  });

  it("leaseRefusal: the lease's agent id on a certificate of another cluster is refused (ids are unique in the catalog, not in what the CA signs)", async () => {
    const id = available("e5");
    const { ac, jobId, reading } = await exportLeased(id);
    const token = b1.lease(jobId).token;
    assert.equal(leaseRefusal(h.catalog, agentCaller("b1"), "export", jobId, token), null);
    assert.match(
      String(leaseRefusal(h.catalog, agentCaller("b1", "c"), "export", jobId, token)),
      /runs on cluster b, and agent b1's certificate is of cluster c/,
    );
    ac.abort();
    await reading;
    await until(() => h.job(jobId).cancelRequested, "the cancel");
    h.outcome(b1, jobId, Status.CANCELLED, "cancelled");
  });

  it("a caller that goes away cancels the EXPORT job", async () => {
    const id = available("e4");
    const { ac, jobId, reading } = await exportLeased(id);
    ac.abort();
    await reading;
    await until(() => h.job(jobId).cancelRequested, "the cancel");
    assert.ok(b1.cancels().some((c) => c.jobId === jobId));
    h.outcome(b1, jobId, Status.CANCELLED, "cancelled");
    assert.equal(h.job(jobId).state, JobState.JOB_STATE_CANCELLED);
  });

  it("ExportData: the API caller gone ends the agent's data call at once, though the agent sends nothing more", async () => {
    const id = available("e7");
    const { ac, jobId, reading } = await exportLeased(id);
    const token = b1.lease(jobId).token;
    const finishedListeners = h.scheduler.listenerCount("finished");
    let sent = false;
    const stalled = new AbortController();
    async function* stalling(): AsyncIterable<ExportDataMessage> {
      yield { jobId, token, data: randomBytes(1024) };
      sent = true;
      // An agent that keeps its stream open without sending (its own end never comes).
      await new Promise((r) => stalled.signal.addEventListener("abort", r));
    }
    const call = refused(agentApi.exportData(stalling(), as(agentCaller("b1"))));
    await until(() => sent, "the first data message");
    ac.abort();
    await reading;
    const e = await call;
    stalled.abort();
    assert.equal(Status[e.code], "CANCELLED", e.details);
    assert.match(e.details, /cancelled by its caller/);
    await until(() => h.job(jobId).cancelRequested, "the cancel");
    h.outcome(b1, jobId, Status.CANCELLED, "cancelled");
    await until(() => relays.size === 0, "the relay closed");
    assert.equal(h.scheduler.listenerCount("finished"), finishedListeners - 1, "the run stopped watching the job");
  });

  it("ExportBackup refuses what it cannot export", async () => {
    const id = available("e5");
    const other = available("e6");
    const e1 = await refused(consume(api.exportBackup({ backupId: id, fromBackupId: other })));
    assert.equal(Status[e1.code], "FAILED_PRECONDITION");
    assert.match(e1.details, /not in backup .*'s chain/);
    const e2 = await refused(consume(api.exportBackup({ backupId: "6c0e5b1e-0d3a-4c3e-8a57-0b7a8d2f0e11" })));
    assert.equal(Status[e2.code], "NOT_FOUND");
    const e3 = await refused(consume(api.exportBackup({ backupId: id, format: 9 as DiffFormat })));
    assert.equal(Status[e3.code], "INVALID_ARGUMENT");
  });

  it("ImportBackup relays the caller's bytes to the agent and commits the backup from its outcome", async () => {
    const data = Array.from({ length: 30 }, () => randomBytes(32 << 10));
    const header: ImportBackupMessage = {
      body: {
        $case: "header",
        value: {
          volume: vol("i1", "a"),
          location: { cluster: "b", pool: "", namespace: "" },
          volumeId: "vid-1",
          volumeMetadata: { k: "v" },
          parentBackupId: "",
          idempotencyKey: "imp-1",
          format: DiffFormat.DIFF_FORMAT_RBD_V2,
          takenAt: undefined,
        },
      },
    };
    async function* stream(): AsyncIterable<ImportBackupMessage> {
      yield header;
      for (const d of data) yield { body: { $case: "data", value: d } };
    }
    const answer = api.importBackup(stream());
    const { op, b, complete } = await leasedImport("i1");
    assert.equal(b.status, BackupStatus.BACKUP_STATUS_CREATING);
    assert.equal(op?.baseImage, `i1.backup.${b.id}`);
    assert.equal(op?.pool, "backups");
    assert.equal(op?.fromSnapshot, "");
    assert.match(String(op?.toSnapshot), new RegExp(`^backup\\.${b.id}\\.snap\\.`));
    assert.equal(op?.format, DiffFormat.DIFF_FORMAT_RBD_V2, "the declared format reaches the agent");
    const meta = JSON.parse(Buffer.from(op?.metadataJson ?? []).toString());
    assert.equal(meta.backup_id, b.id);
    assert.deepEqual(meta.volume, { id: "vid-1", metadata: { k: "v" } });
    assert.equal(meta.chain.base_image, op?.baseImage);
    assert.equal(meta.source.image, "i1");
    const { got, r } = await complete();
    assert.ok(got.equals(Buffer.concat(data)), "the agent gets the caller's bytes in order");
    const job = await answer;
    assert.equal(job.state, JobState.JOB_STATE_SUCCEEDED, job.errorMessage);
    assert.equal(job.backup?.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.equal(job.backup?.snapshot, r.snapshot);
  });

  it("ImportBackup whose job ends (its agent never connects) while the caller sends nothing more, nor closes: answered at once with the job's status", () =>
    shortConnect(async () => {
      let release!: () => void;
      const held = new Promise<void>((r) => {
        release = r;
      });
      async function* stream(): AsyncIterable<ImportBackupMessage> {
        yield {
          body: {
            $case: "header",
            value: {
              volume: vol("i-silent", "a"),
              location: { cluster: "b", pool: "", namespace: "" },
              volumeId: "",
              volumeMetadata: {},
              parentBackupId: "",
              idempotencyKey: "imp-silent",
              format: DiffFormat.DIFF_FORMAT_RBD_V1,
              takenAt: undefined,
            },
          },
        };
        yield { body: { $case: "data", value: randomBytes(1024) } };
        await held; // then silence, the stream left open
      }
      try {
        const answer = api.importBackup(stream()).then(
          () => "answered OK",
          (e: { code: Status }) => `answered ${Status[e.code]}`,
        );
        // Its agent never connects for the data: the job fails at connectMs (300 ms here).
        await leasedImport("i-silent");
        const got = await Promise.race([
          answer,
          new Promise<string>((r) => setTimeout(() => r("no answer within 5 s"), 5_000).unref()),
        ]);
        assert.equal(got, "answered DEADLINE_EXCEEDED");
      } finally {
        release();
      }
    }));

  it("ImportBackup with taken_at: the backup's times are the data's, for listings, metrics and policies", async () => {
    const takenAt = new Date(Date.now() - 3 * 86_400_000);
    const answer = api.importBackup(importHeader("t1", { takenAt }));
    const { op, b, complete } = await leasedImport("t1");
    assert.equal(b.createdAt?.getTime(), takenAt.getTime());
    assert.equal(JSON.parse(Buffer.from(op?.metadataJson ?? []).toString()).created_at, takenAt.toISOString());
    await complete();
    const job = await answer;
    assert.equal(job.state, JobState.JOB_STATE_SUCCEEDED, job.errorMessage);
    assert.equal(job.backup?.createdAt?.getTime(), takenAt.getTime());
    assert.equal(job.backup?.completedAt?.getTime(), takenAt.getTime(), "completed when its data was, not now");
    const last = h.catalog.lastSuccessByVolume().find((x) => x.image === "t1");
    assert.equal(last?.at, takenAt.getTime(), "rbdbackup_last_success_timestamp_seconds: the data's age");
    // Without it: the import's own times (a fresh backup).
    const plain = api.importBackup(importHeader("t2"));
    const second = await leasedImport("t2");
    await second.complete();
    const j2 = await plain;
    assert.equal(j2.backup?.completedAt?.getTime(), h.t, "completed at the scheduler's now");
  });

  it("ImportBackup refuses a taken_at in the future, before 2000, or not after its parent's: INVALID_ARGUMENT, nothing queued", async () => {
    const parent = available("t3");
    const pb = h.backup(parent);
    const parentAt = pb.createdAt?.getTime() ?? 0;
    const imports = () => h.catalog.listJobs({ kind: JobKind.JOB_KIND_IMPORT }, 100, "").items.length;
    const before = imports();
    for (const [header, why] of [
      [importHeader("t4", { takenAt: new Date(Date.now() + 3_600_000) }), /^header\.taken_at .* is in the future/],
      [
        importHeader("t4", { takenAt: new Date("1999-12-31T00:00:00Z") }),
        /^header\.taken_at must be a valid time after 2000/,
      ],
      [
        importHeader("t3", { takenAt: new Date(parentAt), parentBackupId: parent, pool: "backups" }),
        /^header\.taken_at .* is not later than the parent backup .*'s created_at/,
      ],
    ] as const) {
      const e = await refused(api.importBackup(header));
      assert.equal(Status[e.code], "INVALID_ARGUMENT", e.details);
      assert.match(e.details, why);
    }
    assert.equal(imports(), before, "no job");
    assert.equal(h.catalog.backupsOfVolume("a", "rbd", "", "t4").length, 0, "no backup");
  });

  it("ImportBackup: the agent's failure (a malformed stream) is the caller's status, and the backup FAILED", async () => {
    async function* stream(): AsyncIterable<ImportBackupMessage> {
      yield importHeaderMessage({ volume: vol("i2", "a") });
      // Much more than the relay buffers: the caller waits while nobody reads.
      for (let i = 0; i < 64; i++) yield { body: { $case: "data", value: randomBytes(16 << 10) } };
    }
    const answer = refused(api.importBackup(stream()));
    let jobId = "";
    await until(() => {
      jobId =
        h.catalog.listJobs({ kind: JobKind.JOB_KIND_IMPORT }, 10, "").items.find((x) => x.volume?.image === "i2")?.id ??
        "";
      return !!jobId && b1.leases().some((l) => l.jobId === jobId);
    }, "the IMPORT lease");
    const token = b1.lease(jobId).token;
    const it = agentApi.importData({ jobId, token }, as(agentCaller("b1")))[Symbol.asyncIterator]();
    await it.next();
    h.outcome(
      b1,
      jobId,
      Status.INVALID_ARGUMENT,
      "malformed rbd diff stream at byte offset 12: unknown record tag 'x'",
    );
    const e = await answer;
    assert.equal(Status[e.code], "INVALID_ARGUMENT");
    assert.match(e.details, /byte offset 12/);
    const j = h.job(jobId);
    assert.equal(j.state, JobState.JOB_STATE_FAILED);
    assert.equal(h.backup(j.backupId).status, BackupStatus.BACKUP_STATUS_FAILED);
    await it.return?.();
  });

  it("ImportBackup retried with its idempotency key: the first call's answer — never a job still running or failed as OK", async () => {
    // Retried while the first call still relays: FAILED_PRECONDITION at once, naming the job to follow.
    const first = api.importBackup(importHeader("k1", { key: "imp-k1" }));
    const { jobId, complete } = await leasedImport("k1");
    const running = await refused(api.importBackup(importHeader("k1", { key: "imp-k1" })));
    assert.equal(Status[running.code], "FAILED_PRECONDITION");
    assert.match(running.details, new RegExp(`names job ${jobId}, still JOB_STATE_RUNNING: .*WatchJob`));
    await complete();
    const a = await first;
    assert.equal(a.state, JobState.JOB_STATE_SUCCEEDED, a.errorMessage);
    // Once it ended: the job, as the first call got it.
    const b = await api.importBackup(importHeader("k1", { key: "imp-k1" }));
    assert.equal(b.id, jobId);
    assert.equal(b.state, JobState.JOB_STATE_SUCCEEDED);
    assert.equal(b.backup?.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    // A job that failed: its status again, saying the key names it; nothing new queued.
    const failing = refused(api.importBackup(importHeader("k2", { key: "imp-k2" })));
    const second = await leasedImport("k2");
    h.outcome(b1, second.jobId, Status.INVALID_ARGUMENT, "malformed rbd diff stream at byte offset 7");
    assert.equal(Status[(await failing).code], "INVALID_ARGUMENT");
    const imports = () => h.catalog.listJobs({ kind: JobKind.JOB_KIND_IMPORT }, 1000, "").items.length;
    const before = imports();
    const e = await refused(api.importBackup(importHeader("k2", { key: "imp-k2" })));
    assert.equal(Status[e.code], "INVALID_ARGUMENT");
    assert.match(e.details, /byte offset 7 .*idempotency_key "imp-k2" names this job: a new import needs a new key/);
    assert.equal(imports(), before, "no job");
  });

  /** An ImportBackup stream of only its header: a diff of `image` onto backup `parentBackupId`, kept on b. */
  async function* headerOnto(image: string, parentBackupId: string): AsyncIterable<ImportBackupMessage> {
    yield importHeaderMessage({
      volume: vol(image),
      location: { cluster: "b", pool: "backups", namespace: "" },
      parentBackupId,
    });
  }

  /** An ImportBackup stream of a header (kept on b, cluster a's `image`) and 4 data messages. */
  async function* importHeader(
    image: string,
    o: { takenAt?: Date; parentBackupId?: string; pool?: string; key?: string } = {},
  ): AsyncIterable<ImportBackupMessage> {
    yield importHeaderMessage({
      volume: vol(image, "a"),
      location: { cluster: "b", pool: o.pool ?? "", namespace: "" },
      parentBackupId: o.parentBackupId ?? "",
      idempotencyKey: o.key ?? "",
      takenAt: o.takenAt,
    });
    for (let i = 0; i < 4; i++) yield { body: { $case: "data", value: randomBytes(1024) } };
  }

  /**
   * The IMPORT job of `image` once leased to b1: its operation and backup; `complete()` reads the relayed
   * bytes as the agent, then reports the backup made (and committed, for the confirmation).
   */
  async function leasedImport(image: string) {
    let jobId = "";
    await until(() => {
      jobId =
        h.catalog.listJobs({ kind: JobKind.JOB_KIND_IMPORT }, 100, "").items.find((x) => x.volume?.image === image)
          ?.id ?? "";
      return !!jobId && b1.leases().some((l) => l.jobId === jobId);
    }, "the IMPORT lease");
    const lease = b1.lease(jobId);
    assert.equal(lease.operation?.$case, "import");
    const op = lease.operation?.$case === "import" ? lease.operation.value : undefined;
    const b = h.backup(h.job(jobId).backupId);
    const complete = async () => {
      const got: Buffer[] = [];
      for await (const c of agentApi.importData({ jobId, token: lease.token }, as(agentCaller("b1")))) {
        got.push(Buffer.from(c.data));
      }
      const r = { ...backupResult(b.id), baseImage: op?.baseImage ?? "", snapshot: op?.toSnapshot ?? "" };
      h.committed.set(b.id, {
        cluster: "b",
        pool: "backups",
        baseImage: r.baseImage,
        snapshot: r.snapshot,
        backupId: b.id,
        meta: Buffer.from(op?.metadataJson ?? []).toString(),
        result: r,
      });
      h.outcome(b1, jobId, Status.OK, "", { $case: "backup", value: r });
      return { got: Buffer.concat(got), r };
    };
    return { jobId, op, b, complete };
  }

  it("ImportBackup refuses a parent that is not the newest of its chain", async () => {
    const first = available("i3");
    const fb = h.backup(first);
    const second = newBackup(vol("i3"), "b", h.t + 10);
    Object.assign(second, { status: BackupStatus.BACKUP_STATUS_AVAILABLE, baseImage: fb.baseImage, snapshot: "s2" });
    h.catalog.insertBackup(second);
    const e = await refused(api.importBackup(headerOnto("i3", first)));
    assert.equal(Status[e.code], "FAILED_PRECONDITION");
    assert.match(e.details, /not the newest of its chain/);
    // Audited with what the stream's header named (a client stream: its first message).
    const line = h.log.lines
      .filter((l) => l.fields?.audit && l.fields.method === "/rbdbackup.v1.BackupService/ImportBackup")
      .at(-1);
    assert.equal(line?.fields?.result, "FAILED_PRECONDITION");
    assert.match(String(line?.fields?.target), /volume=a\/rbd\/i3 location=b\/backups/);
  });

  it("ImportBackup refuses a parent whose chain holds a CORRUPT backup, newer or older than it", async () => {
    for (const [image, offset, why] of [
      ["i4", 10, /is not the newest of its chain/],
      ["i5", -10, /the chain of backup .* holds backup .*, which is CORRUPT; import a full stream/],
    ] as const) {
      const first = available(image);
      const fb = h.backup(first);
      const bad = newBackup(vol(image), "b", (fb.createdAt?.getTime() ?? 0) + offset);
      Object.assign(bad, { status: BackupStatus.BACKUP_STATUS_CORRUPT, baseImage: fb.baseImage, snapshot: "sx" });
      h.catalog.insertBackup(bad);
      const e = await refused(api.importBackup(headerOnto(image, first)));
      assert.equal(Status[e.code], "FAILED_PRECONDITION", image);
      assert.match(e.details, why);
    }
  });

  it("orFailure: each wait for a message holds nothing once it ended (an upload's messages are not kept); the pipe's failure ends a wait", async () => {
    const p = new BytePipe(1 << 20);
    for (let i = 0; i < 1000; i++) {
      const got = await p.orFailure(Promise.resolve(new Uint8Array(1024)));
      assert.equal(got.length, 1024);
    }
    await assert.rejects(p.orFailure(Promise.reject(new Error("the stream broke"))), /the stream broke/);
    assert.equal(p.waiters, 0, "no wait left behind");
    const pending = p.orFailure(new Promise<never>(() => {}));
    assert.equal(p.waiters, 1);
    p.fail(new AppError(Status.DEADLINE_EXCEEDED, "the job ended"));
    await assert.rejects(pending, /the job ended/);
    assert.equal(p.waiters, 0);
    await assert.rejects(p.orFailure(Promise.resolve(1)), /the job ended/, "after the failure: the failure at once");
  });

  it("the relay's pipe holds at most its limit: the writer waits for the reader", async () => {
    const p = new BytePipe(20_000);
    let written = 0;
    const writer = (async () => {
      for (let i = 0; i < 10; i++) {
        await p.write(new Uint8Array(8000));
        written++;
      }
      p.end();
    })();
    // The writer fills the pipe to its limit, then waits: a few turns of the event loop change nothing.
    await until(() => p.buffered >= 16_000, "the writer to fill the pipe");
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    assert.ok(written <= 3, `the writer ran ahead: ${written} chunks`);
    assert.ok(p.buffered <= 24_000);
    let n = 0;
    for await (const c of p.read()) n += c.length;
    await writer;
    assert.equal(n, 80_000);
    // Tiny chunks (a caller sending 1-byte messages) are charged MIN_CHARGE each: a few thousand, not millions.
    const tiny = new BytePipe(8 * 1024 * 1024);
    let chunks = 0;
    void (async () => {
      for (;;) {
        await tiny.write(new Uint8Array(1));
        chunks++;
      }
    })().catch(() => {});
    await until(() => tiny.buffered >= (8 * 1024 * 1024) / MIN_CHARGE, "the writer to fill the pipe with tiny chunks");
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    assert.ok(chunks <= (8 * 1024 * 1024) / MIN_CHARGE, `queued ${chunks} one-byte chunks`);
    tiny.fail(new AppError(Status.CANCELLED, "done"));
    const q = new BytePipe(10);
    q.fail(new AppError(Status.CANCELLED, "gone"));
    await assert.rejects(q.write(new Uint8Array(1)), /gone/);
  });
});

async function consume(s: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of s) {
  }
}
