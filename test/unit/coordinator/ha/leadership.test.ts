/**
 * The leadership loop (src/coordinator/ha/leadership.ts) on a fake clock and an in-memory lease row:
 * who leads, when a standby takes over, and each way a leader steps down at once.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FencedError, type LeaderRecord } from "../../../../src/coordinator/catalog/leader-lease";
import { Leadership, stepDownMargin } from "../../../../src/coordinator/ha/leadership";
import { memoryLogger } from "../harness";
import { FakeLease, LeaseRow } from "./fake-lease";

const LEASE_MS = 5_000;
const RENEW_MS = 1_000;

function world() {
  let now = 1_000_000;
  const row = new LeaseRow(() => now);
  const events: string[] = [];
  const make = (id: string, instance = `${id}-1`, onLead?: (r: LeaderRecord) => void) => {
    const lease = new FakeLease(row);
    const l = new Leadership({
      lease,
      me: { id, address: `${id}.example:7300`, instance },
      leaseMs: LEASE_MS,
      renewMs: RENEW_MS,
      log: memoryLogger(),
      now: () => now,
      onLead: (r) => {
        onLead?.(r);
        events.push(`${id} leads (token ${r.token})`);
      },
      onStepDown: (reason) => events.push(`${id} steps down: ${reason}`),
    });
    return { l, lease };
  };
  return { row, events, make, advance: (ms: number) => (now += ms) };
}

describe("leadership loop", () => {
  it("the first coordinator leads; the other stands by and names it", () => {
    const w = world();
    const a = w.make("a");
    const b = w.make("b");
    a.l.check();
    b.l.check();
    assert.equal(a.l.role, "leader");
    assert.equal(a.l.token, 1);
    assert.equal(b.l.role, "standby");
    assert.deepEqual(b.l.leader(), { id: "a", address: "a.example:7300" });
    assert.deepEqual(w.events, ["a leads (token 1)"]);
  });

  it("a dead leader is replaced once its lease lapses; resumed, it steps down and does not lead again", () => {
    const w = world();
    const a = w.make("a");
    const b = w.make("b");
    a.l.check();
    // a stops renewing (killed or paused); b keeps trying every second.
    let tookOverAfter = 0;
    for (let t = RENEW_MS; t <= 3 * LEASE_MS && b.l.role !== "leader"; t += RENEW_MS) {
      w.advance(RENEW_MS);
      b.l.check();
      tookOverAfter = t;
    }
    assert.equal(b.l.role, "leader");
    assert.equal(b.l.token, 2, "a change of holder increments the fencing token");
    assert.ok(tookOverAfter <= LEASE_MS + RENEW_MS, `took over after ${tookOverAfter} ms`);
    // a resumes: it finds the lease lapsed by its own clock and steps down before asking again.
    a.l.check();
    assert.equal(a.l.role, "standby");
    assert.deepEqual(a.l.leader(), { id: "b", address: "b.example:7300" });
    assert.match(w.events.join("\n"), /a steps down: no renewal of the leader lease for \d+ ms/);
  });

  it("a grant whose answer comes after the lease may have lapsed is not counted: never two leaders", () => {
    const w = world();
    const a = w.make("a");
    a.l.check();
    assert.equal(a.l.role, "leader");
    // The renewal runs in the database at once, but its answer takes 6 s (a slow network or database).
    const granted = a.lease.tryAcquire.bind(a.lease);
    w.advance(RENEW_MS);
    a.lease.tryAcquire = (me, ttl) => {
      const r = granted(me, ttl);
      w.advance(6_000);
      return r;
    };
    a.l.check();
    a.lease.tryAcquire = granted;
    const b = w.make("b");
    b.l.check();
    assert.equal(b.l.role, "leader", "the lease lapsed: b takes it");
    assert.equal(a.l.role, "standby", "a does not count the late grant");
    assert.match(w.events.join("\n"), /a steps down: the renewal of the leader lease answered after 6000 ms/);

    // A standby that gets a late grant does not lead on it either.
    const c = w.make("c");
    w.advance(LEASE_MS + 1);
    c.lease.tryAcquire = (me, ttl) => {
      const r = FakeLease.prototype.tryAcquire.call(c.lease, me, ttl);
      w.advance(6_000);
      return r;
    };
    c.l.check();
    assert.equal(c.l.role, "standby");
  });

  it("a late grant is given up: the next round leads again under a new token, not the old term's", () => {
    const w = world();
    const a = w.make("a");
    a.l.check();
    const granted = a.lease.tryAcquire.bind(a.lease);
    w.advance(RENEW_MS);
    // Queued 3 s in the database, granted, answered 1.5 s later: too late to count, though the lease
    // (from the grant) still runs when the next round asks.
    a.lease.tryAcquire = (me, ttl) => {
      w.advance(3_000);
      const r = granted(me, ttl);
      w.advance(1_500);
      return r;
    };
    a.l.check();
    a.lease.tryAcquire = granted;
    assert.equal(a.l.role, "standby");
    w.advance(RENEW_MS);
    a.l.check();
    assert.equal(a.l.role, "leader");
    assert.equal(a.l.token, 2, "a new term, a new token");
  });

  it("a leader whose renewal fails only after its statement timeout steps down as that try returns, not a round later", () => {
    const w = world();
    const a = w.make("a");
    a.l.check();
    assert.equal(a.l.role, "leader");
    w.advance(RENEW_MS);
    // The database does not answer: the try fails after 10 s (catalog.statementTimeoutMs), past the lease.
    w.row.failing = true;
    w.row.onFail = () => w.advance(10_000);
    a.l.check();
    assert.equal(a.l.role, "standby", "stepped down: a standby may lead by now");
    assert.match(w.events.join("\n"), /a steps down: no renewal of the leader lease for 11000 ms/);
  });

  it("a leader that stepped down for failed renewals leads again under a new token, not the old term's, while its lease was still valid in the database", () => {
    const w = world();
    const a = w.make("a");
    a.l.check();
    w.row.failing = true;
    for (let i = 0; i < 3; i++) {
      w.advance(RENEW_MS);
      a.l.check();
    }
    w.row.failing = false;
    w.advance(RENEW_MS + 100); // past the margin by a's clock, yet inside the lease the row holds
    a.l.check();
    assert.deepEqual(w.events.slice(0, 1), ["a leads (token 1)"]);
    assert.match(w.events[1] ?? "", /a steps down: no renewal of the leader lease/);
    assert.equal(a.l.role, "standby", "granted the ended term's lease (token 1): given up, not led under");
    w.advance(RENEW_MS);
    a.l.check();
    assert.equal(a.l.role, "leader");
    assert.equal(a.l.token, 2, "a new term has a new token");
    assert.deepEqual(w.events.slice(2), ["a leads (token 2)"]);
  });

  it("stopped after it stepped down for failed renewals, it gives up the lease the database still holds for it: a standby leads at once", () => {
    const w = world();
    const a = w.make("a");
    const b = w.make("b");
    a.l.check();
    w.row.failing = true;
    for (let i = 0; i < 10 && a.l.role === "leader"; i++) {
      w.advance(RENEW_MS);
      a.l.check();
    }
    assert.equal(a.l.role, "standby", "stepped down: no renewal for nearly a lease");
    w.row.failing = false;
    b.l.check();
    assert.equal(b.l.role, "standby", "the lease has not lapsed yet");
    a.l.stop();
    b.l.check();
    assert.equal(b.l.role, "leader", "no wait for the lapse");
    assert.equal(b.l.token, 2);
  });

  it("a leader whose record names another holder steps down at once", () => {
    const w = world();
    const a = w.make("a");
    a.l.check();
    w.row.record = { holder: "c", instance: "c-1", address: "c:1", token: 7, expiresAt: w.row.now() + LEASE_MS };
    w.advance(RENEW_MS);
    a.l.check();
    assert.equal(a.l.role, "standby");
    assert.match(w.events.at(-1) ?? "", /a steps down: the leader lease is held by c \(c:1\)/);
  });

  it("failed renewals: the leader steps down leaseMs - margin after its last renewal, before a standby may lead", () => {
    const w = world();
    const a = w.make("a");
    a.l.check();
    w.row.failing = true;
    const limit = LEASE_MS - stepDownMargin(LEASE_MS, RENEW_MS);
    let steppedDownAt = 0;
    for (let t = RENEW_MS; t <= LEASE_MS && !steppedDownAt; t += RENEW_MS) {
      w.advance(RENEW_MS);
      a.l.check();
      if (a.l.role === "standby") steppedDownAt = t;
    }
    assert.equal(steppedDownAt, limit, "steps down at the first check past the limit");
    assert.ok(steppedDownAt < LEASE_MS);
    // The database is back and nobody took over: it leads again, a new term.
    w.row.failing = false;
    w.advance(RENEW_MS);
    a.l.check();
    assert.equal(a.l.role, "leader");
    assert.deepEqual(
      w.events.filter((e) => e.startsWith("a leads")),
      ["a leads (token 1)", "a leads (token 2)"],
    );
  });

  it("two processes with one ha.id: the second waits for the lease to lapse, then leads with a new token that fences the first", () => {
    const w = world();
    const a = w.make("a");
    const twin = w.make("a", "a-2");
    a.l.check();
    twin.l.check();
    assert.equal(a.l.role, "leader");
    assert.equal(twin.l.role, "standby", "the same id is not the same holder");
    assert.deepEqual(twin.l.leader(), { id: "a", address: "a.example:7300" });
    assert.equal(w.row.record?.token, 1);
    // The first stops renewing (its node was cut off): once the lease lapses the twin takes it.
    w.advance(LEASE_MS + 1);
    twin.l.check();
    assert.equal(twin.l.role, "leader");
    assert.equal(w.row.record?.token, 2, "a new token: the first process's writes are fenced");
    assert.throws(() => a.lease.fence("a"), FencedError);
    a.l.check();
    assert.equal(a.l.role, "standby");
  });

  it("the wall clock stepped back does not stretch the leadership: the lapse check runs on the monotonic clock", () => {
    let wall = 1_000_000;
    let mono = 50;
    const row = new LeaseRow(() => wall);
    const events: string[] = [];
    const l = new Leadership({
      lease: new FakeLease(row),
      me: { id: "a", address: "a:1", instance: "a-1" },
      leaseMs: LEASE_MS,
      renewMs: RENEW_MS,
      log: memoryLogger(),
      now: () => wall,
      monotonic: () => mono,
      onLead: () => events.push("leads"),
      onStepDown: (reason) => events.push(`steps down: ${reason}`),
    });
    l.check();
    assert.equal(l.role, "leader");
    row.failing = true; // the database is unreachable: no renewal from here on
    wall -= 3_600_000; // NTP steps the wall clock back an hour
    mono += LEASE_MS; // while the lease's time passes
    l.check();
    assert.equal(l.role, "standby");
    assert.match(events.at(-1) ?? "", /steps down: no renewal of the leader lease for \d+ ms/);
  });

  it("lapsed(): a leader paused past its lease says so when asked, before any timer runs, and the round it asks for steps down", async () => {
    let mono = 50;
    const row = new LeaseRow(() => 1_000_000 + mono);
    const events: string[] = [];
    const l = new Leadership({
      lease: new FakeLease(row),
      me: { id: "a", address: "a:1", instance: "a-1" },
      leaseMs: LEASE_MS,
      renewMs: RENEW_MS, // its timer: a real second, after this test's steps
      log: memoryLogger(),
      now: () => 1_000_000 + mono,
      monotonic: () => mono,
      onLead: () => events.push("leads"),
      onStepDown: (reason) => events.push(`steps down: ${reason}`),
    });
    try {
      l.start();
      assert.equal(l.role, "leader");
      assert.equal(l.lapsed(), false);
      mono += LEASE_MS - stepDownMargin(LEASE_MS, RENEW_MS) - 1;
      assert.equal(l.lapsed(), false, "just inside the lease");
      row.failing = true; // and the database does not answer the next round
      mono += 2; // the pause ends past the lease
      assert.equal(l.lapsed(), true);
      assert.equal(l.role, "leader", "not stepped down inside the caller");
      assert.equal(l.leader(), undefined, "refusals meanwhile do not send callers back to it");
      await new Promise((r) => setImmediate(r));
      assert.equal(l.role, "standby");
      assert.match(events.at(-1) ?? "", /steps down: no renewal of the leader lease/);
    } finally {
      l.stop();
    }
  });

  it("a term that fails to start (the catalog fails in onLead) steps down and gives the lease up; the next round leads", () => {
    const w = world();
    let failing = true;
    const a = w.make("a", "a-1", () => {
      if (failing) throw new Error("database unreachable (fake)");
    });
    assert.doesNotThrow(() => a.l.check());
    assert.equal(a.l.role, "standby");
    assert.match(w.events.join("\n"), /a steps down: starting the term failed: database unreachable/);
    assert.equal(w.row.record?.holder, "", "the lease was given up");
    failing = false;
    w.advance(RENEW_MS);
    a.l.check();
    assert.equal(a.l.role, "leader");
  });

  it("a fenced write makes the leader step down at once and learn the new leader", () => {
    const w = world();
    const a = w.make("a");
    a.l.check();
    w.row.record = { holder: "b", instance: "b-1", address: "b:2", token: 2, expiresAt: w.row.now() + LEASE_MS };
    a.l.fenced(new FencedError(1));
    assert.equal(a.l.role, "standby");
    assert.deepEqual(a.l.leader(), { id: "b", address: "b:2" });
    assert.match(w.events.at(-1) ?? "", /fenced \(token 1 is no longer current\)/);
    a.l.fenced(new FencedError(1)); // idempotent
    assert.equal(w.events.filter((e) => e.includes("steps down")).length, 1);
  });

  it("stop() gives the lease up: a standby leads at its next try, without waiting for the lapse", () => {
    const w = world();
    const a = w.make("a");
    const b = w.make("b");
    a.l.check();
    a.l.stop();
    assert.equal(a.l.role, "standby");
    w.advance(10);
    b.l.check();
    assert.equal(b.l.role, "leader");
  });

  it("refuses a renewal interval above a third of the lease", () => {
    const w = world();
    assert.throws(
      () =>
        new Leadership({
          lease: new FakeLease(w.row),
          me: { id: "a", address: "a:1", instance: "a-1" },
          leaseMs: 2_000,
          renewMs: 1_000,
          log: memoryLogger(),
          onLead: () => {},
          onStepDown: () => {},
        }),
      /ha.renewMs \(1000 ms\) must be at most a third of ha.leaseSeconds/,
    );
  });
});
