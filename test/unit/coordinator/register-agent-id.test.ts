/**
 * One agent id serves one cluster: an agent of another cluster registering under an id the catalog
 * knows for its own cluster is refused FAILED_PRECONDITION (reason agent_id_taken) before anything is
 * written — it would have taken over the record: the real agent's jobs failed, its Ceph client queued
 * for blocklisting, the real agent locked out while the impostor's session lived. The real session
 * service, driven without gRPC; no Ceph.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import { Register } from "../../../src/gen/rbdbackup/v1/session";
import { fsidOf } from "../../helpers/fake-agent";
import { until } from "../../helpers/wait";
import { Harness, openSession } from "./harness";

describe("session service: an agent id belongs to one cluster", () => {
  let h: Harness;
  beforeEach(() => {
    h = new Harness();
  });
  afterEach(() => h.close());

  function open(clusterName: string) {
    const {
      inbox,
      received,
      pump: stream,
    } = openSession(h, { agentId: "a1", clusterName, clusterFsid: fsidOf(clusterName) });
    const state: { error?: { code: Status; details: string } } = {};
    const pump = stream.catch((e) => {
      state.error = e as { code: Status; details: string };
    });
    return { inbox, received, state, pump };
  }

  it("a1 of cluster b, while the catalog knows a1 of cluster a: refused, the record untouched; a1 of a still registers", async () => {
    const first = open("a");
    await until(() => first.received.length === 1, "a1 of a registered");
    first.inbox.close();
    await first.pump;
    const before = JSON.stringify(h.catalog.listAgents());

    const impostor = open("b");
    await until(() => impostor.state.error !== undefined || impostor.received.length > 0, "the answer");
    impostor.inbox.close();
    await impostor.pump;
    assert.equal(impostor.state.error?.code, Status.FAILED_PRECONDITION);
    assert.match(
      impostor.state.error?.details ?? "",
      /agent id a1 belongs to cluster a; the agent of cluster b needs an id of its own/,
    );
    assert.equal(JSON.stringify(h.catalog.listAgents()), before, "the catalog's record is a1 of a, as it was");
    assert.deepEqual(
      h.catalog.clusterPins().map((p) => p.name),
      ["a"],
      "the refused registration pinned no fsid to cluster b",
    );
    assert.equal(h.sessions.get("a1"), undefined);

    const again = open("a");
    await until(() => again.received.length === 1, "a1 of a registered again");
    assert.equal(h.sessions.get("a1")?.cluster, "a");
    again.inbox.close();
    await again.pump;
  });

  it("a Register whose ceph_client_addrs names every client of a host (IP:0/0): INVALID_ARGUMENT, nothing registered", async () => {
    const { inbox, received, pump: stream } = openSession(h, { cephClientAddrs: "10.0.0.1:0/0" });
    const state: { error?: { code: Status; details: string } } = {};
    const pump = stream.catch((e) => {
      state.error = e as { code: Status; details: string };
    });
    await until(() => state.error !== undefined || received.length > 0, "the answer");
    inbox.close();
    await pump;
    assert.equal(state.error?.code, Status.INVALID_ARGUMENT);
    assert.match(state.error?.details ?? "", /^Register: ceph_client_addrs must be this agent's Ceph client address/);
    assert.deepEqual(h.catalog.listAgents(), []);
  });

  it("the catalog failing during Register: the agent gets UNAVAILABLE (not UNKNOWN), nothing registered", async () => {
    const upsert = h.catalog.upsertAgent.bind(h.catalog);
    h.catalog.upsertAgent = () => {
      throw new AppError(Status.UNAVAILABLE, "the catalog's database is unreachable (fake)");
    };
    try {
      const s = open("a");
      await until(() => s.state.error !== undefined || s.received.length > 0, "the answer");
      s.inbox.close();
      await s.pump;
      assert.equal(s.state.error?.code, Status.UNAVAILABLE);
      assert.match(s.state.error?.details ?? "", /database is unreachable/);
      assert.equal(h.sessions.get("a1"), undefined);
    } finally {
      h.catalog.upsertAgent = upsert;
    }
  });

  it("a second Register in a session ends it INVALID_ARGUMENT (not OK)", async () => {
    const s = open("a");
    await until(() => s.received.length === 1, "registered");
    const again = Register.fromPartial({ agentId: "a1", clusterName: "a", clusterFsid: fsidOf("a") });
    s.inbox.push({ msg: { $case: "register", value: again } });
    await s.pump;
    assert.equal(s.state.error?.code, Status.INVALID_ARGUMENT);
    assert.match(s.state.error?.details ?? "", /Register may only be the first message of a session/);
    assert.equal(h.sessions.get("a1"), undefined, "the session is gone");
  });
});
