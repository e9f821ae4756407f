/**
 * ForgetAgent through the real API handlers, without Ceph (the unit harness: a real SQLite catalog, fake
 * agent sessions): a retired agent's record leaves the catalog, and with it ListAgents and the cluster's
 * agents_connected series; refused (FAILED_PRECONDITION, nothing removed) while the agent is connected
 * or a job's lease names it; NOT_FOUND for an unknown agent or the wrong cluster; INVALID_ARGUMENT for a
 * malformed id. (Who may call it: test/integration/coordinator/authz.test.ts.)
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { CoordinatorMetrics } from "../../../src/coordinator/metrics";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { type Api, type ApiServer, assertStatus, serveHarness } from "./api-server";
import { Harness, vol } from "./harness";

describe("ForgetAgent (API, fake agents)", () => {
  let h: Harness;
  let served: ApiServer;
  let api: Api;
  let metrics: CoordinatorMetrics;

  before(async () => {
    h = new Harness();
    served = await serveHarness(h);
    api = served.api;
    metrics = new CoordinatorMetrics("test", h.catalog, h.sessions, h.scheduler);
  });
  after(async () => {
    await served.close();
    h.close();
  });

  const known = () => h.catalog.listAgents().map((a) => a.agentId);
  const connectedSeries = async () =>
    (await metrics.registry.getSingleMetricAsString("rbdbackup_agents_connected"))
      .split("\n")
      .filter((l) => l.startsWith("rbdbackup_agents_connected{"));

  it("bad input: INVALID_ARGUMENT naming the field; unknown agent or another cluster: NOT_FOUND", async () => {
    h.connect("keep", "a");
    await assertStatus(api.forgetAgent({ cluster: "", agentId: "x" }), Status.INVALID_ARGUMENT, /^cluster is required/);
    await assertStatus(api.forgetAgent({ cluster: "a", agentId: "a/b" }), Status.INVALID_ARGUMENT, /^agent_id "a\/b"/);
    await assertStatus(
      api.forgetAgent({ cluster: "a", agentId: "nobody" }),
      Status.NOT_FOUND,
      /no agent nobody of cluster a/,
    );
    await assertStatus(
      api.forgetAgent({ cluster: "z", agentId: "keep" }),
      Status.NOT_FOUND,
      /\(agent keep is of cluster a\)/,
    );
    assert.ok(known().includes("keep"));
  });

  it("a connected agent is refused, then forgotten once stopped: out of ListAgents and agents_connected", async () => {
    const s = h.connect("old", "retired");
    await assertStatus(
      api.forgetAgent({ cluster: "retired", agentId: "old" }),
      Status.FAILED_PRECONDITION,
      /is connected: stop it first/,
    );
    assert.ok(known().includes("old"), "nothing removed");
    h.disconnect(s);
    assert.ok(
      (await connectedSeries()).includes('rbdbackup_agents_connected{cluster="retired"} 0'),
      "a retired cluster reads 0",
    );
    const r = await api.forgetAgent({ cluster: "retired", agentId: "old" });
    assert.equal(r.agent?.agentId, "old");
    assert.equal(r.agent?.connected, false);
    assert.equal(known().includes("old"), false);
    assert.equal(
      (await api.listAgents({})).agents.some((a) => a.agentId === "old"),
      false,
    );
    assert.equal(
      (await connectedSeries()).some((l) => l.includes('cluster="retired"')),
      false,
      "no series for a cluster without known agents",
    );
    await assertStatus(api.forgetAgent({ cluster: "retired", agentId: "old" }), Status.NOT_FOUND, /no agent old/);
  });

  it("an id registered without a certificate identity (':' and '@' allowed there) can be forgotten", async () => {
    const s = h.connect("host:7001@dc1", "retired2");
    h.disconnect(s);
    const r = await api.forgetAgent({ cluster: "retired2", agentId: "host:7001@dc1" });
    assert.equal(r.agent?.agentId, "host:7001@dc1");
    assert.equal(known().includes("host:7001@dc1"), false);
  });

  it("an agent a job's lease names is refused until the lease has expired", async () => {
    const src = h.connect("src1", "s");
    h.connect("dst1", "b");
    const job = h.queueBackup(vol("v1", "s"));
    h.tick();
    assert.equal(h.job(job.id).lease?.agentId, "src1", "leased to the source's agent");
    h.disconnect(src);
    await assertStatus(
      api.forgetAgent({ cluster: "s", agentId: "src1" }),
      Status.FAILED_PRECONDITION,
      new RegExp(`holds the lease of job ${job.id}`),
    );
    assert.ok(known().includes("src1"), "nothing removed");
    h.advance(60_000); // past the lease
    h.tick();
    await h.settle();
    assert.notEqual(h.job(job.id).lease?.agentId, "src1", `lease gone (job ${JobState[h.job(job.id).state]})`);
    await api.forgetAgent({ cluster: "s", agentId: "src1" });
    assert.equal(known().includes("src1"), false);
  });
});
