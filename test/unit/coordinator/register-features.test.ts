/**
 * Register.features (session.proto, "Versions"): the abilities an agent names reach its session, and a
 * list that is not names (or too long) is refused with INVALID_ARGUMENT before anything is registered.
 * The real session service, driven without gRPC; no Ceph.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { until } from "../../helpers/wait";
import { Harness, openSession } from "./harness";

describe("session service: Register.features", () => {
  let h: Harness;
  beforeEach(() => {
    h = new Harness();
  });
  afterEach(() => h.close());

  /** Opens a session that registers agent a1 naming `features`; the outcome of its stream so far. */
  function open(features: string[]) {
    const { inbox, received, pump: stream } = openSession(h, { features });
    const state: { error?: { code: Status; details: string } } = {};
    const pump = stream.catch((e) => {
      state.error = e as { code: Status; details: string };
    });
    return { inbox, received, state, pump };
  }

  it("the abilities named reach the session (unknown names are kept, and ignored)", async () => {
    const s = open(["confirm_backup", "from_the_future"]);
    await until(() => s.received.length === 1, "Registered");
    assert.deepEqual([...(h.sessions.get("a1")?.features ?? [])], ["confirm_backup", "from_the_future"]);
    s.inbox.close();
    await s.pump;
  });

  it("names that are not [a-z0-9_], or more than 64 of them: INVALID_ARGUMENT, nothing registered", async () => {
    for (const features of [["Confirm Backup"], [""], Array.from({ length: 65 }, (_, i) => `f${i}`)]) {
      const s = open(features);
      await until(() => s.state.error !== undefined || s.received.length > 0, "the session's answer");
      s.inbox.close();
      await s.pump;
      assert.equal(s.state.error?.code, Status.INVALID_ARGUMENT, JSON.stringify(features));
      assert.match(s.state.error?.details ?? "", /^Register: features must be/);
      assert.equal(h.sessions.get("a1"), undefined);
      assert.deepEqual(h.catalog.listAgents(), []);
    }
  });
});
