/**
 * Revoked certificates at the agents (agent config auth.revokedCertificatesFile), on real agents, a real
 * coordinator and real clusters over mutual TLS:
 * - an agent whose list names the coordinator's certificate opens no session with it, and the
 *   coordinator's direct AgentService calls are UNAUTHENTICATED (audited, revoked_certificate); emptied
 *   and SIGHUPed, the list lets it register and answer;
 * - listed again while connected, its session ends at the agent's reload and its reconnects are refused;
 * - a destination agent whose list names the source agent's certificate refuses the transfer: the backup
 *   fails naming the revocation and nothing is written into the destination's backup pool.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { Status } from "nice-grpc";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { labTls } from "../../../src/lab/agent-process";
import type { CoordinatorProcess } from "../../../src/lab/coordinator-process";
import { type RunningAgent, startAgent } from "../../helpers/agents";
import { backupRequest, scrape, startCoordinator, waitAgents, waitJob } from "../../helpers/coordinator";
import { Volumes } from "../../helpers/volumes";
import { waitFor } from "../../helpers/wait";

const fingerprint = (name: string) => new X509Certificate(readFileSync(labTls(name).cert as string)).fingerprint256;
const count = (text: string, needle: string) => text.split(needle).length - 1;

describe("agents: revoked certificates", () => {
  let coord: CoordinatorProcess;
  const running: RunningAgent[] = [];
  const vols = new Volumes();

  before(async () => {
    coord = await startCoordinator();
  });
  after(async () => {
    await Promise.all(running.map((a) => a.stop()));
    await coord?.stop();
    await vols.cleanup();
  });

  const connected = async () =>
    (await coord.client.listAgents({})).agents
      .filter((x) => x.connected)
      .map((x) => x.clusterName)
      .sort();
  const reloads = (a: RunningAgent) => count(a.logs(), "revoked certificates reloaded");
  const REFUSED = "refusing the coordinator session: its certificate is revoked";

  let a: RunningAgent;

  it("a coordinator whose certificate the agent lists gets no session and its calls are UNAUTHENTICATED; emptied and reloaded, both work", async () => {
    a = await startAgent("site-a", {
      coordinator: coord.address,
      revoked: ["# the coordinator's key leaked", `sha256 Fingerprint=${fingerprint("coordinator")}`],
    });
    running.push(a);
    await waitFor(() => a.logs().includes(REFUSED), { what: "the agent refusing the coordinator's handshake" });
    assert.deepEqual(await connected(), []);
    // Audited (with the status the handshake's refusal means) and counted, for the alert.
    assert.ok(
      a
        .logs()
        .split("\n")
        .some(
          (l) =>
            l.includes('"method":"/rbdbackup.v1.CoordinatorAgentService/Session"') &&
            l.includes('"reason":"revoked_certificate"') &&
            l.includes('"result":"UNAUTHENTICATED"'),
        ),
      "the refused session is an audit line",
    );
    assert.match(
      await scrape(a.metricsAddress),
      /^rbdbackup_authorization_refusals_total\{service="rbdbackup\.v1\.CoordinatorAgentService",reason="revoked_certificate"[^}]*\} [1-9]/m,
    );
    // The agent's client speaks with the coordinator's certificate (and mints its leases): refused.
    await assert.rejects(a.client.checkCluster({ backupPool: "backups" }), (e: { code?: number; details?: string }) => {
      assert.equal(e.code, Status.UNAUTHENTICATED, e.details);
      assert.match(e.details ?? "", /this certificate \(sha256 [0-9a-f]{64}\) is revoked/);
      return true;
    });
    assert.ok(
      a
        .logs()
        .split("\n")
        .some((l) => l.includes('"reason":"revoked_certificate"') && l.includes("rbdbackup://coordinator/lab")),
      "the refusal is audited with the coordinator's identity",
    );

    writeFileSync(a.revokedFile, "# none revoked\n");
    a.proc.kill("SIGHUP");
    await waitFor(() => reloads(a) === 1, { what: "the agent's reload" });
    await waitAgents(coord.client, 1, 60_000);
    assert.equal((await a.client.checkCluster({ backupPool: "backups" })).ok, true);
  });

  it("listed while connected: the session ends at the agent's reload, and its reconnects are refused", async () => {
    const before = count(a.logs(), REFUSED);
    writeFileSync(a.revokedFile, `${fingerprint("coordinator")}\n`);
    a.proc.kill("SIGHUP");
    await waitFor(() => reloads(a) === 2, { what: "the agent's second reload" });
    await waitFor(async () => (await connected()).length === 0, { what: "the agent's session ended" });
    assert.match(a.logs(), /ended the coordinator session: the coordinator's certificate is revoked/);
    assert.match(a.logs(), /"result":"ENDED"/, "the ended session is an audit line");
    await waitFor(() => count(a.logs(), REFUSED) > before, { what: "a refused reconnect", timeoutMs: 60_000 });
    assert.deepEqual(await connected(), []);
    // Back in for the next test.
    writeFileSync(a.revokedFile, "# none revoked\n"); // an empty file would be refused: revocations in force
    a.proc.kill("SIGHUP");
    await waitFor(() => reloads(a) === 3, { what: "the agent's third reload" });
    await waitAgents(coord.client, 1, 60_000);
  });

  it("a bad line stops the agent's start (exit 2), naming the file and the line", async () => {
    await assert.rejects(startAgent("site-a", { revoked: ["# fine", "not-a-fingerprint"] }), (e: Error) => {
      assert.match(e.message, /revoked-certificates line 2: expected a certificate's SHA-256 fingerprint/);
      assert.match(e.message, /exited \(2\) before serving/);
      return true;
    });
  });

  it("a destination that lists the source agent's certificate refuses its transfer: the backup fails, nothing is written", async () => {
    const b = await startAgent("site-b", {
      coordinator: coord.address,
      revoked: [fingerprint("agent-site-a").replaceAll(":", "").toLowerCase()],
    });
    running.push(b);
    await waitAgents(coord.client, 2, 60_000);
    const v = await vols.create("site-a", "rbd", 8, 5, "revoked-src");
    const job = await coord.client.createBackup(backupRequest({ cluster: "site-a", ...v }));
    const done = await waitJob(coord.client, job.id);
    assert.equal(done.state, JobState.JOB_STATE_FAILED, JSON.stringify(done));
    assert.match(done.errorMessage, /is revoked/);
    assert.ok(
      b
        .logs()
        .split("\n")
        .some(
          (l) => l.includes('"reason":"revoked_certificate"') && l.includes("rbdbackup://agent/site-a/agent-site-a"),
        ),
      "the destination audited the refusal with the source's identity",
    );
    const written = (await (await vols.io("site-b", "backups")).imageList()).filter((i) => i.includes(v.image));
    assert.deepEqual(written, []);
  });
});
