/**
 * Revoked certificates (auth.revokedCertificatesFile) on a real coordinator, over mutual TLS: an API
 * client's and an agent's certificate listed by their SHA-256 fingerprints (as `openssl x509 -fingerprint
 * -sha256` prints them) are UNAUTHENTICATED — the client's call with its role's rights, the agent's
 * session — while every other certificate works; emptied and SIGHUPed, the list lets both in again.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { Status } from "nice-grpc";
import { labTls } from "../../../src/lab/agent-process";
import { apiClient, type CoordinatorProcess } from "../../../src/lab/coordinator-process";
import { type RunningAgent, startAgent } from "../../helpers/agents";
import { startCoordinator, waitAgents } from "../../helpers/coordinator";
import { waitFor } from "../../helpers/wait";

const fingerprint = (cert: string) => new X509Certificate(readFileSync(cert)).fingerprint256;

describe("coordinator: revoked certificates", () => {
  let coord: CoordinatorProcess;
  const closers: Array<() => void> = [];
  const running: RunningAgent[] = [];
  const client = (name: string) => {
    const c = apiClient(coord.address, labTls(name));
    closers.push(() => c.channel.close());
    return c.client;
  };

  before(async () => {
    coord = await startCoordinator({
      revoked: [
        "# a leaked reader certificate, and a retired agent's",
        `sha256 Fingerprint=${fingerprint(labTls("reader").cert as string)}`,
        fingerprint(labTls("agent-site-b").cert as string)
          .replaceAll(":", "")
          .toLowerCase(),
      ],
    });
  });
  after(async () => {
    for (const c of closers) c();
    await Promise.all(running.map((a) => a.stop()));
    await coord?.stop();
  });

  it("a revoked client's and a revoked agent's certificate are UNAUTHENTICATED; the others are not", async () => {
    await assert.rejects(client("reader").listAgents({}), (e: { code?: number; details?: string }) => {
      assert.equal(e.code, Status.UNAUTHENTICATED, e.details);
      assert.match(e.details ?? "", /this client certificate \(sha256 [0-9a-f]{64}\) is revoked/);
      return true;
    });
    assert.ok(await client("operator").listAgents({}), "another client's certificate works");
    const a = await startAgent("site-a", { coordinator: coord.address });
    running.push(a);
    const b = await startAgent("site-b", { coordinator: coord.address });
    running.push(b);
    await waitAgents(coord.client, 1);
    // The revoked agent's session is refused (audited), and it stays unknown.
    await waitFor(
      () =>
        coord
          .logs()
          .split("\n")
          .some((l) => l.includes("revoked_certificate") && l.includes("CoordinatorAgentService/Session")),
      { what: "the refused session of the revoked agent in the coordinator's audit" },
    );
    const agents = (await coord.client.listAgents({})).agents.map((x) => x.clusterName);
    assert.deepEqual(agents, ["site-a"]);
  });

  const reloads = () => coord.logs().match(/revoked certificates reloaded/g)?.length ?? 0;

  it("emptied and reloaded (SIGHUP): both are let in again", async () => {
    writeFileSync(coord.revokedFile, "# none revoked\n");
    coord.proc.kill("SIGHUP");
    await waitFor(() => reloads() === 1, { what: "the reload" });
    assert.ok(await client("reader").listAgents({}));
    await waitAgents(coord.client, 2, 60_000);
  });

  it("revoked while connected: the agent's live session ends at the reload, and it stays out", async () => {
    writeFileSync(coord.revokedFile, `${fingerprint(labTls("agent-site-b").cert as string)}\n`);
    coord.proc.kill("SIGHUP");
    await waitFor(() => reloads() === 2, { what: "the second reload" });
    const connected = async () =>
      (await coord.client.listAgents({})).agents
        .filter((x) => x.connected)
        .map((x) => x.clusterName)
        .sort();
    await waitFor(async () => (await connected()).join() === "site-a", { what: "site-b's agent disconnected" });
    assert.match(
      coord.logs(),
      /"result":"ENDED".*its certificate was revoked|its certificate was revoked.*"result":"ENDED"/,
    );
    // Its reconnects are refused: still out once a refusal after the reload is in the audit.
    const refusals = () =>
      coord
        .logs()
        .split("\n")
        .filter((l) => l.includes("revoked_certificate") && l.includes("rbdbackup://agent/site-b/")).length;
    const before = refusals();
    await waitFor(() => refusals() > before, { what: "a refused reconnect of site-b's agent", timeoutMs: 60_000 });
    assert.deepEqual(await connected(), ["site-a"]);
  });
});
