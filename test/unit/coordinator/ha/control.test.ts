/**
 * HaControl (src/coordinator/ha/control.ts): terms built and ended with leadership, on one SQLite
 * catalog shared by two "coordinators" whose writes are fenced by a fake lease (fake-lease.ts).
 * A deposed leader that writes is refused, steps down at once — term stopped, agent sessions closed —
 * and nothing it wrote commits.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import type { Catalog } from "../../../../src/coordinator/catalog/catalog";
import { FencedError, TermEndedError } from "../../../../src/coordinator/catalog/leader-lease";
import { parseCoordinatorConfig } from "../../../../src/coordinator/config";
import { HaControl, identity } from "../../../../src/coordinator/ha/control";
import { SchedulerRelay } from "../../../../src/coordinator/ha/scheduler-relay";
import { Term } from "../../../../src/coordinator/ha/term";
import { Sessions } from "../../../../src/coordinator/sessions";
import { CoordinatorRole } from "../../../../src/gen/rbdbackup/v1/backup_service";
import { agentRecord, FakeAgentSession } from "../../../helpers/fake-agent";
import { Harness, vol } from "../harness";
import { FakeLease, LeaseRow, leasedCatalog } from "./fake-lease";

const cfg = parseCoordinatorConfig(["--insecure"]);

function coordinator(h: Harness, catalog: Catalog) {
  const sessions = new Sessions();
  const relay = new SchedulerRelay(cfg.scheduler, sessions);
  /** The catalog each term was built over, oldest first. */
  const termCatalogs: Catalog[] = [];
  const ctl = new HaControl({
    catalog,
    sessions,
    relay,
    log: h.log,
    leaseMs: 5_000,
    renewMs: 1_000,
    newTerm: (c) => {
      termCatalogs.push(c);
      return new Term({ catalog: c, sessions, cfg, log: h.log });
    },
  });
  return { ctl, sessions, relay, termCatalogs };
}

describe("HaControl", () => {
  let h: Harness;
  const stops: Array<() => void> = [];
  beforeEach(() => {
    h = new Harness();
  });
  afterEach(() => {
    for (const s of stops.splice(0)) s();
    h.close();
  });

  it("a SQLite catalog: the only coordinator, one term from start to stop", () => {
    const { ctl, relay } = coordinator(h, h.catalog);
    ctl.start(identity({ id: "", advertise: "" }, "127.0.0.1:7300"));
    stops.push(() => ctl.stop());
    assert.equal(ctl.role, CoordinatorRole.COORDINATOR_ROLE_SINGLE);
    assert.ok(ctl.leading());
    assert.ok(relay.current, "the scheduler is attached");
    const s = ctl.status();
    assert.equal(s.role, CoordinatorRole.COORDINATOR_ROLE_SINGLE);
    assert.equal(s.catalog, "sqlite");
    assert.match(s.id, /:7300$/, "default id: <hostname>:<listen port>");
    assert.equal(s.address, "127.0.0.1:7300");
    assert.equal(s.leaderAddress, "127.0.0.1:7300");
    assert.equal(ctl.termSignal(), undefined, "calls are not bound to a term");
    ctl.stop();
    assert.equal(ctl.leading(), true, "never a standby: calls while draining run as before");
    assert.equal(relay.current, null);
  });

  /** Coordinators a (started first: it leads) and b on one catalog and one lease row; `clock.now` moves time. */
  function pair() {
    const clock = { now: Date.now() };
    const row = new LeaseRow(() => clock.now);
    const a = coordinator(h, leasedCatalog(h.catalog, new FakeLease(row), "a"));
    const b = coordinator(h, leasedCatalog(h.catalog, new FakeLease(row), "b"));
    a.ctl.start({ id: "a", address: "127.0.0.1:1", instance: "a-1" });
    b.ctl.start({ id: "b", address: "127.0.0.1:2", instance: "b-1" });
    stops.push(
      () => a.ctl.stop(),
      () => b.ctl.stop(),
    );
    return { a, b, clock };
  }

  it("a deposed leader's write is fenced: it steps down at once, its sessions close, nothing commits", () => {
    const { a, b, clock } = pair();
    assert.equal(a.ctl.role, CoordinatorRole.COORDINATOR_ROLE_LEADER);
    assert.equal(b.ctl.role, CoordinatorRole.COORDINATOR_ROLE_STANDBY);
    assert.equal(b.ctl.leading(), false);
    assert.deepEqual(b.ctl.leader(), { id: "a", address: "127.0.0.1:1" });
    // An agent is connected to a; a job is queued.
    const agent = new FakeAgentSession(agentRecord("agent-a", "a"));
    a.sessions.add(agent);
    const job = h.queueBackup(vol("v1"));
    const signal = a.ctl.termSignal();
    assert.ok(signal && !signal.aborted);

    // a pauses (its loop does not run); its lease lapses; b takes over.
    clock.now += 6_000;
    b.ctl.leadership?.check();
    assert.equal(b.ctl.role, CoordinatorRole.COORDINATOR_ROLE_LEADER);
    assert.equal(b.ctl.status().fencingToken, 2);

    // a, resumed, writes before its loop runs: refused, and it steps down at once.
    const before = h.catalog.getJob(job.id);
    const changed = { ...job, waitingReason: "written by the deposed leader" };
    assert.throws(() => a.ctl.catalog.updateJob(changed), FencedError);
    assert.equal(a.ctl.role, CoordinatorRole.COORDINATOR_ROLE_STANDBY);
    assert.equal(a.ctl.leading(), false);
    assert.equal(a.ctl.term, null);
    assert.equal(a.relay.current, null, "no scheduler: nothing is dispatched");
    assert.ok(signal.aborted, "leader-only calls in flight are ended");
    assert.equal(a.sessions.all().length, 0, "agent sessions are dropped");
    assert.ok(agent.out.closed, "and closed");
    assert.deepEqual(h.catalog.getJob(job.id), before, "nothing the deposed leader wrote committed");
    const st = a.ctl.status();
    assert.equal(st.role, CoordinatorRole.COORDINATOR_ROLE_STANDBY);
    assert.equal(st.leaderId, "b");
    assert.equal(st.leaderAddress, "127.0.0.1:2");
    assert.deepEqual(a.ctl.leader(), { id: "b", address: "127.0.0.1:2" });
    assert.ok(
      h.log.lines.some((l) => l.level === "error" && /fenced/.test(l.msg)),
      "the FencedError is logged",
    );
  });

  it("work an ended term left running cannot write when the same coordinator leads again (a new term)", () => {
    const { a, b, clock } = pair();
    const job = h.queueBackup(vol("v1"));
    const [first] = a.termCatalogs;
    assert.ok(first, "a's first term");
    // a pauses; b takes over; a steps down (a fenced write), then b stops and a leads again: a new term.
    clock.now += 6_000;
    b.ctl.leadership?.check();
    assert.throws(() => a.ctl.catalog.updateJob({ ...job }), FencedError);
    assert.equal(a.ctl.term, null);
    b.ctl.stop();
    a.ctl.leadership?.check();
    assert.equal(a.ctl.role, CoordinatorRole.COORDINATOR_ROLE_LEADER, "a leads again");
    assert.equal(a.termCatalogs.length, 2, "a second term");
    const second = a.termCatalogs[1] as Catalog;
    // The first term's leftover work (an answer it awaited, a tick in flight) writes now: refused, for
    // reads and writes alike, without a step-down; the second term's own writes commit.
    const before = h.catalog.getJob(job.id);
    assert.throws(() => first.updateJob({ ...job, waitingReason: "the first term's leftover" }), TermEndedError);
    assert.throws(() => first.getJob(job.id), TermEndedError);
    assert.throws(() => first.policies.allPolicies(), TermEndedError, "the policy store too");
    assert.deepEqual(h.catalog.getJob(job.id), before, "nothing of the ended term committed");
    assert.equal(a.ctl.role, CoordinatorRole.COORDINATOR_ROLE_LEADER, "the current term is not stepped down");
    second.updateJob({ ...(before as NonNullable<typeof before>), waitingReason: "the second term" });
    assert.equal(h.catalog.getJob(job.id)?.waitingReason, "the second term");
  });
});
