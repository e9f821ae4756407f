/**
 * Register.features (session.proto, "Versions"): the abilities an agent names reach its session, and a
 * list that is not names (or too long) is refused with INVALID_ARGUMENT before anything is registered.
 * The real session service, driven without gRPC; no Ceph.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AsyncQueue } from "../../../src/common/queue";
import { Audit } from "../../../src/coordinator/audit";
import { CALLER_METADATA_KEY } from "../../../src/coordinator/authz";
import { Relays } from "../../../src/coordinator/interchange/relays";
import { sessionService } from "../../../src/coordinator/session-service";
import type { AgentMessage } from "../../../src/gen/rbdbackup/v1/session";
import { fsidOf } from "../../helpers/fake-agent";
import { Harness } from "./harness";

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

describe("session service: Register.features", () => {
  let h: Harness;
  beforeEach(() => {
    h = new Harness();
  });
  afterEach(() => h.close());

  /** Opens a session that registers agent a1 naming `features`; the outcome of its stream so far. */
  function open(features: string[]) {
    const svc = sessionService({
      catalog: h.catalog,
      sessions: h.sessions,
      scheduler: h.scheduler,
      log: h.log,
      audit: new Audit(h.log),
      accepting: () => true,
      relays: new Relays(),
    });
    const inbox = new AsyncQueue<AgentMessage>();
    const metadata = new Map([[CALLER_METADATA_KEY, JSON.stringify({ via: "insecure" })]]);
    // biome-ignore lint/suspicious/noExplicitAny: the handler reads only metadata and signal of its context
    const out = svc.session(inbox, { metadata, signal: new AbortController().signal } as any);
    const received: unknown[] = [];
    const state: { error?: { code: Status; details: string } } = {};
    const pump = (async () => {
      try {
        for await (const m of out) received.push(m);
      } catch (e) {
        state.error = e as { code: Status; details: string };
      }
    })();
    inbox.push({
      msg: {
        $case: "register",
        value: {
          agentId: "a1",
          clusterName: "a",
          clusterFsid: fsidOf("a"),
          version: "test",
          transferAddress: "127.0.0.1:7401",
          capacity: 4,
          defaultBackupPool: "backups",
          cephClientAddrs: "",
          librbdVersion: "",
          leases: [],
          features,
        },
      },
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
