/**
 * Transfer capabilities name the destination cluster and the chain (issue 12): the coordinator mints
 * the destination's fsid and the chains the catalog knows for the volume at that location; a
 * destination of another cluster, or a base image the catalog does not know, is not covered. Old
 * grants without the fields are refused. No Ceph: the harness's fake agents and the real signer.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import {
  CapabilityError,
  CapabilitySigner,
  CapabilityVerifier,
  checkAllows,
  checkDestinationAgent,
  listItems,
} from "../../../src/common/capability";
import { backupTransferAllows, transferAsks } from "../../../src/common/grants";
import { baseImageName } from "../../../src/common/ids";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { fsidOf } from "../../helpers/fake-agent";
import { Harness, vol } from "./harness";

describe("scheduler: transfer capabilities name the destination cluster and the chain", () => {
  const repoRoot = path.resolve(__dirname, "../../../..");
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-sched-chain-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync(path.join(repoRoot, "deploy/tls/gen-certs.sh"), [dir, "coordinator=rbdbackup://coordinator/main"], {
    stdio: "ignore",
  });
  const pem = (n: string) => readFileSync(path.join(dir, n));
  const verifier = new CapabilityVerifier(pem("ca.pem"));
  const header = (kind: TransferKind, image: string, backupId: string, pool = "backups") =>
    // biome-ignore lint/suspicious/noExplicitAny: only the fields transferAsks reads
    ({ transferId: "t", jobId: "", kind, destination: { pool, namespace: "", image }, backupId }) as any;
  const notCovered = (re: RegExp) => (e: unknown) =>
    e instanceof CapabilityError && e.reason === "not_covered" && re.test(e.message);

  it("a backup: the destination's fsid, its own chain, then the catalogued chain for the next one", async () => {
    const h = new Harness({}, undefined, new CapabilitySigner(pem("coordinator.pem"), pem("coordinator.key")));
    try {
      const a1 = h.connect("a1", "a");
      h.connect("b1", "b");
      const j1 = h.queueBackup(vol("img"));
      h.tick();
      const op1 = a1.lease(j1.id).operation;
      assert.ok(op1?.$case === "backup");
      const g1 = verifier.verify(op1.value.transferCapability, "transfer", { cluster: "a", agentId: "a1" });
      const own1 = baseImageName("img", j1.backupId);
      assert.equal(g1.allows.fsid, fsidOf("b"));
      assert.equal(g1.allows.chain, own1, "no chain catalogued yet: only a full backup's own");
      // The destination agent the lease sends the source to (its transfer address), and no other.
      assert.equal(g1.allows.toAgent, "b1");
      assert.equal(op1.value.destination?.address, h.sessions.get("b1")?.info.transferAddress);
      checkDestinationAgent(g1, "b1");
      assert.throws(
        () => checkDestinationAgent(g1, "b2"),
        notCovered(/for destination agent b1, and this is agent b2/),
      );
      checkAllows(g1, transferAsks(header(TransferKind.BACKUP_FULL, own1, j1.backupId), fsidOf("b")));
      // Replayed against another cluster with the same pool and image names: refused.
      assert.throws(
        () => checkAllows(g1, transferAsks(header(TransferKind.BACKUP_FULL, own1, j1.backupId), fsidOf("c"))),
        notCovered(/fsid/),
      );
      assert.equal(await h.backupDone(a1, j1), true);

      const j2 = h.queueBackup(vol("img"));
      await h.tickAfterSweep();
      const op2 = a1.lease(j2.id).operation;
      assert.ok(op2?.$case === "backup");
      const g2 = verifier.verify(op2.value.transferCapability, "transfer", { cluster: "a", agentId: "a1" });
      assert.deepEqual(g2.allows.chain?.split(" "), [own1, baseImageName("img", j2.backupId)]);
      // An incremental into the catalogued chain is covered; into a chain the catalog does not know, not.
      checkAllows(g2, transferAsks(header(TransferKind.BACKUP_INCREMENTAL, own1, j2.backupId), fsidOf("b")));
      const planted = baseImageName("img", "0b5e7a1c-1111-4111-8111-111111111111");
      assert.throws(
        () => checkAllows(g2, transferAsks(header(TransferKind.BACKUP_INCREMENTAL, planted, j2.backupId), fsidOf("b"))),
        notCovered(/chain/),
      );
    } finally {
      h.close();
    }
  });

  it("a restore: the target cluster's fsid (the peer's, or the runner's own when it writes there itself)", async () => {
    const h = new Harness({}, undefined, new CapabilitySigner(pem("coordinator.pem"), pem("coordinator.key")));
    try {
      const a1 = h.connect("a1", "a");
      const b1 = h.connect("b1", "b");
      const j = h.queueBackup(vol("img"));
      h.tick();
      await h.backupDone(a1, j);
      const r = h.queueRestore(j.backupId, vol("img-restored", "a"));
      h.tick();
      const op = b1.lease(r.id).operation;
      assert.ok(op?.$case === "restore");
      const g = verifier.verify(op.value.transferCapability, "transfer", { cluster: "b", agentId: "b1" });
      assert.equal(g.allows.fsid, fsidOf("a"));
      assert.equal(g.allows.toAgent, "a1");
      const rh = header(TransferKind.RESTORE_NEW, "img-restored", j.backupId, "rbd");
      checkAllows(g, transferAsks(rh, fsidOf("a")));
      assert.throws(() => checkAllows(g, transferAsks(rh, fsidOf("b"))), notCovered(/fsid/));
    } finally {
      h.close();
    }
  });

  it("a grant minted before fsid and chain existed covers no stream (refused, not silently accepted)", () => {
    const signer = new CapabilitySigner(pem("coordinator.pem"), pem("coordinator.key"));
    const id = "0b5e7a1c-2222-4222-8222-222222222222";
    const old = {
      purpose: "backup",
      backupId: id,
      pool: "backups",
      namespace: "",
      volumeImage: "img",
    };
    const token = signer.sign(
      { scope: "transfer", job: "j", attempt: 1, holder: { cluster: "a", agentId: "a1" }, allows: old },
      60_000,
    );
    const g = verifier.verify(token, "transfer", { cluster: "a", agentId: "a1" });
    assert.throws(
      () => checkAllows(g, transferAsks(header(TransferKind.BACKUP_FULL, baseImageName("img", id), id), fsidOf("b"))),
      notCovered(/does not cover (fsid|chain)/),
    );
    const oldRestore = { purpose: "restore", backupId: id, pool: "rbd", namespace: "", image: "x", mode: "new" };
    const rt = signer.sign(
      { scope: "transfer", job: "j", attempt: 1, holder: { cluster: "a", agentId: "a1" }, allows: oldRestore },
      60_000,
    );
    const rg = verifier.verify(rt, "transfer", { cluster: "a", agentId: "a1" });
    assert.throws(
      () => checkAllows(rg, transferAsks(header(TransferKind.RESTORE_NEW, "x", id, "rbd"), fsidOf("b"))),
      notCovered(/does not cover fsid/),
    );
  });

  it("a list field matches whole alternatives only: no empty value, no substring", () => {
    const signer = new CapabilitySigner(pem("coordinator.pem"), pem("coordinator.key"));
    const holder = { cluster: "a", agentId: "a1" };
    const token = signer.sign(
      { scope: "transfer", job: "j", attempt: 1, holder, allows: { chain: "img.backup.x img.backup.y" } },
      60_000,
    );
    const g = verifier.verify(token, "transfer", holder);
    checkAllows(g, { chain: "img.backup.y" });
    assert.throws(() => checkAllows(g, { chain: "img.backup" }), notCovered(/chain/));
    assert.throws(() => checkAllows(g, { chain: "" }), notCovered(/chain/));
    assert.throws(() => checkAllows(g, { chain: "img.backup.x img.backup.y" }), notCovered(/chain/));
    assert.throws(() => checkAllows(g, { constructor: "x" }), notCovered(/does not cover constructor/));
  });

  it("a list item with a space or % in it (an image named 'my vol') is one alternative; names without either read as before", () => {
    const signer = new CapabilitySigner(pem("coordinator.pem"), pem("coordinator.key"));
    const holder = { cluster: "a", agentId: "a1" };
    const id = "0b8e0f3c-5f0e-4c8e-9a51-2d1f8a0c7e11";
    const allows = backupTransferAllows({
      backupId: id,
      pool: "backups",
      namespace: "",
      volumeImage: "my vol",
      fsid: "f",
      chains: [`my vol.backup.${id}`, "100%.backup.x", "plain.backup.y"],
    });
    assert.equal(allows.chain, `my%20vol.backup.${id} 100%25.backup.x plain.backup.y`);
    assert.deepEqual(listItems(allows.chain as string), [`my vol.backup.${id}`, "100%.backup.x", "plain.backup.y"]);
    const g = verifier.verify(
      signer.sign({ scope: "transfer", job: "j", attempt: 1, holder, allows }, 60_000),
      "transfer",
      holder,
    );
    for (const c of [`my vol.backup.${id}`, "100%.backup.x", "plain.backup.y"]) checkAllows(g, { chain: c });
    for (const c of ["my", `vol.backup.${id}`, `my%20vol.backup.${id}`, "100%25.backup.x"])
      assert.throws(() => checkAllows(g, { chain: c }), notCovered(/chain/), c);
  });
});
