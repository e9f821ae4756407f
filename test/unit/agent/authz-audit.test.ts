/**
 * The agent's audit of authorization (agents/transfer/authz-audit.ts) without Ceph: every refusal of
 * AgentService (interceptor, lease check) and of a Transfer (capability check) is one audit line —
 * identity, method, target, result, reason — and counts in rbdbackup_authorization_refusals_total on
 * the agent's metrics; an accepted mutating direct call is audited with its result when it ends.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { createChannel, createClient, createServer, Metadata, type Server, ServerError, Status } from "nice-grpc";
import { agentServiceInterceptor, LeaseCheck } from "../../../agents/agent/authz";
import { AgentMetrics } from "../../../agents/agent/metrics";
import type { AgentOperations } from "../../../agents/agent/operations";
import { agentService } from "../../../agents/agent/services";
import { AuthzAudit, capabilityReason } from "../../../agents/transfer/authz-audit";
import { authorizeTransfer } from "../../../agents/transfer/transfer-authz";
import { CapabilitySigner, CapabilityVerifier, checkAllows, LEASE_METADATA_KEY } from "../../../src/common/capability";
import { deleteOperationAsks, transferAsks } from "../../../src/common/grants";
import { channelCredentials, serverCredentials, tlsChannelOptions } from "../../../src/common/tls";
import { AgentServiceDefinition, DeleteBackupDataRequest } from "../../../src/gen/rbdbackup/v1/agent";
import { type TransferHeader, TransferKind, type TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { labTls } from "../../../src/lab/agent-process";
import { type LogLine, quietLogger } from "../transfer/fakes/sink-deps";

const self = { cluster: "site-a", agentId: "agent-site-a" };
const coord = labTls("coordinator");
const signer = new CapabilitySigner(readFileSync(coord.cert as string), readFileSync(coord.key as string));
const AGENT = "rbdbackup.v1.AgentService";

/** The audit lines logged so far (their fields), and the refusal counter's values by service/reason. */
function probe(lines: LogLine[], metrics: AgentMetrics) {
  return {
    audits: () => lines.filter((l) => l.fields?.audit === true).map((l) => l.fields as Record<string, unknown>),
    count: async (service: string, reason: string) =>
      (await metrics.refusals.get()).values.find((v) => v.labels.service === service && v.labels.reason === reason)
        ?.value ?? 0,
  };
}

describe("agent audit: AgentService", () => {
  const lines: LogLine[] = [];
  const metrics = new AgentMetrics("site-a", "test", "test");
  const audit = new AuthzAudit(quietLogger(lines), (s, r) => metrics.refused(s, r));
  const { audits, count } = probe(lines, metrics);
  let server: Server;
  let address = "";
  const channels: Array<{ close(): void }> = [];

  before(async () => {
    const ops = {
      ctx: {},
      deleteBackup: async (req: DeleteBackupDataRequest) => {
        if (req.pool === "missing") throw new ServerError(Status.NOT_FOUND, "gone");
        return { warnings: [] };
      },
    } as unknown as AgentOperations;
    server = createServer({ interceptors: [agentServiceInterceptor({ insecure: false, audit })] });
    server.add(
      AgentServiceDefinition,
      agentService(
        ops,
        { agentId: self.agentId, maxConcurrentTransfers: 1 },
        () => true,
        LeaseCheck.fromTls(labTls("agent-site-a"), self, undefined, audit),
      ),
    );
    address = `127.0.0.1:${await server.listen("127.0.0.1:0", serverCredentials(labTls("agent-site-a")))}`;
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
  const request = (pool = "backups") =>
    DeleteBackupDataRequest.fromPartial({ backupId: randomUUID(), pool, baseImage: `v.backup.${randomUUID()}` });
  const lease = (req: DeleteBackupDataRequest) =>
    signer.sign({ scope: "operation", job: "j", attempt: 1, holder: self, allows: deleteOperationAsks(req) }, 60_000);
  const withLease = (l: string) => ({ metadata: Metadata({ [LEASE_METADATA_KEY]: l }) });

  it("an agent's certificate: wrong_kind counted, one audit line naming it and the request's target", async () => {
    lines.length = 0;
    const req = request();
    await assert.rejects(client("agent-site-b").deleteBackup(req), { code: Status.PERMISSION_DENIED });
    assert.equal(await count(AGENT, "wrong_kind"), 1);
    const [a, ...rest] = audits();
    assert.deepEqual(rest, []);
    assert.equal(a?.identity, "rbdbackup://agent/site-b/agent-site-b");
    assert.equal(a?.method, `/${AGENT}/DeleteBackup`);
    assert.equal(a?.result, "PERMISSION_DENIED");
    assert.equal(a?.reason, "wrong_kind");
    assert.match(String(a?.message), /only for the coordinator/);
    assert.equal(a?.target, `backupId=${req.backupId} backup=backups//${req.baseImage}`, "refused, yet named");
  });

  it("a certificate without identity: no_identity, identity none, the image a read names", async () => {
    lines.length = 0;
    await assert.rejects(client("no-identity").checkCluster({ backupPool: "b" }), { code: Status.PERMISSION_DENIED });
    assert.equal(await count(AGENT, "no_identity"), 1);
    assert.equal(audits()[0]?.identity, "none");
    assert.equal(audits()[0]?.reason, "no_identity");
    const image = { pool: "rbd", namespace: "", image: "prod" };
    await assert.rejects(client("no-identity").listBackupSnapshots({ image }), { code: Status.PERMISSION_DENIED });
    assert.equal(audits()[1]?.target, "image=rbd//prod");
  });

  it("the coordinator without a lease, with another request's lease: no_capability / not_covered, with the target", async () => {
    lines.length = 0;
    const c = client("coordinator");
    const req = request();
    await assert.rejects(c.deleteBackup(req), { code: Status.PERMISSION_DENIED });
    await assert.rejects(c.deleteBackup(req, withLease(lease(request()))), { code: Status.PERMISSION_DENIED });
    assert.equal(await count(AGENT, "no_capability"), 1);
    assert.equal(await count(AGENT, "not_covered"), 1);
    const [a, b] = audits();
    assert.equal(a?.reason, "no_capability");
    assert.equal(b?.reason, "not_covered");
    assert.match(String(a?.identity), /^rbdbackup:\/\/coordinator\//);
    assert.equal(a?.target, `backupId=${req.backupId} backup=backups//${req.baseImage}`);
  });

  it("accepted direct mutating calls are audited when they end: OK, or the status", async () => {
    lines.length = 0;
    const c = client("coordinator");
    const ok = request();
    await c.deleteBackup(ok, withLease(lease(ok)));
    const failing = request("missing");
    await assert.rejects(c.deleteBackup(failing, withLease(lease(failing))), { code: Status.NOT_FOUND });
    const [a, b] = audits();
    assert.equal(a?.result, "OK");
    assert.match(String(a?.identity), /^rbdbackup:\/\/coordinator\//);
    assert.equal(a?.reason, undefined);
    assert.equal(b?.result, "NOT_FOUND");
    assert.equal(b?.message, "gone");
  });

  it("the metric is on the agent's registry", async () => {
    assert.match(
      await metrics.registry.metrics(),
      /rbdbackup_authorization_refusals_total\{service="rbdbackup\.v1\.AgentService",reason="wrong_kind",cluster="site-a"\} 1/,
    );
  });
});

describe("agent audit: Transfer", () => {
  const verifier = new CapabilityVerifier(readFileSync(coord.ca as string));
  const header = (image: string): TransferHeader => ({
    transferId: randomUUID(),
    jobId: "",
    kind: TransferKind.RESTORE_ORIGINAL,
    destination: { pool: "rbd", namespace: "", image },
    fromSnapshot: "",
    toSnapshot: "",
    imageSize: 4 << 20,
    features: 0,
    order: 22,
    stripeUnit: 0,
    stripeCount: 0,
    imageMeta: {},
    backupId: randomUUID(),
    metadataJson: Buffer.alloc(0),
    expectedFsid: "",
    chunkSize: 1 << 20,
    resumeOffset: 0,
    resumePrefixDigest: new Uint8Array(0),
    resumable: false,
    allowOpen: false,
    compression: 0,
  });
  const stream = (h: TransferHeader): AsyncIterable<TransferMessage> => ({
    async *[Symbol.asyncIterator]() {
      yield { body: { $case: "header", value: h } };
    },
  });

  it("a capability for another image: not_covered, the header's target in the line; a client: wrong_kind", async () => {
    const lines: LogLine[] = [];
    const metrics = new AgentMetrics("site-b", "test", "test");
    const audit = new AuthzAudit(quietLogger(lines), (s, r) => metrics.refused(s, r));
    const { audits, count } = probe(lines, metrics);
    const h = header("prod");
    const cap = signer.sign(
      { scope: "transfer", job: "j", attempt: 1, holder: self, allows: transferAsks(header("other"), "fsid-b") },
      60_000,
    );
    const caller = { checked: true, identity: { kind: "agent" as const, ...self }, capability: cap };
    await assert.rejects(authorizeTransfer(verifier, stream(h), caller, { fsid: "fsid-b", agentId: "b1" }, audit), {
      status: Status.PERMISSION_DENIED,
    });
    assert.equal(await count("rbdbackup.v1.TransferService", "not_covered"), 1);
    const a = audits()[0];
    assert.equal(a?.identity, "rbdbackup://agent/site-a/agent-site-a");
    assert.equal(a?.method, "/rbdbackup.v1.TransferService/Transfer");
    assert.equal(a?.target, `RESTORE_ORIGINAL rbd//prod backupId=${h.backupId}`);
    assert.equal(a?.result, "PERMISSION_DENIED");

    const client = {
      checked: true,
      identity: { kind: "client" as const, role: "admin" as const, name: "x" },
      capability: cap,
    };
    await assert.rejects(authorizeTransfer(verifier, stream(h), client, { fsid: "fsid-b", agentId: "b1" }, audit), {
      status: Status.PERMISSION_DENIED,
    });
    assert.equal(await count("rbdbackup.v1.TransferService", "wrong_kind"), 1);
    assert.equal(audits().length, 2);
    assert.equal(audits()[1]?.target, `RESTORE_ORIGINAL rbd//prod backupId=${h.backupId}`, "a client's, named too");

    // No capability, or one held by another agent: the line still names what the stream asked for.
    const none = { ...caller, capability: undefined };
    await assert.rejects(authorizeTransfer(verifier, stream(h), none, { fsid: "fsid-b", agentId: "b1" }, audit), {
      status: Status.PERMISSION_DENIED,
    });
    assert.equal(audits()[2]?.reason, "no_capability");
    assert.equal(audits()[2]?.target, `RESTORE_ORIGINAL rbd//prod backupId=${h.backupId}`);
  });

  it("capabilityReason: the typed reason of the refusal itself, never its message", () => {
    const verifier = new CapabilityVerifier(readFileSync(coord.ca as string));
    const reasonOf = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return capabilityReason(e);
      }
      return "accepted";
    };
    const allows = { op: "delete", backupId: "x" };
    const token = signer.sign({ scope: "operation", job: "j", attempt: 1, holder: self, allows }, 60_000);
    assert.equal(
      reasonOf(() => verifier.verify(undefined, "operation", self)),
      "no_capability",
    );
    assert.equal(
      reasonOf(() => verifier.verify(token, "operation", { cluster: "c", agentId: "d" })),
      "identity_mismatch",
    );
    assert.equal(
      reasonOf(() => checkAllows(verifier.verify(token, "operation", self), { ...allows, backupId: "y" })),
      "not_covered",
    );
    assert.equal(
      reasonOf(() => checkAllows(verifier.verify(token, "operation", self), { pool: "p" })),
      "not_covered",
    );
    assert.equal(
      reasonOf(() =>
        verifier.verify(
          [Buffer.from("{}").toString("base64url"), ...token.split(".").slice(1)].join("."),
          "operation",
          self,
        ),
      ),
      "bad_capability",
    );
    assert.equal(
      reasonOf(() => verifier.verify(token, "transfer", self)),
      "bad_capability",
    );
    // A message that reads like another reason does not change it: the type decides.
    assert.equal(capabilityReason(new Error("capability refused: none presented")), "bad_capability");
  });
});

describe("agent audit: the audit file (agent config audit.file)", () => {
  it("every line also appended to the file, as JSON with time, identity, method, target, result, reason", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-agent-audit-"));
    try {
      const file = path.join(dir, "sub", "audit.jsonl");
      const lines: LogLine[] = [];
      const audit = new AuthzAudit(quietLogger(lines), () => {}, file);
      audit.refused({
        identity: "none",
        method: `/${AGENT}/DeleteBackup`,
        target: "backupId=x",
        reason: "no_identity",
        message: "m",
      });
      audit.record({ identity: "rbdbackup://coordinator/c", method: `/${AGENT}/Backup`, target: "t", result: "OK" });
      audit.close();
      const written = readFileSync(file, "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l));
      assert.equal(written.length, 2);
      assert.equal(written[0].result, "PERMISSION_DENIED");
      assert.equal(written[0].reason, "no_identity");
      assert.equal(written[0].target, "backupId=x");
      assert.match(written[0].time, /^\d{4}-\d\d-\d\dT/);
      assert.equal(written[1].result, "OK");
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.equal(lines.filter((l) => l.fields?.audit === true).length, 2, "the log gets them too");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
