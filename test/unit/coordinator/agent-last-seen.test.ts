/**
 * An agent's last_seen and its leases' renewals cost no catalog write per heartbeat: the session keeps
 * last_seen in memory and writes it at most every LAST_SEEN_PERSIST_MS and at disconnect; ListAgents
 * shows a live session's; a heartbeat renews leases in memory only, and a restarted coordinator still
 * gives running leases one lease time (and the reconnect grace). The real session service, driven without gRPC; no Ceph.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "../../../src/common/errors";
import type { AgentRecord, JobRecord } from "../../../src/coordinator/model";
import { RECONNECT_GRACE_MS } from "../../../src/coordinator/scheduler/config";
import { AgentSession, LAST_SEEN_PERSIST_MS } from "../../../src/coordinator/sessions";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { agentRecord } from "../../helpers/fake-agent";
import { until } from "../../helpers/wait";
import { backupResult, Harness, openSession, vol } from "./harness";

/** The coordinator restarts, or leads again: a new scheduler over the same catalog starts (a new term). */
function newTerm(h: Harness): void {
  h.scheduler.stop();
  h.scheduler = h.newScheduler();
  h.scheduler.start();
}

describe("AgentSession.seen: last_seen written at most every LAST_SEEN_PERSIST_MS", () => {
  it("moves last_seen in memory; due only once the window passed; unsaved() reports the rest", () => {
    const t0 = 1_000_000;
    const s = new AgentSession(agentRecord("a1", "a", { lastSeen: t0 }));
    assert.equal(s.seen(t0 + 3_000), false);
    assert.equal(s.info.lastSeen, t0 + 3_000);
    assert.equal(s.seen(t0 + LAST_SEEN_PERSIST_MS - 1), false);
    assert.equal(s.seen(t0 + LAST_SEEN_PERSIST_MS), true);
    assert.equal(s.seen(t0 + LAST_SEEN_PERSIST_MS + 3_000), false);
    assert.equal(s.unsaved(), true, "the last beat is newer than the catalog's copy");
    assert.equal(s.unsaved(), false, "now written");
    assert.equal(s.seen(t0), true, "a clock that went back writes at once");
  });
});

describe("AgentSession.call with a cancelled signal", () => {
  it("already aborted: CANCELLED at once, nothing sent to the agent (it waited out its whole timeout)", async () => {
    const s = new AgentSession(agentRecord("a1", "a"));
    const sent: unknown[] = [];
    s.send = (m) => sent.push(m);
    const ac = new AbortController();
    ac.abort();
    const t0 = Date.now();
    await assert.rejects(s.call({ $case: "probe", value: {} } as never, "probe", 60_000, ac.signal), {
      status: Status.CANCELLED,
    });
    assert.ok(Date.now() - t0 < 5_000, "not after the timeout");
    assert.deepEqual(sent, []);
  });

  it("aborted while asked: CANCELLED, the answer's slot gone (a late answer is dropped)", async () => {
    const s = new AgentSession(agentRecord("a1", "a"));
    const sent: Array<{ value: { callId: string } }> = [];
    s.send = (m) => sent.push(m as never);
    const ac = new AbortController();
    const call = s.call({ $case: "probe", value: {} } as never, "probe", 60_000, ac.signal);
    assert.equal(sent.length, 1);
    ac.abort();
    await assert.rejects(call, { status: Status.CANCELLED });
    s.onCallReply({ callId: sent[0]?.value.callId ?? "", code: 0, message: "" } as never); // dropped, no throw
  });
});

describe("session service: heartbeats and the catalog", () => {
  let h: Harness;
  let writes: AgentRecord[];

  beforeEach(() => {
    h = new Harness();
    writes = [];
    const upsert = h.catalog.upsertAgent.bind(h.catalog);
    h.catalog.upsertAgent = (a) => {
      writes.push({ ...a });
      upsert(a);
    };
  });
  afterEach(() => h.close());

  it("a heartbeat inside the window writes nothing; the disconnect writes the last one", async () => {
    const { inbox, received, pump } = openSession(h, { cephClientAddrs: "v2:127.0.0.1:6800/1" });
    await until(() => received.length === 1, "Registered");
    assert.equal(writes.length, 1, "registration writes the agent");
    const registeredAt = writes[0]?.lastSeen ?? 0;
    for (let i = 0; i < 3; i++) {
      // The wall clock moves on (the session stamps last_seen with it): a condition, not a nap.
      const now = Date.now();
      await until(() => Date.now() > now, "the clock to move on");
      inbox.push({ msg: { $case: "heartbeat", value: { leases: [], draining: false } } });
      await until(() => received.length === 2 + i, `heartbeat ack ${i + 1}`);
    }
    assert.equal(writes.length, 1, "heartbeats inside the window write nothing");
    const live = h.sessions.get("a1");
    assert.ok(live && live.info.lastSeen > registeredAt, "the session's last_seen moved");
    assert.equal(h.catalog.listAgents()[0]?.lastSeen, registeredAt, "the catalog still holds the registration's");

    inbox.close();
    await pump;
    assert.equal(h.sessions.get("a1"), undefined);
    assert.equal(writes.length, 2, "the disconnect writes the last heartbeat");
    assert.equal(h.catalog.listAgents()[0]?.lastSeen, live.info.lastSeen);
  });
});

describe("lease renewals by heartbeat", () => {
  let h: Harness;
  afterEach(() => h.close());

  it("renew in memory (no job write); expiry still follows them; a restart gives one lease time", () => {
    h = new Harness();
    const a1 = h.connect("a1", "a");
    h.connect("b1", "b");
    const j = h.queueBackup(vol("v1"));
    h.tick();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_RUNNING);
    const issued = h.job(j.id).lease?.expiresAt;
    const updates: JobRecord[] = [];
    const update = h.catalog.updateJob.bind(h.catalog);
    h.catalog.updateJob = (x) => {
      updates.push(x);
      update(x);
    };
    for (let i = 0; i < 3; i++) {
      h.advance(h.cfg.leaseTtlMs - 1);
      assert.deepEqual(h.scheduler.onHeartbeat(a1, [a1.held(j.id)]), []);
      h.tick();
      assert.equal(h.job(j.id).state, JobState.JOB_STATE_RUNNING, `renewed by heartbeat ${i + 1}`);
    }
    assert.equal(updates.length, 0, "no heartbeat wrote the job");
    assert.equal(h.job(j.id).lease?.expiresAt, issued, "the catalog keeps the issued expiry");
    // Without a further heartbeat the renewed lease expires one lease time after the last one.
    h.advance(h.cfg.leaseTtlMs + 1);
    h.tick();
    assert.equal(h.job(j.id).attempts, 1);
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_QUEUED, "the attempt expired and waits for its retry");
    assert.ok(updates.length > 0, "the expiry is a state change, written");
  });

  it("a coordinator restarted after in-memory renewals gives the running lease one lease time and the reconnect grace", () => {
    h = new Harness();
    const a1 = h.connect("a1", "a");
    h.connect("b1", "b");
    const j = h.queueBackup(vol("v1"));
    h.tick();
    for (let i = 0; i < 3; i++) {
      h.advance(h.cfg.leaseTtlMs - 1);
      h.scheduler.onHeartbeat(a1, [a1.held(j.id)]);
    }
    newTerm(h);
    assert.equal(h.job(j.id).lease?.expiresAt, h.t + h.cfg.leaseTtlMs + RECONNECT_GRACE_MS);
    h.advance(h.cfg.leaseTtlMs + RECONNECT_GRACE_MS - 1);
    h.tick();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_RUNNING);
  });

  it("an agent that claimed its lease soon after one new term gets the grace again at the next (two failovers: not taken for dead, not fenced)", () => {
    h = new Harness();
    let a1 = h.connect("a1", "a");
    h.connect("b1", "b");
    const j = h.queueBackup(vol("v1"));
    h.tick();
    const held = a1.held(j.id);
    // Failover 1: the agent is back 10 s later (well inside the grace) and claims its lease.
    h.disconnect(a1);
    newTerm(h);
    h.advance(10_000);
    a1 = h.connect("a1", "a");
    assert.deepEqual(h.scheduler.onRegister(a1, [held], a1.info.cephClientAddrs), []);
    // Ten minutes of heartbeats (renewals in memory only).
    for (let i = 0; i < 200; i++) {
      h.advance(3_000);
      h.scheduler.onHeartbeat(a1, [held]);
      h.tick();
    }
    // Failover 2: the agent has not reached the new leader yet.
    h.disconnect(a1);
    newTerm(h);
    assert.equal(h.job(j.id).lease?.expiresAt, h.t + h.cfg.leaseTtlMs + RECONNECT_GRACE_MS, "graced again");
    h.tick();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_RUNNING);
    assert.deepEqual(h.job(j.id).fence ?? [], [], "the live agent is not fenced");
  });

  it("two coordinators with different lease times leading in turn give a dead agent's lease one grace, not one per term", () => {
    h = new Harness();
    h.connect("a1", "a");
    h.connect("b1", "b");
    const j = h.queueBackup(vol("v1"));
    h.tick();
    const base = h.cfg.leaseTtlMs;
    const first = h.job(j.id).lease?.token;
    const sameAttempt = () => h.job(j.id).state === JobState.JOB_STATE_RUNNING && h.job(j.id).lease?.token === first;
    let graced = 0;
    for (let i = 0; i < 100 && sameAttempt(); i++) {
      h.advance(3_000);
      h.cfg.leaseTtlMs = base + (i % 2) * 5_000; // coord-a, then coord-b, …
      newTerm(h);
      if (i === 0) graced = h.job(j.id).lease?.expiresAt ?? 0;
      h.tick();
    }
    h.cfg.leaseTtlMs = base;
    assert.equal(sameAttempt(), false, "the dead agent's attempt was given up");
    assert.ok(h.t <= graced + 3_000, `it ran out one grace after the first new term (${h.t - graced} ms late)`);
  });

  it("a leader that leads again every few seconds gives a dead agent's lease one grace, not one per term", () => {
    h = new Harness();
    h.connect("a1", "a");
    h.connect("b1", "b");
    const j = h.queueBackup(vol("v1"));
    h.tick();
    const leased = h.job(j.id).lease?.expiresAt ?? 0;
    // The agent dies (no heartbeat again); the coordinator's terms end and start every 3 s.
    h.advance(3_000);
    newTerm(h);
    const graced = h.job(j.id).lease?.expiresAt ?? 0;
    assert.equal(
      graced,
      h.t + h.cfg.leaseTtlMs + RECONNECT_GRACE_MS,
      "the first new term gives one lease time and the reconnect grace",
    );
    assert.ok(graced > leased);
    const first = h.job(j.id).lease?.token;
    const sameAttempt = () => h.job(j.id).state === JobState.JOB_STATE_RUNNING && h.job(j.id).lease?.token === first;
    for (let t = 0; t < 3 * (h.cfg.leaseTtlMs + RECONNECT_GRACE_MS) && sameAttempt(); t += 3_000) {
      h.advance(3_000);
      newTerm(h);
      h.tick();
    }
    assert.equal(sameAttempt(), false, "the dead agent's attempt was given up");
    assert.ok(h.t <= graced + 3_000, `it ran out one grace after the first new term (${h.t - graced} ms late)`);
  });

  it("a confirmation gets its full timeout again at one new term, not at each; again when it ran out while no coordinator ran", () => {
    h = new Harness();
    const a1 = h.connect("a1", "a");
    const b1 = h.connect("b1", "b");
    const j = h.queueBackup(vol("v1"));
    h.tick();
    // The backup is made, but no agent of the destination is there to confirm it.
    h.disconnect(b1);
    h.outcome(a1, j.id, Status.OK, "", { $case: "backup", value: backupResult(h.job(j.id).backupId) });
    const deadline = () => h.job(j.id).confirming?.deadline ?? 0;
    assert.ok(deadline() > 0, "awaiting its confirmation");
    h.advance(3_000);
    newTerm(h);
    const graced = deadline();
    assert.equal(graced, h.t + h.cfg.confirmTimeoutMs);
    h.advance(3_000);
    newTerm(h);
    assert.equal(deadline(), graced, "not pushed on by a second term");
    h.advance(h.cfg.confirmTimeoutMs); // no coordinator ran meanwhile: the deadline passed
    newTerm(h);
    assert.equal(deadline(), h.t + h.cfg.confirmTimeoutMs, "the destination's agents get their time again");
  });

  it("a live agent that registers again at each new term keeps its lease through them", () => {
    h = new Harness();
    const a1 = h.connect("a1", "a");
    h.connect("b1", "b");
    const j = h.queueBackup(vol("v1"));
    h.tick();
    const first = h.job(j.id).lease?.token;
    for (let i = 0; i < 12; i++) {
      h.advance(3_000);
      newTerm(h);
      h.advance(500);
      h.scheduler.onRegister(a1, [a1.held(j.id)]); // it reconnects to the new term and claims its lease
      h.tick();
    }
    assert.equal(h.job(j.id).lease?.token, first, "the same attempt, 42 s and 12 terms later");
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_RUNNING);
  });
});
