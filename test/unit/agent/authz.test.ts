/**
 * AgentService authorization without Ceph (agents/agent/authz.ts): a real grpc-js server on loopback
 * with the agent's interceptor and handlers over fake operations. Only the coordinator's certificate
 * gets through; a mutating call runs only under a lease for this agent that allows exactly the request
 * (the fake operation records whether it ran at all).
 */
import assert from "node:assert/strict";
import { randomUUID, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { createChannel, createClient, createServer, Metadata, type Server, Status } from "nice-grpc";
import { agentServiceInterceptor, agentServiceRefusal, LeaseCheck } from "../../../agents/agent/authz";
import type { AgentOperations } from "../../../agents/agent/operations";
import { agentService } from "../../../agents/agent/services";
import type { AuthzAudit } from "../../../agents/transfer/authz-audit";
import { type CapabilityError, CapabilitySigner, LEASE_METADATA_KEY } from "../../../src/common/capability";
import { deleteOperationAsks } from "../../../src/common/grants";
import { channelCredentials, serverCredentials, tlsChannelOptions } from "../../../src/common/tls";
import { AgentServiceDefinition, DeleteBackupDataRequest } from "../../../src/gen/rbdbackup/v1/agent";
import { labTls } from "../../../src/lab/agent-process";

const self = { cluster: "site-a", agentId: "agent-site-a" };
const coord = labTls("coordinator");
const signer = new CapabilitySigner(readFileSync(coord.cert as string), readFileSync(coord.key as string));

/**
 * AgentService on 127.0.0.1 with agent-site-a's certificate, over fake operations that record the
 * deletes that ran; `revoked` and `audit` as the agent passes them.
 */
async function serveAgent(ran: string[], o: { revoked?: Set<string>; audit?: AuthzAudit } = {}) {
  const ops = {
    ctx: {},
    checkCluster: async () => ({ ok: true, checks: [], clusterFsid: "f" }),
    deleteBackup: async (req: DeleteBackupDataRequest) => {
      ran.push(req.backupId);
      return { warnings: [] };
    },
  } as unknown as AgentOperations;
  const server = createServer({
    interceptors: [
      agentServiceInterceptor({
        insecure: false,
        ...(o.revoked ? { revoked: o.revoked } : {}),
        ...(o.audit ? { audit: o.audit } : {}),
      }),
    ],
  });
  server.add(
    AgentServiceDefinition,
    agentService(
      ops,
      { agentId: self.agentId, maxConcurrentTransfers: 1 },
      () => true,
      LeaseCheck.fromTls(labTls("agent-site-a"), self, undefined, undefined, o.revoked),
    ),
  );
  const address = `127.0.0.1:${await server.listen("127.0.0.1:0", serverCredentials(labTls("agent-site-a")))}`;
  return { server, address };
}

describe("AgentService authorization", () => {
  let server: Server;
  let address = "";
  const ran: string[] = [];
  const channels: Array<{ close(): void }> = [];

  before(async () => {
    ({ server, address } = await serveAgent(ran));
  });
  after(async () => {
    for (const c of channels) c.close();
    await server.shutdown();
  });

  const client = (cert: string) => {
    const tls = labTls(cert);
    const ch = createChannel(address, channelCredentials(tls), tlsChannelOptions(address, tls));
    channels.push(ch);
    return createClient(AgentServiceDefinition, ch);
  };
  const request = () =>
    DeleteBackupDataRequest.fromPartial({
      backupId: randomUUID(),
      pool: "backups",
      baseImage: `v.backup.${randomUUID()}`,
    });
  const lease = (req: DeleteBackupDataRequest, holder = self) =>
    signer.sign({ scope: "operation", job: "j", attempt: 1, holder, allows: deleteOperationAsks(req) }, 60_000);
  const withLease = (l: string) => ({ metadata: Metadata({ [LEASE_METADATA_KEY]: l }) });

  it("who: only the coordinator's certificate; every other identity PERMISSION_DENIED before any handler", async () => {
    for (const cert of ["agent-site-a", "agent-site-b", "test-client", "operator", "reader", "no-identity"]) {
      const req = request();
      await assert.rejects(client(cert).checkCluster({ backupPool: "backups" }), {
        code: Status.PERMISSION_DENIED,
        details: /only for the coordinator/,
      });
      await assert.rejects(client(cert).deleteBackup(req, withLease(lease(req))), { code: Status.PERMISSION_DENIED });
    }
    assert.deepEqual(ran, []);
    assert.equal((await client("coordinator").checkCluster({ backupPool: "backups" })).ok, true);
  });

  it("what: a mutating call only under a lease for this agent allowing exactly the request", async () => {
    const c = client("coordinator");
    const req = request();
    const other = request();
    await assert.rejects(c.deleteBackup(req), { code: Status.PERMISSION_DENIED, details: /none presented/ });
    await assert.rejects(c.deleteBackup(req, withLease(lease(other))), {
      code: Status.PERMISSION_DENIED,
      details: /backupId/,
    });
    await assert.rejects(c.deleteBackup(req, withLease(lease(req, { cluster: "site-b", agentId: "agent-site-b" }))), {
      code: Status.PERMISSION_DENIED,
      details: /issued to agent site-b/,
    });
    const production = { ...req, pool: "rbd", baseImage: "production" };
    await assert.rejects(c.deleteBackup(production, withLease(lease(req))), {
      code: Status.PERMISSION_DENIED,
      details: /backup/,
    });
    assert.deepEqual(ran, []);
    await c.deleteBackup(req, withLease(lease(req)));
    assert.deepEqual(ran, [req.backupId]);
  });

  it("the refusal text names the caller; insecure mode checks no lease", () => {
    assert.equal(agentServiceRefusal({ kind: "coordinator", id: "c" }), null);
    assert.match(agentServiceRefusal({ kind: "agent", cluster: "x", agentId: "y" })?.details ?? "", /agent x\/y/);
    assert.equal(agentServiceRefusal(null)?.reason, "no_identity");
    assert.match(agentServiceRefusal(null)?.details ?? "", /identity-less/);
    const revoked = agentServiceRefusal({ kind: "coordinator", id: "c" }, "ab".repeat(32));
    assert.equal(revoked?.code, Status.UNAUTHENTICATED);
    assert.equal(revoked?.reason, "revoked_certificate");
    new LeaseCheck(null, self).check("DeleteBackup", undefined, { op: "delete" });
  });
});

describe("AgentService authorization: a revoked coordinator certificate (auth.revokedCertificatesFile)", () => {
  let server: Server;
  let address = "";
  const ran: string[] = [];
  const channels: Array<{ close(): void }> = [];
  const coordFp = new X509Certificate(readFileSync(coord.cert as string)).fingerprint256
    .replaceAll(":", "")
    .toLowerCase();
  const revoked = new Set<string>([coordFp]);
  const audited: Array<{ reason?: string; identity: string }> = [];

  before(async () => {
    const audit = { refused: (l: { reason?: string; identity: string }) => audited.push(l) } as unknown as AuthzAudit;
    ({ server, address } = await serveAgent(ran, { revoked, audit }));
  });
  after(async () => {
    for (const c of channels) c.close();
    await server.shutdown();
  });

  const client = () => {
    const tls = labTls("coordinator");
    const ch = createChannel(address, channelCredentials(tls), tlsChannelOptions(address, tls));
    channels.push(ch);
    return createClient(AgentServiceDefinition, ch);
  };

  it("its calls are UNAUTHENTICATED, even under a lease it signed; nothing runs; audited as revoked_certificate", async () => {
    const req = DeleteBackupDataRequest.fromPartial({
      backupId: randomUUID(),
      pool: "backups",
      baseImage: `v.backup.${randomUUID()}`,
    });
    const l = signer.sign(
      { scope: "operation", job: "j", attempt: 1, holder: self, allows: deleteOperationAsks(req) },
      60_000,
    );
    await assert.rejects(client().checkCluster({ backupPool: "backups" }), {
      code: Status.UNAUTHENTICATED,
      details: new RegExp(`sha256 ${coordFp}\\) is revoked`),
    });
    await assert.rejects(client().deleteBackup(req, { metadata: Metadata({ [LEASE_METADATA_KEY]: l }) }), {
      code: Status.UNAUTHENTICATED,
    });
    assert.deepEqual(ran, []);
    assert.deepEqual(
      audited.map((a) => [a.reason, a.identity]),
      [
        ["revoked_certificate", "rbdbackup://coordinator/lab"],
        ["revoked_certificate", "rbdbackup://coordinator/lab"],
      ],
    );
    // The lease check alone (a lease that came some other way) refuses what the revoked key signed.
    const check = LeaseCheck.fromTls(labTls("agent-site-a"), self, undefined, undefined, revoked);
    assert.throws(
      () => check.check("DeleteBackup", l, deleteOperationAsks(req)),
      (e: CapabilityError) => e.reason === "revoked_certificate",
    );
    // Taken off the list, the same certificate and lease work again.
    revoked.clear();
    await client().deleteBackup(req, { metadata: Metadata({ [LEASE_METADATA_KEY]: l }) });
    assert.deepEqual(ran, [req.backupId]);
  });
});
