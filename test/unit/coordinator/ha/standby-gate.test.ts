/**
 * The standby gate (src/coordinator/ha/standby-gate.ts) in front of the real BackupService handlers on
 * a gRPC server: what a standby serves, what it refuses and how (UNAVAILABLE, the leader's address and
 * id in the trailers), and a leader-only stream ended by a step-down.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { ChannelCredentials } from "@grpc/grpc-js";
import {
  type CallContext,
  ClientError,
  createChannel,
  createClient,
  createServer,
  type Metadata,
  Status,
} from "nice-grpc";
import { backupService, errorStatus } from "../../../../src/coordinator/api/service";
import {
  LEADER_ID_TRAILER,
  LEADER_TRAILER,
  type LeaderRef,
  type LeaderView,
  madeJob,
  standbyGate,
} from "../../../../src/coordinator/ha/standby-gate";
import { BackupServiceDefinition, CoordinatorRole } from "../../../../src/gen/rbdbackup/v1/backup_service";
import { waitFor } from "../../../helpers/wait";
import { Harness, vol } from "../harness";

class View implements LeaderView {
  lead = false;
  named: LeaderRef | undefined = { id: "coord-b", address: "127.0.0.1:7301" };
  term = new AbortController();
  leading() {
    return this.lead;
  }
  leader() {
    return this.named;
  }
  termSignal() {
    return this.lead ? this.term.signal : undefined;
  }
}

describe("standby gate", () => {
  let h: Harness;
  let view: View;
  let close: () => Promise<void>;
  let api: ReturnType<typeof createClient<typeof BackupServiceDefinition>>;

  beforeEach(async () => {
    h = new Harness();
    view = new View();
    const server = createServer();
    server
      .with(errorStatus(h.log))
      .with(standbyGate(view))
      .add(
        BackupServiceDefinition,
        backupService({
          catalog: h.catalog,
          sessions: h.sessions,
          scheduler: h.scheduler,
          log: h.log,
          maxAttempts: 3,
          coordinatorStatus: () => ({
            id: "coord-a",
            address: "127.0.0.1:7300",
            role: view.lead ? CoordinatorRole.COORDINATOR_ROLE_LEADER : CoordinatorRole.COORDINATOR_ROLE_STANDBY,
            leaderId: view.named?.id ?? "",
            leaderAddress: view.named?.address ?? "",
            fencingToken: 3,
            leaseExpiresAt: undefined,
            catalog: "postgresql",
            schemaVersion: 1,
            version: "0.1.0+test",
          }),
        }),
      );
    const port = await server.listen("127.0.0.1:0");
    const channel = createChannel(`127.0.0.1:${port}`, ChannelCredentials.createInsecure());
    api = createClient(BackupServiceDefinition, channel);
    close = async () => {
      channel.close();
      await server.shutdown();
      h.close();
    };
  });
  afterEach(() => close());

  /** The call's status and trailers. */
  async function outcome(f: (o: { onTrailer: (md: Metadata) => void }) => Promise<unknown>) {
    let trailer: Metadata | undefined;
    try {
      await f({ onTrailer: (md) => (trailer = md) });
      return { code: Status.OK, details: "", trailer };
    } catch (e) {
      assert.ok(e instanceof ClientError, String(e));
      return { code: e.code, details: e.details, trailer };
    }
  }

  it("a standby serves catalog reads", async () => {
    const j = h.queueBackup(vol("v1"));
    assert.equal((await api.getJob({ jobId: j.id })).id, j.id);
    assert.equal((await api.listJobs({ pageSize: 10, pageToken: "", state: 0, kind: 0 })).jobs.length, 1);
    const st = await api.getCoordinatorStatus({});
    assert.equal(st.role, CoordinatorRole.COORDINATOR_ROLE_STANDBY);
    assert.equal(st.leaderAddress, "127.0.0.1:7301");
  });

  for (const [name, call] of [
    ["CreateBackup (mutating)", (o: object) => api.createBackup({ volume: vol("v1") }, o)],
    ["CancelJob (mutating)", (o: object) => api.cancelJob({ jobId: "0b5c9a1e-0000-4000-8000-000000000000" }, o)],
    ["ListAgents (live sessions are the leader's)", (o: object) => api.listAgents({}, o)],
    ["CheckCluster (asks an agent)", (o: object) => api.checkCluster({ cluster: "a" }, o)],
    ["ListBackupSnapshots (asks an agent)", (o: object) => api.listBackupSnapshots({ volume: vol("v1") }, o)],
  ] as const) {
    it(`a standby refuses ${name}: UNAVAILABLE naming the leader, in the message and the trailers`, async () => {
      const r = await outcome((o) => call(o));
      assert.equal(Status[r.code], "UNAVAILABLE");
      assert.equal(r.details, "this coordinator is a standby; the leader is coord-b at 127.0.0.1:7301");
      assert.equal(r.trailer?.get(LEADER_TRAILER), "127.0.0.1:7301");
      assert.equal(r.trailer?.get(LEADER_ID_TRAILER), "coord-b");
    });
  }

  it("a standby that knows no leader refuses without the trailers", async () => {
    view.named = undefined;
    const r = await outcome((o) => api.createBackup({ volume: vol("v1") }, o));
    assert.equal(Status[r.code], "UNAVAILABLE");
    assert.match(r.details, /no coordinator leads at the moment/);
    assert.equal(r.trailer?.get(LEADER_TRAILER), undefined);
  });

  it("a step-down after the handler made its job (an import's upload going on): UNAVAILABLE naming the job, without the leader trailers", async () => {
    view.lead = true;
    const server = createServer();
    let started!: () => void;
    const inUpload = new Promise<void>((r) => {
      started = r;
    });
    const unimplemented = Object.fromEntries(
      Object.keys(BackupServiceDefinition.methods).map((m) => [
        m,
        async () => {
          throw new Error("unimplemented");
        },
      ]),
    );
    server.with(standbyGate(view)).add(BackupServiceDefinition, {
      ...unimplemented,
      async importBackup(requests: AsyncIterable<unknown>, ctx: CallContext) {
        madeJob(ctx, "job-made-1");
        started();
        void requests;
        // The upload goes on until the term's end aborts the call (the real handler's pump watches it).
        await new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)));
        throw new Error("not reached");
      },
    } as unknown as Parameters<typeof server.add<typeof BackupServiceDefinition>>[1]);
    const port = await server.listen("127.0.0.1:0");
    const channel = createChannel(`127.0.0.1:${port}`, ChannelCredentials.createInsecure());
    const client = createClient(BackupServiceDefinition, channel);
    try {
      let trailer: Metadata | undefined;
      const never = new AbortController();
      async function* upload() {
        yield { header: { volume: vol("v1") } };
        await new Promise((r) => never.signal.addEventListener("abort", r));
      }
      const call = client.importBackup(upload() as never, { onTrailer: (md) => (trailer = md) });
      await inUpload;
      view.lead = false;
      view.term.abort();
      await assert.rejects(call, (e: unknown) => {
        assert.ok(e instanceof ClientError, String(e));
        assert.equal(e.code, Status.UNAVAILABLE);
        assert.match(e.details, /after it made job job-made-1: ask the leader for that job \(GetJob\)/);
        return true;
      });
      assert.equal(trailer?.get(LEADER_TRAILER), undefined, "no 'send it to the leader'");
      never.abort();
    } finally {
      channel.close();
      await server.shutdown();
    }
  });

  it("on the leader, a WatchJob ended by the step-down fails UNAVAILABLE naming the new leader", async () => {
    view.lead = true;
    const j = h.queueBackup(vol("v1"));
    let trailer: Metadata | undefined;
    const events: unknown[] = [];
    const watching = (async () => {
      for await (const ev of api.watchJob({ jobId: j.id }, { onTrailer: (md) => (trailer = md) })) events.push(ev);
    })();
    await waitFor(() => events.length > 0, { what: "the first event", timeoutMs: 5_000 });
    view.lead = false;
    view.term.abort();
    await assert.rejects(watching, (e) => e instanceof ClientError && e.code === Status.UNAVAILABLE);
    assert.equal(trailer?.get(LEADER_TRAILER), "127.0.0.1:7301");
  });
});
