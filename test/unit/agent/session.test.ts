/**
 * The agent's coordinator session against a fake coordinator (a real gRPC server on 127.0.0.1:0) and
 * fake operations: registration, leases, cancel/revoke/shutdown, outcome delivery across reconnects,
 * calls and fencing. No Ceph; every wait is on a condition with a deadline.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import type { LinkOptions } from "../../../agents/agent/coordinator-link";
import { CoordinatorSession, type SessionIdentity } from "../../../agents/agent/session";
import { SOURCE_SNAPSHOTS, type WithSourceSnapshots } from "../../../agents/engine/backup-result";
import { Status } from "../../../src/common/errors";
import { BackupRequest, BackupResult } from "../../../src/gen/rbdbackup/v1/agent";
import type { Lease } from "../../../src/gen/rbdbackup/v1/session";
import { FakeCoordinator, FakeOps, type FakeStream, recordingLogger, waitFor } from "./fakes";

const identity: SessionIdentity = {
  agentId: "agent-a",
  clusterName: "site-a",
  clusterFsid: "fsid-a",
  version: "1.2.3",
  librbdVersion: "19.2.0",
  transferAddress: "127.0.0.1:7001",
  capacity: 3,
  defaultBackupPool: "backups",
};

const of = FakeCoordinator.of;

function lease(n: number, over: Partial<Lease> = {}): Lease {
  return {
    jobId: `job-${n}`,
    attempt: 1,
    token: `token-${n}`,
    ttlMs: 60_000,
    operation: { $case: "backup", value: BackupRequest.fromPartial({ backupId: `backup-${n}` }) },
    fenceClientAddrs: [],
    fenceSeconds: 0,
    ...over,
  };
}

describe("coordinator session", () => {
  let coord: FakeCoordinator;
  let ops: FakeOps;
  let session: CoordinatorSession | null = null;
  const log = recordingLogger();

  const open = (options: Partial<LinkOptions> = {}, id: Partial<SessionIdentity> = {}) => {
    session = new CoordinatorSession(
      [coord.address],
      { insecure: true },
      { ...identity, ...id },
      ops,
      log,
      {},
      { reconnect: { baseMs: 1, maxMs: 4, jitter: 0 }, tickMs: 10, ...options },
    );
    session.start();
    return session;
  };

  /** Every message the agent sent before this returns was sent before the call's reply (one stream, in order). */
  const barrier = async (s: FakeStream) => {
    const callId = `barrier-${s.received.length}-${Math.random()}`;
    coord.send(s, {
      $case: "call",
      value: {
        callId,
        request: {
          $case: "probe",
          value: { pools: [], namespaces: [], image: undefined, keepOpen: false, checkTrash: false },
        },
      },
    });
    await waitFor("the barrier call's reply", () => of(s, "callReply").some((r) => r.callId === callId));
  };

  beforeEach(async () => {
    coord = await new FakeCoordinator().start();
    coord.autoAck = true;
    ops = new FakeOps();
  });
  afterEach(async () => {
    // Acknowledge what is left, so stop() need not wait for delivery.
    const last = coord.streams.at(-1);
    if (last) {
      const tokens = of(last, "outcome").map((o) => o.token);
      coord.send(last, { $case: "heartbeatAck", value: { revokedTokens: [], outcomesReceived: tokens } });
    }
    coord.autoAck = true;
    await session?.stop(0);
    session = null;
    await coord.stop();
  });

  it("registers with its identity, its Ceph client and no leases", async () => {
    open();
    const s = await coord.stream(0);
    await waitFor("register", () => of(s, "register").length === 1);
    const reg = of(s, "register")[0];
    assert.deepEqual(reg, {
      agentId: "agent-a",
      clusterName: "site-a",
      clusterFsid: "fsid-a",
      version: "1.2.3",
      transferAddress: "127.0.0.1:7001",
      capacity: 3,
      leases: [],
      librbdVersion: "19.2.0",
      defaultBackupPool: "backups",
      cephClientAddrs: "10.0.0.1:0/111",
      features: ["confirm_backup", "discard_held", "end_job"],
    });
    await waitFor("connected", () => session?.connected === true);
  });

  it("a lease starts exactly one attempt; a reconnect registers it as held", async () => {
    open();
    const s0 = await coord.stream(0);
    coord.send(s0, { $case: "lease", value: lease(1) });
    coord.send(s0, { $case: "lease", value: lease(1) });
    await barrier(s0);
    assert.equal(ops.attempts.length, 1);
    assert.equal(ops.attempts[0]?.kind, "backup");
    assert.equal((ops.attempts[0]?.req as BackupRequest | undefined)?.backupId, "backup-1");
    assert.equal(session?.runningCount, 1);

    s0.out.close(); // the coordinator ends the stream: the agent dials again
    const s1 = await coord.stream(1);
    await waitFor("second register", () => of(s1, "register").length === 1);
    assert.deepEqual(of(s1, "register")[0]?.leases, [{ jobId: "job-1", attempt: 1, token: "token-1" }]);
    coord.send(s1, { $case: "lease", value: lease(1) }); // re-sent by a coordinator: still one attempt
    await barrier(s1);
    assert.equal(ops.attempts.length, 1);
  });

  it("progress is sent only when it changed, at most once a tick", async () => {
    open();
    const s = await coord.stream(0);
    coord.send(s, { $case: "lease", value: lease(2) });
    await waitFor("the attempt", () => ops.attempts.length === 1);
    const p = ops.attempts[0]?.progress;
    assert.ok(p);
    // A burst of updates between two ticks is one report of the last state.
    for (let i = 1; i <= 1000; i++) {
      p.phase = "transfer";
      p.bytesTotal = 1000;
      p.stats = { position: i, dataBytes: i * 2 } as never;
    }
    await waitFor("a progress report of the last state", () =>
      of(s, "progress").some((r) => r.bytesDone === 1000 && r.bytesTransferred === 2000),
    );
    const reports = of(s, "progress");
    assert.ok(reports.length <= 3, `${reports.length} reports for one burst`);
    assert.deepEqual(reports.at(-1), {
      jobId: "job-2",
      token: "token-2",
      phase: "transfer",
      bytesDone: 1000,
      bytesTotal: 1000,
      bytesTransferred: 2000,
    });
  });

  it("an outcome is resent on every reconnect until the coordinator acknowledges it", async () => {
    coord.autoAck = false;
    open();
    const s0 = await coord.stream(0);
    coord.send(s0, { $case: "lease", value: lease(3) });
    await waitFor("the attempt", () => ops.attempts.length === 1);
    const result = BackupResult.fromPartial({ backupId: "backup-3", baseImage: "vol.backup.x" });
    ops.attempts[0]?.resolve(result);
    await waitFor("the outcome", () => of(s0, "outcome").length === 1);
    assert.deepEqual(of(s0, "outcome")[0], {
      jobId: "job-3",
      token: "token-3",
      code: Status.OK,
      message: "",
      result: { $case: "backup", value: result },
      // The lease names no source volume: nothing to list.
      sourceSnapshots: [],
      sourceSnapshotsListed: false,
      refused: false,
    });
    assert.equal(session?.runningCount, 0);

    s0.out.close();
    const s1 = await coord.stream(1);
    await waitFor("the outcome again", () => of(s1, "outcome").length === 1);
    // Finished but unacknowledged: still held, so the coordinator does not fail it as lost.
    assert.deepEqual(of(s1, "register")[0]?.leases, [{ jobId: "job-3", attempt: 0, token: "token-3" }]);
    assert.equal(of(s1, "outcome")[0]?.token, "token-3");
    coord.send(s1, { $case: "heartbeatAck", value: { revokedTokens: [], outcomesReceived: ["token-3"] } });
    await barrier(s1);

    s1.out.close();
    const s2 = await coord.stream(2);
    await waitFor("third register", () => of(s2, "register").length === 1);
    await barrier(s2);
    assert.deepEqual(of(s2, "register")[0]?.leases, []);
    assert.equal(of(s2, "outcome").length, 0);
    assert.equal(ops.attempts.length, 1, "a finished attempt is never run again");
  });

  it("a backup of a volume: its outcome lists the source's backup snapshots (JobOutcome.source_snapshots)", async () => {
    const source = { pool: "rbd", namespace: "", image: "vol-9" };
    const listed = [{ name: "backup.b9.snap.1", backupId: "b9", timestamp: 1, snapId: 4, size: 8 }];
    ops.snapshots.set("vol-9", listed);
    open();
    const s = await coord.stream(0);
    const req = BackupRequest.fromPartial({ backupId: "backup-9", source: { $case: "volume", value: source } });
    coord.send(s, { $case: "lease", value: lease(9, { operation: { $case: "backup", value: req } }) });
    await waitFor("the attempt", () => ops.attempts.length === 1);
    ops.attempts[0]?.resolve(BackupResult.fromPartial({ backupId: "backup-9" }));
    await waitFor("the outcome", () => of(s, "outcome").length === 1);
    const o = of(s, "outcome")[0];
    assert.equal(o?.sourceSnapshotsListed, true);
    assert.deepEqual(o?.sourceSnapshots, listed);
    assert.deepEqual(ops.asked, ["list vol-9"]);
    // A listing that fails leaves the list out (the coordinator then asks, as of an older agent).
    ops.snapshots.clear();
    coord.send(s, { $case: "lease", value: lease(10, { operation: { $case: "backup", value: req } }) });
    await waitFor("the second attempt", () => ops.attempts.length === 2);
    ops.attempts[1]?.resolve(BackupResult.fromPartial({ backupId: "backup-9" }));
    await waitFor("the second outcome", () => of(s, "outcome").length === 2);
    assert.equal(of(s, "outcome")[1]?.code, Status.OK);
    assert.equal(of(s, "outcome")[1]?.sourceSnapshotsListed, false);
  });

  it("a backup whose result carries the snapshots its prune left: the outcome lists those, nothing is asked again", async () => {
    const source = { pool: "rbd", namespace: "", image: "vol-11" };
    const carried = [{ name: "backup.b11.snap.1", backupId: "b11", timestamp: 1, snapId: 7, size: 8 }];
    // What a listing would answer (it must not be asked).
    ops.snapshots.set("vol-11", [{ name: "backup.other.snap.1", backupId: "other", timestamp: 1, snapId: 1, size: 8 }]);
    open();
    const s = await coord.stream(0);
    const req = BackupRequest.fromPartial({ backupId: "backup-11", source: { $case: "volume", value: source } });
    coord.send(s, { $case: "lease", value: lease(11, { operation: { $case: "backup", value: req } }) });
    await waitFor("the attempt", () => ops.attempts.length === 1);
    const result: WithSourceSnapshots = BackupResult.fromPartial({ backupId: "backup-11" });
    result[SOURCE_SNAPSHOTS] = carried;
    ops.attempts[0]?.resolve(result);
    await waitFor("the outcome", () => of(s, "outcome").length === 1);
    const o = of(s, "outcome")[0];
    assert.equal(o?.sourceSnapshotsListed, true);
    assert.deepEqual(o?.sourceSnapshots, carried);
    assert.deepEqual(ops.asked, []);
  });

  it("an agent told to name no features registers without them (plays an older agent)", async () => {
    open({}, { features: [] });
    const s = await coord.stream(0);
    await waitFor("register", () => of(s, "register").length === 1);
    assert.deepEqual(of(s, "register")[0]?.features, []);
  });

  it("cancel aborts the attempt's signal and reports CANCELLED", async () => {
    open();
    const s = await coord.stream(0);
    coord.send(s, { $case: "lease", value: lease(4) });
    await waitFor("the attempt", () => ops.attempts.length === 1);
    const signal = ops.attempts[0]?.signal;
    assert.equal(signal?.aborted, false);
    coord.send(s, { $case: "cancel", value: { jobId: "job-4", token: "token-4", reason: "by a user" } });
    await waitFor("the outcome", () => of(s, "outcome").length === 1);
    assert.equal(signal?.aborted, true);
    assert.equal(of(s, "outcome")[0]?.code, Status.CANCELLED);
    // A cancel for an attempt this agent does not run changes nothing.
    coord.send(s, { $case: "cancel", value: { jobId: "job-x", token: "token-x", reason: "" } });
    await barrier(s);
  });

  it("a revoked lease stops its attempt (by heartbeat ack or at registration)", async () => {
    open();
    const s0 = await coord.stream(0);
    coord.send(s0, { $case: "lease", value: lease(5) });
    coord.send(s0, { $case: "lease", value: lease(6) });
    await waitFor("two attempts", () => ops.attempts.length === 2);
    coord.send(s0, { $case: "heartbeatAck", value: { revokedTokens: ["token-5"], outcomesReceived: [] } });
    await waitFor("the first outcome", () => of(s0, "outcome").length === 1);
    assert.equal(ops.attempts[0]?.signal?.aborted, true);
    assert.equal(ops.attempts[1]?.signal?.aborted, false);
    assert.equal(of(s0, "outcome")[0]?.code, Status.CANCELLED);

    coord.autoRegister = false;
    s0.out.close();
    const s1 = await coord.stream(1);
    await waitFor("register", () => of(s1, "register").length === 1);
    // token-5's outcome was acknowledged; token-6 still runs.
    assert.deepEqual(of(s1, "register")[0]?.leases, [{ jobId: "job-6", attempt: 1, token: "token-6" }]);
    coord.send(s1, {
      $case: "registered",
      value: {
        heartbeatIntervalMs: 60_000,
        leaseTtlMs: 60_000,
        revokedTokens: ["token-6"],
        idleHeartbeatIntervalMs: 0,
      },
    });
    await waitFor("the second outcome", () => of(s1, "outcome").some((o) => o.token === "token-6"));
    assert.equal(ops.attempts[1]?.signal?.aborted, true);
    assert.equal(of(s1, "outcome").find((o) => o.token === "token-6")?.code, Status.CANCELLED);
    s1.out.close();
    const s2 = await coord.stream(2);
    await waitFor("register", () => of(s2, "register").length === 1);
    assert.deepEqual(of(s2, "register")[0]?.leases, []);
  });

  it("a revoked lease's unacknowledged outcome is forgotten", async () => {
    coord.autoAck = false;
    open();
    const s0 = await coord.stream(0);
    coord.send(s0, { $case: "lease", value: lease(13) });
    await waitFor("the attempt", () => ops.attempts.length === 1);
    ops.attempts[0]?.reject(new Error("boom"));
    await waitFor("the outcome", () => of(s0, "outcome").length === 1);
    coord.send(s0, { $case: "heartbeatAck", value: { revokedTokens: ["token-13"], outcomesReceived: [] } });
    await barrier(s0);
    s0.out.close();
    const s1 = await coord.stream(1);
    await waitFor("register", () => of(s1, "register").length === 1);
    await barrier(s1);
    assert.deepEqual(of(s1, "register")[0]?.leases, []);
    assert.equal(of(s1, "outcome").length, 0);
  });

  it("heartbeats carry the held leases at the interval the coordinator asks for", async () => {
    coord.heartbeatIntervalMs = 20;
    open();
    const s = await coord.stream(0);
    coord.send(s, { $case: "lease", value: lease(7) });
    await waitFor("a heartbeat holding the lease", () =>
      of(s, "heartbeat").some((h) => h.leases.some((l) => l.token === "token-7")),
    );
    assert.ok(of(s, "heartbeat").every((h) => !h.draining));
    session?.drain();
    await waitFor("a heartbeat saying it is shutting down", () => of(s, "heartbeat").some((h) => h.draining));
  });

  it("an agent holding nothing beats at the idle interval; one holding a lease at the short one", async () => {
    // Bounds with room for a pause of this process (both ends are in it): idle 1 s, asserted ≥ 0.5 s apart;
    // with the lease, beats within 0.5 s — half what an agent waiting for its idle timer would take.
    coord.heartbeatIntervalMs = 20;
    coord.idleHeartbeatIntervalMs = 1_000;
    open();
    const s = await coord.stream(0);
    /** Arrival times of the heartbeats that list nothing / the lease `token`. */
    const beats = (held: boolean) =>
      s.received.flatMap((m, i) =>
        m.msg?.$case === "heartbeat" && m.msg.value.leases.length > 0 === held ? [s.receivedAt[i] as number] : [],
      );
    await waitFor("register", () => of(s, "register").length === 1);
    const registeredAt = s.receivedAt[0] as number;
    await waitFor("two idle heartbeats", () => beats(false).length >= 2, 8_000);
    const idle = [registeredAt, ...beats(false)];
    for (let i = 1; i < idle.length; i++)
      assert.ok((idle[i] as number) - (idle[i - 1] as number) >= 500, `idle beats ${idle.join(", ")}`);
    // A lease held, sent right after an idle beat: it is listed at the short interval (the coordinator
    // renews it as often as ever), not at the next idle beat a second later.
    const leasedAt = Date.now();
    coord.send(s, { $case: "lease", value: lease(21) });
    await waitFor("three heartbeats listing the lease", () => beats(true).length >= 3, 5_000);
    const held = beats(true);
    assert.ok((held[0] as number) - leasedAt < 500, `first beat with the lease ${(held[0] as number) - leasedAt} ms`);
    assert.ok((held[2] as number) - (held[0] as number) < 500, `beats with the lease ${held.join(", ")}`);
  });

  it("shutdown aborts running attempts and reports a transient failure; a draining agent refuses leases", async () => {
    const sess = open();
    const s = await coord.stream(0);
    await waitFor("connected", () => sess.connected);
    coord.send(s, { $case: "lease", value: lease(8) });
    await waitFor("the attempt", () => ops.attempts.length === 1);
    sess.drain();
    coord.send(s, { $case: "lease", value: lease(9) });
    await waitFor("the refusal", () => of(s, "outcome").some((o) => o.token === "token-9"));
    const refused = of(s, "outcome").find((o) => o.token === "token-9");
    assert.equal(refused?.code, Status.UNAVAILABLE);
    assert.match(refused?.message ?? "", /agent agent-a is shutting down/);
    assert.equal(refused?.refused, true, "refused before any work: the coordinator gives the attempt back");
    assert.equal(ops.attempts.length, 1);

    await sess.stop(0);
    session = null;
    assert.equal(ops.attempts[0]?.signal?.aborted, true);
    const o = of(s, "outcome").find((x) => x.token === "token-8");
    assert.equal(o?.code, Status.UNAVAILABLE);
    assert.match(o?.message ?? "", /agent agent-a shut down during the attempt/);
    await waitFor("the stream's end", () => s.ended);
  });

  it("stop lets running attempts finish within the grace, and waits for the outcome's delivery", async () => {
    const sess = open();
    const s = await coord.stream(0);
    await waitFor("connected", () => sess.connected);
    coord.send(s, { $case: "lease", value: lease(10) });
    await waitFor("the attempt", () => ops.attempts.length === 1);
    const stopped = sess.stop(60_000);
    ops.attempts[0]?.resolve(BackupResult.fromPartial({ backupId: "backup-10" }));
    await stopped;
    session = null;
    assert.equal(ops.attempts[0]?.signal?.aborted, false);
    assert.equal(of(s, "outcome")[0]?.code, Status.OK);
  });

  it("answers calls with the operation's result or status", async () => {
    open();
    const s = await coord.stream(0);
    coord.send(s, {
      $case: "call",
      value: {
        callId: "c1",
        request: {
          $case: "probe",
          value: { pools: ["nope"], namespaces: [], image: undefined, keepOpen: false, checkTrash: false },
        },
      },
    });
    coord.send(s, { $case: "call", value: { callId: "c2", request: { $case: "check", value: { backupPool: "" } } } });
    coord.send(s, { $case: "call", value: { callId: "c3", request: undefined } });
    coord.send(s, {
      $case: "call",
      value: { callId: "c4", request: { $case: "digestMap", value: { backupId: "b1", pool: "p", namespace: "" } } },
    });
    await waitFor("four replies", () => of(s, "callReply").length === 4);
    const byId = new Map(of(s, "callReply").map((r) => [r.callId, r]));
    assert.equal(byId.get("c1")?.code, Status.OK);
    assert.equal(byId.get("c1")?.result?.$case, "probe");
    assert.deepEqual(
      [byId.get("c2")?.code, byId.get("c2")?.message],
      [Status.PERMISSION_DENIED, "no caps in this fake"],
    );
    assert.equal(byId.get("c3")?.code, Status.UNIMPLEMENTED);
    const c4 = byId.get("c4")?.result;
    assert.equal(c4?.$case, "digestMap");
    assert.deepEqual(c4?.$case === "digestMap" && Buffer.from(c4.value.map).toString(), "map of b1 in p");
  });

  it("fences the Ceph clients of earlier holders, never its own, before the attempt starts", async () => {
    open();
    const s = await coord.stream(0);
    coord.send(s, {
      $case: "lease",
      value: lease(11, { fenceClientAddrs: ["10.0.0.1:0/111", "10.0.0.2:0/222"], fenceSeconds: 0 }),
    });
    await waitFor("the attempt", () => ops.attempts.length === 1);
    assert.deepEqual(ops.fenced, [["10.0.0.2:0/222", 3600]]);
  });

  it("a lease naming no operation fails with UNIMPLEMENTED", async () => {
    open();
    const s = await coord.stream(0);
    coord.send(s, { $case: "lease", value: lease(12, { operation: undefined }) });
    await waitFor("the outcome", () => of(s, "outcome").length === 1);
    assert.equal(of(s, "outcome")[0]?.code, Status.UNIMPLEMENTED);
  });
});
