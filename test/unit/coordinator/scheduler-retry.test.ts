/**
 * The retry policy (src/coordinator/scheduler/retry-policy.ts) and the transfer capabilities leases
 * carry, through the scheduler: a full pool is not hammered, a retry that meets the previous attempt's
 * base image waits for its cleanup (bounded), and with a signer every backup/restore lease carries a
 * capability the destination can verify with only the CA.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { baseInUse } from "../../../agents/transfer/sink/image-ops";
import { CapabilitySigner, CapabilityVerifier, checkAllows } from "../../../src/common/capability";
import { transferAsks } from "../../../src/common/grants";
import { BASE_IN_USE, LEFTOVER_RETRIES } from "../../../src/coordinator/scheduler/retry-policy";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { type FakeAgentSession, fsidOf } from "../../helpers/fake-agent";
import { Harness, vol } from "./harness";

const { JOB_STATE_QUEUED: QUEUED, JOB_STATE_RUNNING: RUNNING, JOB_STATE_FAILED: FAILED } = JobState;

describe("scheduler: retry policy", () => {
  let h: Harness;
  let a1: FakeAgentSession;
  beforeEach(() => {
    h = new Harness({ fullPoolBackoffMs: 300_000, leftoverWaitMs: 30_000 });
    a1 = h.connect("a1", "a");
    h.connect("b1", "b");
  });
  afterEach(() => h.close());

  it("RESOURCE_EXHAUSTED (a full pool) is retried only after fullPoolBackoffMs, doubling", () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.outcome(a1, j.id, Status.RESOURCE_EXHAUSTED, "pool backups on cluster b is full (no space left)");
    const q = h.job(j.id);
    assert.equal(q.state, QUEUED);
    assert.equal(q.nextAttemptAt, h.t + 300_000, "not within seconds");
    h.advance(299_999);
    h.tick();
    assert.equal(h.job(j.id).state, QUEUED);
    h.advance(1);
    h.tick();
    assert.equal(a1.lease(j.id).attempt, 2);
    h.outcome(a1, j.id, Status.RESOURCE_EXHAUSTED, "still full");
    assert.equal(h.job(j.id).nextAttemptAt, h.t + 600_000);
  });

  it("the full-pool backoff never goes below its base, whatever the jitter", () => {
    h.rnd = 0;
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.outcome(a1, j.id, Status.RESOURCE_EXHAUSTED, "full");
    assert.equal(h.job(j.id).nextAttemptAt, h.t + 300_000);
  });

  it("ALREADY_EXISTS on a first attempt is final (a fresh backup id is never reused)", () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.outcome(a1, j.id, Status.ALREADY_EXISTS, "base image b/backups/x already exists (backup id reused?)");
    assert.equal(h.job(j.id).state, FAILED);
  });

  it("after a lease expiry, a retry meeting the previous attempt's base image waits, without spending attempts", () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.advance(h.cfg.leaseTtlMs + 1);
    h.tick(); // attempt 1 expired: its destination may still be cleaning up
    h.advance(h.cfg.backoffBaseMs);
    h.tick();
    for (let n = 1; n <= LEFTOVER_RETRIES; n++) {
      const attempt = a1.lease(j.id).attempt;
      h.outcome(a1, j.id, Status.ALREADY_EXISTS, "base image b/backups/x already exists (backup id reused?)");
      const q = h.job(j.id);
      assert.equal(q.state, QUEUED, `leftover wait ${n}`);
      assert.equal(q.extraAttempts, n);
      assert.equal(q.nextAttemptAt, h.t + 30_000);
      h.advance(30_000);
      h.tick();
      assert.equal(a1.lease(j.id).attempt, attempt + 1);
    }
    assert.equal(h.job(j.id).state, RUNNING, `attempt ${2 + LEFTOVER_RETRIES} runs although maxAttempts is 3`);
    h.outcome(a1, j.id, Status.ALREADY_EXISTS, "base image b/backups/x already exists (backup id reused?)");
    const f = h.job(j.id);
    assert.equal(f.state, FAILED, "bounded");
    assert.equal(f.errorCode, "ALREADY_EXISTS");
    assert.match(f.errorMessage, /the previous attempt's image is still there after 3 waits of 30000 ms/);
  });

  it("a restore to a new volume: ALREADY_EXISTS is final on a first attempt, a leftover wait on a retry", async () => {
    const made = h.queueBackup(vol("v1"));
    h.tick();
    await h.backupDone(a1, made);
    const b1 = h.sessions.ofCluster("b")[0] as FakeAgentSession;
    const first = h.queueRestore(made.backupId, vol("taken"));
    await h.tickAfterSweep();
    h.outcome(
      b1,
      first.id,
      Status.ALREADY_EXISTS,
      "image rbd/taken already exists: restore to a new volume needs a free name",
    );
    assert.equal(h.job(first.id).state, FAILED, "someone else's image: final");

    const j = h.queueRestore(made.backupId, vol("new"));
    h.tick();
    h.outcome(b1, j.id, Status.UNAVAILABLE, "the connection to the destination was lost");
    h.advance(60_000);
    h.tick();
    assert.equal(b1.lease(j.id).attempt, 2);
    h.outcome(
      b1,
      j.id,
      Status.ALREADY_EXISTS,
      "image rbd/new already exists: restore to a new volume needs a free name",
    );
    const q = h.job(j.id);
    assert.equal(q.state, QUEUED, "the previous attempt's image: waited for");
    assert.equal(q.extraAttempts, 1);
    assert.equal(q.nextAttemptAt, h.t + 30_000);
  });

  it("a backup whose base image another client has open (ABORTED, on any attempt) waits leftoverWaitMs, without spending attempts, then fails naming it", () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    const inUse =
      "base image b/backups/x is open by another client (client.9 at 10.0.0.2:0/7): this attempt changed nothing (retried)";
    for (let n = 1; n <= LEFTOVER_RETRIES; n++) {
      const attempt = a1.lease(j.id).attempt;
      h.outcome(a1, j.id, Status.ABORTED, inUse);
      const q = h.job(j.id);
      assert.equal(q.state, QUEUED, `wait ${n}`);
      assert.equal(q.extraAttempts, n);
      assert.equal(q.nextAttemptAt, h.t + 30_000, "not a backoff of seconds");
      h.advance(30_000);
      h.tick();
      assert.equal(a1.lease(j.id).attempt, attempt + 1);
    }
    h.outcome(a1, j.id, Status.ABORTED, inUse);
    const f = h.job(j.id);
    assert.equal(f.state, FAILED, "bounded");
    assert.equal(f.errorCode, "ABORTED");
    assert.match(
      f.errorMessage,
      /is open by another client .* \(the base image is still open by another client after 3 waits of 30000 ms/,
    );
  });

  it("another ABORTED of a backup (not its base image in use) is retried with the usual backoff, within maxAttempts; the sink's refusal says what the coordinator looks for", () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.outcome(a1, j.id, Status.ABORTED, "volume v1 changed while its snapshot was made");
    const q = h.job(j.id);
    assert.equal(q.state, QUEUED);
    assert.equal(q.extraAttempts ?? 0, 0, "no extra attempt");
    assert.ok(q.nextAttemptAt - h.t <= h.cfg.backoffMaxMs && q.nextAttemptAt - h.t < 30_000, "not the leftover wait");
    const refusal = baseInUse("backups/v.backup.x", "client.9 at 10.0.0.2:0/7", "this attempt changed nothing");
    assert.equal(refusal.status, Status.ABORTED);
    assert.ok(refusal.message.includes(BASE_IN_USE), refusal.message);
  });

  it("leftover waits do not hide real failures: other transient failures still end at maxAttempts", () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.outcome(a1, j.id, Status.UNAVAILABLE, "x");
    h.advance(60_000);
    h.tick();
    h.outcome(a1, j.id, Status.ALREADY_EXISTS, "leftover");
    h.advance(30_000);
    h.tick();
    h.outcome(a1, j.id, Status.UNAVAILABLE, "x");
    h.advance(60_000);
    h.tick();
    assert.equal(a1.lease(j.id).attempt, 4, "maxAttempts 3 + 1 leftover wait");
    h.outcome(a1, j.id, Status.UNAVAILABLE, "x");
    assert.equal(h.job(j.id).state, FAILED);
  });
});

describe("scheduler: transfer capabilities", () => {
  const repoRoot = path.resolve(__dirname, "../../../..");
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-sched-cap-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync(path.join(repoRoot, "deploy/tls/gen-certs.sh"), [dir, "coordinator=rbdbackup://coordinator/main"], {
    stdio: "ignore",
  });
  const pem = (n: string) => readFileSync(path.join(dir, n));
  const verifier = new CapabilityVerifier(pem("ca.pem"));

  it("without a signer (insecure mode) a lease carries an empty capability", () => {
    const h = new Harness();
    try {
      const a1 = h.connect("a1", "a");
      h.connect("b1", "b");
      const j = h.queueBackup(vol("v1"));
      h.tick();
      const op = a1.lease(j.id).operation;
      assert.equal(op?.$case === "backup" && op.value.transferCapability, "");
    } finally {
      h.close();
    }
  });

  it("a backup's lease carries a capability for its source agent, for exactly its base image pool", async () => {
    const signer = new CapabilitySigner(pem("coordinator.pem"), pem("coordinator.key"));
    const h = new Harness({}, undefined, signer);
    try {
      const a1 = h.connect("a1", "a");
      const b1 = h.connect("b1", "b");
      const j = h.queueBackup(vol("v1"));
      h.tick();
      const op = a1.lease(j.id).operation;
      assert.ok(op?.$case === "backup");
      const token = op.value.transferCapability;
      const g = verifier.verify(token, "transfer", { cluster: "a", agentId: "a1" });
      assert.equal(g.job, j.id);
      assert.equal(g.attempt, 1);
      assert.ok(g.exp - g.iat >= h.cfg.leaseTtlMs);
      const header = (image: string, pool = "backups") => ({
        transferId: "t",
        jobId: j.id,
        kind: TransferKind.BACKUP_FULL,
        destination: { pool, namespace: "", image },
        backupId: j.backupId,
      });
      // biome-ignore lint/suspicious/noExplicitAny: only the fields transferAsks reads
      const asks = (x: any) => transferAsks(x, fsidOf("b"));
      checkAllows(g, asks(header(`v1.backup.${j.backupId}`)));
      assert.throws(() => checkAllows(g, asks(header(`production.backup.${j.backupId}`))), /volumeImage/);
      assert.throws(() => checkAllows(g, asks(header(`v1.backup.${j.backupId}`, "rbd"))), /pool/);
      assert.throws(() => verifier.verify(token, "transfer", { cluster: "b", agentId: "b1" }), /issued to agent a\/a1/);

      await h.backupDone(a1, j);
      const r = h.queueRestore(j.backupId, vol("v1-restored"));
      h.tick();
      const rop = b1.lease(r.id).operation;
      assert.ok(rop?.$case === "restore");
      const rg = verifier.verify(rop.value.transferCapability, "transfer", { cluster: "b", agentId: "b1" });
      assert.deepEqual(rg.allows, {
        purpose: "restore",
        backupId: j.backupId,
        pool: "rbd",
        namespace: "",
        image: "v1-restored",
        mode: "new",
        fsid: fsidOf("a"),
        toAgent: "a1",
      });
    } finally {
      h.close();
    }
  });
});
