/**
 * The small calls to a peer agent (agents/transfer/peers.ts remoteTarget: ListChains, ResumePoint) are
 * bounded; a peer that does not answer in time is DEADLINE_EXCEEDED naming the peer and the call — not
 * the timeout's DOMException, which reached the job as INTERNAL "internal error (see the server's log)".
 * The caller's own cancellation stays a cancellation. A real data-plane server on loopback (mutual TLS)
 * whose handlers never answer; no Ceph.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createChannel, createClient, Status } from "nice-grpc";
import { DataPlaneServer } from "../../../agents/transfer/data-plane-server";
import { remoteTarget } from "../../../agents/transfer/peers";
import { TransferClient } from "../../../agents/transfer/transfer-client";
import { isAbortError, messageOf, statusOf } from "../../../src/common/errors";
import { channelCredentials, tlsChannelOptions } from "../../../src/common/tls";
import { TransferServiceDefinition } from "../../../src/gen/rbdbackup/v1/transfer";
import { labTls } from "../../../src/lab/agent-process";

const clientTls = labTls("agent-site-a");

describe("calls to a peer agent that does not answer", () => {
  let server: DataPlaneServer;
  let address = "";
  let asked = 0;

  before(async () => {
    const never = (signal: AbortSignal) =>
      new Promise<never>((_, reject) => signal.addEventListener("abort", () => reject(signal.reason), { once: true }));
    server = new DataPlaneServer({
      tls: labTls("agent-site-b"),
      transfer: async () => ({}),
      listChains: (_req, signal) => {
        asked++;
        return never(signal);
      },
      resumePoint: (_req, signal) => {
        asked++;
        return never(signal);
      },
      maxMessageBytes: 1 << 20,
      maxConcurrentTransfers: 1,
    });
    address = await server.listen("127.0.0.1:0");
  });
  after(() => server.shutdown(0));

  function target(deadlineMs: number) {
    const client = createClient(
      TransferServiceDefinition,
      createChannel(address, channelCredentials(clientTls), tlsChannelOptions(address, clientTls)),
    );
    return remoteTarget(address, client, new TransferClient(address, clientTls), deadlineMs);
  }

  it("ListChains past its deadline: DEADLINE_EXCEEDED naming the peer and the call", { timeout: 10_000 }, async () => {
    const before = asked;
    // 2 s: the first call of the file makes its TLS connection inside the deadline (on a loaded 2-core
    // machine that alone took over 200 ms, and a deadline fired before the call reached the peer).
    const e = await target(2_000)
      .listChains("backups", "", "vol", new AbortController().signal)
      .then(
        () => assert.fail("answered"),
        (err: unknown) => err,
      );
    assert.equal(asked, before + 1, "the call reached the peer");
    assert.equal(statusOf(e), Status.DEADLINE_EXCEEDED);
    assert.equal(messageOf(e), `agent ${address} did not answer ListChains within 2 s`);
  });

  it("ResumePoint past its deadline: the same", { timeout: 10_000 }, async () => {
    const e = await target(2_000)
      .resumePoint({} as never, new AbortController().signal, undefined)
      .then(
        () => assert.fail("answered"),
        (err: unknown) => err,
      );
    assert.equal(statusOf(e), Status.DEADLINE_EXCEEDED);
    assert.equal(messageOf(e), `agent ${address} did not answer ResumePoint within 2 s`);
  });

  it("the caller's own cancellation stays a cancellation", { timeout: 10_000 }, async () => {
    const ac = new AbortController();
    const call = target(30_000).listChains("backups", "", "vol", ac.signal);
    setTimeout(() => ac.abort(), 50);
    const e = await call.then(
      () => assert.fail("answered"),
      (err: unknown) => err,
    );
    assert.ok(isAbortError(e), `an abort, not ${String(e)}`);
  });

  it("any other bounded wait's TimeoutError maps to DEADLINE_EXCEEDED, not INTERNAL", () => {
    const e = new DOMException("The operation was aborted due to timeout", "TimeoutError");
    assert.equal(statusOf(e), Status.DEADLINE_EXCEEDED);
    assert.equal(messageOf(e), "the operation timed out");
  });
});
