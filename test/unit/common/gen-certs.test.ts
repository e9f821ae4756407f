/**
 * deploy/tls/gen-certs.sh: who each certificate names. A coordinator's names the reserved host
 * COORDINATOR_DNS_NAME, which a host-name-only client (the Cinder driver on grpcio) checks to accept
 * only a coordinator; an agent's never does (it names localhost and 127.0.0.1 like every server's), and
 * RBDBACKUP_TLS_SANS cannot give it one; a coordinator's issued before the name existed is re-issued.
 * Node's checkServerIdentity does the host-name check grpcio does.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { COORDINATOR_DNS_NAME } from "../../../src/common/identity";

const repoRoot = path.join(__dirname, "../../../..");
const GEN = path.join(repoRoot, "deploy/tls/gen-certs.sh");
const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-gen-certs-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const gen = (out: string, specs: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync(GEN, [out, ...specs], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 60_000 });
const cert = (out: string, name: string) => new X509Certificate(readFileSync(path.join(out, `${name}.pem`)));

/** grpcio's check: does the certificate name this host? (checkServerIdentity reads subjectaltname.) */
function names(c: X509Certificate, host: string): boolean {
  const peer = { subject: { CN: "" }, subjectaltname: c.subjectAltName ?? "" } as unknown as PeerCertificate;
  return checkServerIdentity(host, peer) === undefined;
}

describe("gen-certs.sh", () => {
  const out = path.join(dir, "tls");
  it("only a coordinator's certificate names the reserved coordinator host; an agent's names localhost too", () => {
    const r = gen(out, [
      "coordinator=rbdbackup://coordinator/main",
      "agent-a=rbdbackup://agent/site-a/agent-a",
      "ops=rbdbackup://client/operator/ops",
    ]);
    assert.equal(r.status, 0, r.stderr);
    const coordinator = cert(out, "coordinator");
    const agent = cert(out, "agent-a");
    const client = cert(out, "ops");
    assert.ok(names(coordinator, COORDINATOR_DNS_NAME), coordinator.subjectAltName);
    assert.ok(names(coordinator, "localhost"));
    assert.equal(names(agent, COORDINATOR_DNS_NAME), false, agent.subjectAltName);
    assert.ok(
      names(agent, "localhost"),
      "an agent's certificate passes a check against localhost: why the name exists",
    );
    assert.equal(names(client, COORDINATOR_DNS_NAME), false);
  });

  it("RBDBACKUP_TLS_GROUP: keys and the directory readable by that group; ca.key by its owner only", () => {
    const g = path.join(dir, "grouped");
    // Debian's "daemon" group (gid 1) stands for the systemd units' rbdbackup group.
    const r = gen(g, ["agent-a=rbdbackup://agent/site-a/agent-a"], { RBDBACKUP_TLS_GROUP: "daemon" });
    assert.equal(r.status, 0, r.stderr);
    const mode = (f: string) => statSync(path.join(g, f)).mode & 0o777;
    const gid = (f: string) => statSync(path.join(g, f)).gid;
    assert.equal(mode("agent-a.key"), 0o640);
    assert.equal(gid("agent-a.key"), 1);
    assert.equal(mode("."), 0o750);
    assert.equal(gid("."), 1);
    assert.equal(mode("ca.key"), 0o600, "the daemons' group never reads the CA's key");
    assert.notEqual(gid("ca.key"), 1);
    // Run again without it (re-issuing a certificate): the directory's group stays, the key readable.
    rmSync(path.join(g, "agent-a.pem"));
    assert.equal(gen(g, ["agent-a=rbdbackup://agent/site-a/agent-a"]).status, 0);
    assert.equal(mode("agent-a.key"), 0o640, "a key issued again keeps the group's read");
    assert.equal(mode("."), 0o750);
    // Without it, on a new directory: owner only, as before.
    const plain = path.join(dir, "plain");
    assert.equal(gen(plain, ["agent-a=rbdbackup://agent/site-a/agent-a"]).status, 0);
    assert.equal(statSync(path.join(plain, "agent-a.key")).mode & 0o777, 0o600);
    assert.equal(statSync(plain).mode & 0o777, 0o700);
    const bad = gen(g, ["x"], { RBDBACKUP_TLS_GROUP: "no-such-group-here" });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /no group no-such-group-here/);
  });

  it("a name under rbdbackup.invalid, in RBDBACKUP_TLS_SANS or as NAME, any case or a wildcard, is a coordinator's only", () => {
    for (const [spec, sans] of [
      ["evil=rbdbackup://agent/site-a/evil", `DNS:${COORDINATOR_DNS_NAME}`],
      ["evil=rbdbackup://agent/site-a/evil", "DNS:Coordinator.RBDBACKUP.invalid"],
      ["evil=rbdbackup://agent/site-a/evil", "DNS:*.rbdbackup.invalid"],
      [`${COORDINATOR_DNS_NAME}=rbdbackup://agent/site-a/evil`, undefined],
      ["Coordinator.Rbdbackup.Invalid", undefined],
    ] as Array<[string, string | undefined]>) {
      const r = gen(out, [spec], sans ? { RBDBACKUP_TLS_SANS: sans } : {});
      assert.equal(r.status, 2, `${spec} ${sans ?? ""}: ${r.stderr}`);
      assert.match(r.stderr, /are for a coordinator's certificate only/);
      assert.equal(existsSync(path.join(out, `${spec.split("=")[0]}.pem`)), false, "nothing issued");
    }
  });

  it("a coordinator's certificate without the reserved host (issued before it) is re-issued; a current one kept", () => {
    const key = path.join(out, "old.key");
    const csr = path.join(out, "old.csr");
    const pem = path.join(out, "old.pem");
    const ext = path.join(out, "old.ext");
    execFileSync("sh", [
      "-c",
      `openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=old -keyout ${key} -out ${csr} 2>/dev/null && ` +
        `printf 'subjectAltName=DNS:old,DNS:localhost,URI:rbdbackup://coordinator/old\\n' > ${ext} && ` +
        `openssl x509 -req -in ${csr} -CA ${out}/ca.pem -CAkey ${out}/ca.key -CAcreateserial -days 2 -extfile ${ext} -out ${pem} 2>/dev/null`,
    ]);
    assert.equal(names(cert(out, "old"), COORDINATOR_DNS_NAME), false);
    assert.equal(gen(out, ["old=rbdbackup://coordinator/old"]).status, 0);
    assert.ok(names(cert(out, "old"), COORDINATOR_DNS_NAME), "re-issued with the reserved host");
    const current = readFileSync(pem, "utf8");
    assert.equal(gen(out, ["old=rbdbackup://coordinator/old"]).status, 0);
    assert.equal(readFileSync(pem, "utf8"), current, "a current certificate is kept");
  });
});
