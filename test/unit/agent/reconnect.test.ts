/**
 * The session's reconnect loop against a fake coordinator that refuses every stream: the waits grow
 * exponentially (src/common/retry.ts's backoff), and stop() ends a wait at once. No sleeps.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CoordinatorSession, type SessionIdentity } from "../../../agents/agent/session";
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

describe("coordinator session: reconnecting", () => {
  it("backs off exponentially while the coordinator refuses, and stops on stop()", async () => {
    const coord = await new FakeCoordinator().start();
    coord.refuse = true;
    const waits: number[] = [];
    const session = new CoordinatorSession(
      coord.address,
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
      coord.address,
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
