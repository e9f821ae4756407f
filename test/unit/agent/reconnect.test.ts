/**
 * The session's reconnect loop against fake coordinators: with one that refuses every stream the waits
 * grow exponentially (src/common/retry.ts's backoff) and stop() ends a wait at once; with several
 * addresses a failed dial or a lost session moves to the next address, and the backoff waits only
 * between full rounds. No sleeps.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { describe, it } from "node:test";
import { CoordinatorSession, type SessionIdentity } from "../../../agents/agent/session";
import { labTls } from "../../../src/lab/agent-process";
import { FakeCoordinator, FakeOps, recordingLogger, waitFor } from "./fakes";

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

/** A loopback address nothing listens on (a port just released). */
async function deadAddress(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

function sessionOn(addresses: string[], log = recordingLogger()): CoordinatorSession {
  return new CoordinatorSession(
    addresses,
    { insecure: true },
    identity,
    new FakeOps(),
    log,
    {},
    {
      reconnect: { baseMs: 1, maxMs: 8, jitter: 0 },
      tickMs: 10,
      wait: async () => {},
    },
  );
}

describe("coordinator session: several coordinator addresses", () => {
  it("the first refuses, the second serves: registers with the second; the second dies: back to the first", async () => {
    const first = await new FakeCoordinator().start();
    const second = await new FakeCoordinator().start();
    first.refuse = true;
    const log = recordingLogger();
    const session = sessionOn([first.address, second.address], log);
    try {
      session.start();
      await waitFor("registered with the second", () => session.connected && session.address === second.address);
      assert.equal(first.refused, 1);
      assert.equal(FakeCoordinator.of(await second.stream(0), "register")[0]?.agentId, "agent-a");

      first.refuse = false;
      await second.stop();
      await waitFor("registered with the first", () => session.connected && session.address === first.address);
      const reg = FakeCoordinator.of(await first.stream(0), "register");
      assert.deepEqual(
        reg.map((r) => r.agentId),
        ["agent-a"],
      );
      assert.ok(log.lines.includes("dialing the coordinator"), "the address dialed is logged");
    } finally {
      await session.stop(0);
      await first.stop();
      await second.stop();
    }
  });

  it("a standby names the leader (rbdbackup-leader): dialed next, past the addresses between", async () => {
    const leader = await new FakeCoordinator().start();
    const other = await new FakeCoordinator().start();
    const standby = await new FakeCoordinator().start();
    standby.standbyOf = leader.address;
    other.refuse = true;
    const session = sessionOn([standby.address, other.address, leader.address]);
    try {
      session.start();
      await waitFor("registered with the leader", () => session.connected && session.address === leader.address);
      assert.equal(standby.refused, 1);
      assert.equal(other.refused, 0, "the address between was not dialed");
    } finally {
      await session.stop(0);
      await Promise.all([leader.stop(), other.stop(), standby.stop()]);
    }
  });

  it("a leader that is not in the list is dialed too", async () => {
    const leader = await new FakeCoordinator().start();
    const standby = await new FakeCoordinator().start();
    standby.standbyOf = leader.address;
    const session = sessionOn([standby.address, await deadAddress()]);
    try {
      session.start();
      await waitFor("registered with the named leader", () => session.connected && session.address === leader.address);
      assert.equal(standby.refused, 1);
    } finally {
      await session.stop(0);
      await Promise.all([leader.stop(), standby.stop()]);
    }
  });

  it("a dial that fails (nothing listens) moves to the next address", async () => {
    const coord = await new FakeCoordinator().start();
    const session = sessionOn([await deadAddress(), coord.address]);
    try {
      session.start();
      await waitFor("registered with the live address", () => session.connected);
      assert.equal(session.address, coord.address);
      assert.equal(coord.streams.length, 1);
    } finally {
      await session.stop(0);
      await coord.stop();
    }
  });

  it("backs off only between full rounds, trying every address in turn", async () => {
    const a = await new FakeCoordinator().start();
    const b = await new FakeCoordinator().start();
    a.refuse = true;
    b.refuse = true;
    // Each wait records its delay and the refusals (per address) seen before it.
    const waits: Array<[number, number, number]> = [];
    const session = new CoordinatorSession(
      [a.address, b.address],
      { insecure: true },
      identity,
      new FakeOps(),
      recordingLogger(),
      {},
      {
        reconnect: { baseMs: 1, maxMs: 8, jitter: 0 },
        wait: async (ms) => {
          waits.push([ms, a.refused, b.refused]);
        },
      },
    );
    try {
      session.start();
      await waitFor("three full rounds", () => waits.length >= 3);
      assert.deepEqual(waits.slice(0, 3), [
        [1, 1, 1],
        [2, 2, 2],
        [4, 3, 3],
      ]);
      assert.equal(session.connected, false);
    } finally {
      await session.stop(0);
      await a.stop();
      await b.stop();
    }
  });
});

describe("coordinator session: reconnecting", () => {
  it("backs off exponentially while the coordinator refuses, and stops on stop()", async () => {
    const coord = await new FakeCoordinator().start();
    coord.refuse = true;
    const waits: number[] = [];
    const session = new CoordinatorSession(
      [coord.address],
      { insecure: true },
      identity,
      new FakeOps(),
      recordingLogger(),
      {},
      {
        reconnect: { baseMs: 1, maxMs: 8, jitter: 0 },
        wait: async (ms) => {
          waits.push(ms);
        },
      },
    );
    try {
      session.start();
      await waitFor("six refusals", () => coord.refused >= 6);
      assert.deepEqual(waits.slice(0, 5), [1, 2, 4, 8, 8]);
      assert.equal(session.connected, false);
    } finally {
      await session.stop(0);
      await coord.stop();
    }
  });

  it("stop() ends a long backoff wait at once", async () => {
    const coord = await new FakeCoordinator().start();
    coord.refuse = true;
    const log = recordingLogger();
    const session = new CoordinatorSession(
      [coord.address],
      { insecure: true },
      identity,
      new FakeOps(),
      log,
      {},
      { reconnect: { baseMs: 600_000, maxMs: 600_000, jitter: 0 } },
    );
    try {
      session.start();
      await waitFor("the first failure", () => log.lines.includes("coordinator session failed"));
      const t = Date.now();
      await session.stop(0);
      assert.ok(Date.now() - t < 5_000, "stop waited for the backoff");
      assert.equal(coord.refused, 1, "no dial after stop");
    } finally {
      await coord.stop();
    }
  });
});

describe("coordinator session: a coordinator whose certificate the agent revoked", () => {
  it("is refused in the handshake; let in once unlisted; listed again, dropRevoked() ends the session and its reconnects are refused", async () => {
    const coordTls = labTls("coordinator");
    const fp = new X509Certificate(readFileSync(coordTls.cert as string)).fingerprint256
      .replaceAll(":", "")
      .toLowerCase();
    const coord = await new FakeCoordinator().start(coordTls);
    const revoked = new Set([fp]);
    const refusals: Array<{ address: string; identity: string }> = [];
    const session = new CoordinatorSession(
      [coord.address],
      labTls("agent-site-a"),
      { ...identity, agentId: "agent-site-a" },
      new FakeOps(),
      recordingLogger(),
      {},
      {
        reconnect: { baseMs: 20, maxMs: 50, jitter: 0 },
        tickMs: 10,
        revoked,
        onRevoked: (address, _message, who) => refusals.push({ address, identity: who }),
      },
    );
    try {
      session.start();
      await waitFor("the handshake refused", () => refusals.length >= 1);
      assert.deepEqual(refusals[0], { address: coord.address, identity: "rbdbackup://coordinator/lab" });
      assert.equal(coord.streams.length, 0, "no stream reached the coordinator");

      revoked.clear();
      await waitFor("registered once unlisted", () => session.connected);
      assert.deepEqual(session.dropRevoked(), { closed: [], ended: null }, "nothing listed: nothing dropped");
      assert.ok(session.connected);

      revoked.add(fp);
      const before = refusals.length;
      assert.deepEqual(session.dropRevoked(), {
        closed: [coord.address],
        ended: { address: coord.address, identity: "rbdbackup://coordinator/lab" },
      });
      await waitFor("the session ended", () => !session.connected && coord.streams.every((s) => s.ended));
      await waitFor("a reconnect refused in the handshake", () => refusals.length > before);
      assert.equal(coord.streams.length, 1, "no second stream");
    } finally {
      await session.stop(0);
      await coord.stop();
    }
  });
});
