/**
 * The scale benches' simulated agents (test/bench/sim-agents.ts: api-load, policy-scale) against a real
 * coordinator process (no Ceph): they must pass its Register checks, or every such bench times out
 * waiting for them — as both did once Register began to check ceph_client_addrs, unnoticed, because no
 * test ran them.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { type CoordinatorProcess, startCoordinatorProcess } from "../../../src/lab/coordinator-process";
import { type SimAgent, SimWorld, startSimAgent } from "../../bench/sim-agents";
import { waitFor } from "../../helpers/wait";

describe("simulated agents of the scale benches", () => {
  let coord: CoordinatorProcess | undefined;
  const agents: SimAgent[] = [];
  after(async () => {
    await Promise.all(agents.map((a) => a.session.stop(0)));
    await coord?.stop();
  });

  it("register with a real coordinator and stay connected", async () => {
    coord = await startCoordinatorProcess({ insecure: true });
    const c = coord;
    const world = new SimWorld();
    for (const [agentId, cluster] of [
      ["sim-a-1", "site-a"],
      ["sim-b-1", "site-b"],
    ] as const) {
      agents.push(
        startSimAgent(world, {
          agentId,
          cluster,
          coordinator: c.address,
          tls: { insecure: true },
          capacity: 2,
          backupMs: 10,
        }),
      );
    }
    let seen = "";
    await waitFor(
      async () => {
        const r = await c.client.listAgents({});
        seen = JSON.stringify(r.agents.map((a) => [a.agentId, a.connected]));
        return r.agents.filter((a) => a.connected).length === 2;
      },
      { what: () => `both simulated agents connected (seen ${seen})`, timeoutMs: 20_000 },
    );
    assert.equal(world.counts.warnings, 0, "no session failed");
  });
});
