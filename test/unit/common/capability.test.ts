/** Identities in certificates and the coordinator's capabilities, without Ceph (certificates from gen-certs.sh). */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { CapabilitySigner, CapabilityVerifier, checkAllows } from "../../../src/common/capability";
import { AppError, Status } from "../../../src/common/errors";
import { restoreOperationAsks } from "../../../src/common/grants";
import { identityOfCertificate, parseIdentityUri, roleAllows } from "../../../src/common/identity";
import { RestoreMode, RestoreRequest } from "../../../src/gen/rbdbackup/v1/agent";

const repoRoot = path.resolve(__dirname, "../../../..");
const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-capability-"));
const foreign = mkdtempSync(path.join(tmpdir(), "rbdbackup-capability-foreign-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(foreign, { recursive: true, force: true });
});
const gen = (d: string, ...specs: string[]) =>
  execFileSync(path.join(repoRoot, "deploy/tls/gen-certs.sh"), [d, ...specs], { stdio: "ignore" });
gen(
  dir,
  "coordinator=rbdbackup://coordinator/main",
  "agent-a=rbdbackup://agent/site-a/agent-a",
  "ops=rbdbackup://client/operator/ops",
  "plain",
);
gen(foreign, "coordinator=rbdbackup://coordinator/main");
const pem = (d: string, n: string) => readFileSync(path.join(d, n));

const refused = (f: () => unknown, re: RegExp) =>
  assert.throws(
    f,
    (e: unknown) => e instanceof AppError && e.status === Status.PERMISSION_DENIED && re.test(e.message),
  );

describe("identities", () => {
  it("a certificate names its holder; one without our URI names nobody", () => {
    assert.deepEqual(identityOfCertificate(pem(dir, "coordinator.pem")), { kind: "coordinator", id: "main" });
    assert.deepEqual(identityOfCertificate(pem(dir, "agent-a.pem")), {
      kind: "agent",
      cluster: "site-a",
      agentId: "agent-a",
    });
    assert.deepEqual(identityOfCertificate(pem(dir, "ops.pem")), { kind: "client", role: "operator", name: "ops" });
    assert.equal(identityOfCertificate(pem(dir, "plain.pem")), null);
  });

  it("a certificate's identity is memoized by its bytes: the same answer, a fresh object each time", () => {
    const der = new X509Certificate(pem(dir, "agent-a.pem")).raw;
    const first = identityOfCertificate(der);
    assert.deepEqual(first, { kind: "agent", cluster: "site-a", agentId: "agent-a" });
    if (first?.kind === "agent") first.agentId = "changed";
    assert.deepEqual(identityOfCertificate(Buffer.from(der)), { kind: "agent", cluster: "site-a", agentId: "agent-a" });
    assert.deepEqual(identityOfCertificate(new X509Certificate(pem(dir, "ops.pem")).raw), {
      kind: "client",
      role: "operator",
      name: "ops",
    });
    assert.equal(identityOfCertificate(new X509Certificate(pem(dir, "plain.pem")).raw), null);
    assert.throws(() => identityOfCertificate(Buffer.from("not a certificate")));
  });

  it("malformed URIs and unknown roles name nobody; roles nest", () => {
    for (const u of [
      "rbdbackup://agent/site-a",
      "rbdbackup://agent/site-a/x/y",
      "rbdbackup://client/root/x",
      "rbdbackup://coordinator/",
      "https://agent/site-a/x",
      "rbdbackup://agent/site a/x",
    ]) {
      assert.equal(parseIdentityUri(u), null, u);
    }
    assert.ok(roleAllows("admin", "operator") && roleAllows("operator", "reader") && roleAllows("reader", "reader"));
    assert.ok(!roleAllows("reader", "operator") && !roleAllows("operator", "admin"));
  });
});

describe("capabilities", () => {
  let t = Date.now();
  const now = () => t;
  const signer = new CapabilitySigner(pem(dir, "coordinator.pem"), pem(dir, "coordinator.key"), now);
  const verifier = new CapabilityVerifier(pem(dir, "ca.pem"), now);
  const holder = { cluster: "site-a", agentId: "agent-a" };
  const grant = {
    scope: "transfer" as const,
    job: "j1",
    attempt: 1,
    holder,
    allows: { image: "v.backup.x", pool: "backups" },
  };

  it("an operation grant for a restore to a new volume does not cover a clone of the same backup (nor back)", () => {
    const req = (mode: RestoreMode) =>
      RestoreRequest.fromPartial({
        backupId: "b1",
        backupPool: "backups",
        baseImage: "v.backup.b1",
        snapshot: "backup.b1.snap.1",
        target: { pool: "rbd", namespace: "", image: "restored" },
        mode,
      });
    const asNew = restoreOperationAsks(req(RestoreMode.RESTORE_MODE_NEW));
    const asClone = restoreOperationAsks(req(RestoreMode.RESTORE_MODE_CLONE));
    const g = (allows: typeof asNew) =>
      verifier.verify(signer.sign({ ...grant, scope: "operation", allows }, 60_000), "operation", holder);
    checkAllows(g(asNew), asNew);
    checkAllows(g(asClone), asClone);
    refused(() => checkAllows(g(asNew), asClone), /mode/);
    refused(() => checkAllows(g(asClone), asNew), /mode/);
  });

  it("a genuine capability verifies, and allows exactly what it names", () => {
    const g = verifier.verify(signer.sign(grant, 60_000), "transfer", holder);
    assert.equal(g.job, "j1");
    checkAllows(g, { image: "v.backup.x", pool: "backups" });
    refused(() => checkAllows(g, { image: "prod-volume", pool: "backups" }), /allows image="v.backup.x"/);
    refused(() => checkAllows(g, { kind: "RESTORE_ORIGINAL" }), /does not cover kind/);
  });

  it("is refused: missing, tampered, expired, of another scope or holder, minted by a non-coordinator or another CA", () => {
    const token = signer.sign(grant, 60_000);
    refused(() => verifier.verify(undefined, "transfer", holder), /none presented/);
    refused(() => verifier.verify("x.y", "transfer", holder), /malformed/);
    const [body, sig, der] = token.split(".") as [string, string, string];
    const forged = Buffer.from(
      JSON.stringify({ ...JSON.parse(Buffer.from(body, "base64url").toString()), allows: { image: "prod" } }),
    ).toString("base64url");
    refused(() => verifier.verify(`${forged}.${sig}.${der}`, "transfer", holder), /bad signature/);
    refused(() => verifier.verify(token, "operation", holder), /not a operation capability/);
    refused(() => verifier.verify(token, "transfer", { cluster: "site-a", agentId: "other" }), /issued to agent/);
    t += 10 * 60_000;
    refused(() => verifier.verify(token, "transfer", holder), /expired/);
    t -= 10 * 60_000;
    assert.throws(() => new CapabilitySigner(pem(dir, "agent-a.pem"), pem(dir, "agent-a.key")), /must name it/);
    const other = new CapabilitySigner(pem(foreign, "coordinator.pem"), pem(foreign, "coordinator.key"), now);
    refused(
      () => verifier.verify(other.sign(grant, 60_000), "transfer", holder),
      /not signed by a certificate of this deployment/,
    );
  });

  it("a CA file with two CAs (a rotation): capabilities of a coordinator of either are taken, as TLS takes both", () => {
    const both = new CapabilityVerifier(Buffer.concat([pem(dir, "ca.pem"), pem(foreign, "ca.pem")]), now);
    const other = new CapabilitySigner(pem(foreign, "coordinator.pem"), pem(foreign, "coordinator.key"), now);
    for (const s of [signer, other]) assert.equal(both.verify(s.sign(grant, 60_000), "transfer", holder).job, "j1");
    const onlyNew = new CapabilityVerifier(pem(foreign, "ca.pem"), now);
    refused(() => onlyNew.verify(signer.sign(grant, 60_000), "transfer", holder), /not signed by a certificate/);
    // A CA past its validity (gen-certs.sh: 10 years) is no issuer any more, as for TLS.
    const token = signer.sign(grant, 60_000);
    const later = new CapabilityVerifier(pem(dir, "ca.pem"), () => t + 11 * 365 * 86_400_000);
    refused(() => later.verify(token, "transfer", holder), /not signed by a certificate of this deployment's CA/);
  });
});
