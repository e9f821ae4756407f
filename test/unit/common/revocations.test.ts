/**
 * Revocation by fingerprint against ECDSA "twins" (src/common/revocations.ts): an ECDSA signature (r, s)
 * verifies as (r, n − s) too, so whoever holds a revoked certificate can re-encode it — the CA's signature
 * still good, same identity, key and serial — under another SHA-256 fingerprint. The twin here is built
 * independently of the code under test (P-256, the lab CA's curve), and shown to verify under the CA; the
 * list, the coordinator's caller check and the capability verifier must refuse it as the original.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { Status } from "nice-grpc";
import { CapabilitySigner, CapabilityVerifier } from "../../../src/common/capability";
import { certFingerprint, certFingerprints, RevocationList, revokedFingerprint } from "../../../src/common/revocations";
import { establishCaller } from "../../../src/coordinator/auth";
import { TokenStore } from "../../../src/coordinator/tokens";
import { labTls } from "../../../src/lab/agent-process";

/** P-256's order, as `openssl ecparam -name prime256v1 -param_enc explicit -text` prints it. */
const P256_ORDER = BigInt("0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551");

/** A DER element: tag, header length, content length. */
function tlv(buf: Buffer, off: number) {
  let len = buf[off + 1] as number;
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[off + 2 + i] as number);
    hdr = 2 + n;
  }
  return { start: off, body: off + hdr, end: off + hdr + len };
}
function encLen(n: number): Buffer {
  if (n < 128) return Buffer.from([n]);
  const b: number[] = [];
  for (; n; n = Math.floor(n / 256)) b.unshift(n % 256);
  return Buffer.from([0x80 | b.length, ...b]);
}
const enc = (tag: number, body: Buffer) => Buffer.concat([Buffer.from([tag]), encLen(body.length), body]);
function intBytes(x: bigint): Buffer {
  let h = x.toString(16);
  if (h.length % 2) h = `0${h}`;
  const b = Buffer.from(h, "hex");
  return (b[0] as number) & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b;
}
/** The certificate with its signature's s replaced by n − s (n: the CA curve's order). */
function twin(der: Buffer, order = P256_ORDER): Buffer {
  const outer = tlv(der, 0);
  const tbs = tlv(der, outer.body);
  const alg = tlv(der, tbs.end);
  const sig = tlv(der, alg.end);
  const body = der.subarray(sig.body + 1, sig.end);
  const seq = tlv(body, 0);
  const r = tlv(body, seq.body);
  const s = tlv(body, r.end);
  const sv = BigInt(`0x${body.subarray(s.body, s.end).toString("hex")}`);
  const ecdsa = enc(0x30, Buffer.concat([enc(0x02, body.subarray(r.body, r.end)), enc(0x02, intBytes(order - sv))]));
  const bits = enc(0x03, Buffer.concat([Buffer.from([0]), ecdsa]));
  return enc(0x30, Buffer.concat([der.subarray(tbs.start, tbs.end), der.subarray(alg.start, alg.end), bits]));
}

const coord = labTls("coordinator");
const ca = new X509Certificate(readFileSync(coord.ca as string));
const original = new X509Certificate(readFileSync(coord.cert as string));
const copy = new X509Certificate(twin(original.raw));
const listOf = (c: X509Certificate) => new Set([certFingerprint(c.raw)]);

describe("revoked certificates and their ECDSA twins", () => {
  it("the twin is a certificate the CA's signature covers, with the same identity and key and another fingerprint", () => {
    assert.ok(copy.checkIssued(ca) && copy.verify(ca.publicKey), "the twin verifies under the CA");
    assert.equal(copy.subjectAltName, original.subjectAltName);
    assert.equal(copy.serialNumber, original.serialNumber);
    assert.notEqual(certFingerprint(copy.raw), certFingerprint(original.raw));
  });

  it("each one's fingerprints name the other; listing either revokes both", () => {
    assert.ok(certFingerprints(original.raw).includes(certFingerprint(copy.raw)));
    assert.ok(certFingerprints(copy.raw).includes(certFingerprint(original.raw)));
    assert.equal(revokedFingerprint(listOf(original), copy.raw), certFingerprint(original.raw));
    assert.equal(revokedFingerprint(listOf(copy), original.raw), certFingerprint(copy.raw));
    assert.equal(revokedFingerprint(listOf(original), Buffer.from("not a certificate")), null);
    const other = new X509Certificate(readFileSync(labTls("reader").cert as string));
    assert.equal(revokedFingerprint(listOf(original), other.raw), null, "another certificate is not revoked");
  });

  it("memoized per certificate: each call answers the same, in an array of its own", () => {
    const first = certFingerprints(original.raw);
    first.push("changed by a caller");
    const again = certFingerprints(Buffer.from(original.raw)); // the same bytes in another buffer
    assert.equal(again.length, first.length - 1);
    assert.ok(!again.includes("changed by a caller"));
    assert.equal(again[0], certFingerprint(original.raw));
    assert.notDeepEqual(certFingerprints(copy.raw), again, "another certificate has its own entry");
  });

  it("the coordinator refuses the twin of a revoked client certificate (UNAUTHENTICATED)", () => {
    const r = establishCaller(
      { insecure: false, tokens: new TokenStore(""), revoked: listOf(original) },
      copy.raw,
      undefined,
      false,
    );
    assert.ok(!("via" in r), "refused");
    assert.equal(r.code, Status.UNAUTHENTICATED);
    assert.equal(r.reason, "revoked_certificate");
  });

  it("an agent refuses a capability signed under the twin of a revoked coordinator certificate", () => {
    const signer = new CapabilitySigner(copy.toString(), readFileSync(coord.key as string));
    const holder = { cluster: "site-a", agentId: "agent-site-a" };
    const token = signer.sign({ scope: "operation", job: "j", attempt: 1, holder, allows: {} }, 60_000);
    const verifier = new CapabilityVerifier(ca.raw, Date.now, listOf(original));
    assert.throws(
      () => verifier.verify(token, "operation", holder),
      (e: { reason?: string }) => e.reason === "revoked_certificate",
    );
    assert.doesNotThrow(() => new CapabilityVerifier(ca.raw).verify(token, "operation", holder), "genuine otherwise");
  });
});

/** The order of `curve` as OpenSSL prints it (not typed by hand). */
function orderOf(curve: string): bigint {
  const text = execFileSync("openssl", ["ecparam", "-name", curve, "-param_enc", "explicit", "-text", "-noout"], {
    encoding: "utf8",
  });
  const m = /Order:\s*\n([\s\S]*?)\n\S/.exec(text);
  if (!m) throw new Error(`no order in openssl's description of ${curve}`);
  return BigInt(`0x${(m[1] as string).replace(/[\s:]/g, "")}`);
}

/** A CA on `curve` and a leaf certificate it signed, made with openssl in `dir`. */
function issue(dir: string, curve: string): { ca: string; leaf: Buffer } {
  const run = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  run(["ecparam", "-name", curve, "-genkey", "-noout", "-out", "ca.key"]);
  run(["req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=test ca", "-days", "2", "-out", "ca.pem"]);
  run(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "leaf.key"]);
  run(["req", "-new", "-key", "leaf.key", "-subj", "/CN=leaf", "-out", "leaf.csr"]);
  writeFileSync(path.join(dir, "ext"), "subjectAltName=URI:rbdbackup://client/reader/leaf\n");
  run([
    "x509",
    "-req",
    "-in",
    "leaf.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    "ext",
    "-out",
    "leaf.pem",
  ]);
  return { ca: path.join(dir, "ca.pem"), leaf: new X509Certificate(readFileSync(path.join(dir, "leaf.pem"))).raw };
}

describe("revocation on the CA key's curve", () => {
  for (const curve of ["secp384r1", "secp521r1"]) {
    it(`a CA on ${curve}: the twin verifies, and listing the original revokes it`, () => {
      const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-revocations-"));
      try {
        const { ca, leaf } = issue(dir, curve);
        const caCert = new X509Certificate(readFileSync(ca));
        const t = new X509Certificate(twin(leaf, orderOf(curve)));
        assert.ok(t.checkIssued(caCert) && t.verify(caCert.publicKey), "the twin verifies under the CA");
        assert.notEqual(certFingerprint(t.raw), certFingerprint(leaf));
        const list = path.join(dir, "revoked");
        writeFileSync(list, `${certFingerprint(leaf)}\n`);
        const revoked = new RevocationList(list, readFileSync(ca));
        assert.equal(revoked.revoked(t.raw), certFingerprint(leaf));
        assert.equal(revokedFingerprint(new Set([certFingerprint(leaf)]), t.raw), certFingerprint(leaf));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it("a CA file holding two CAs (a rotation): the twins on each one's curve are matched", () => {
    const a = mkdtempSync(path.join(tmpdir(), "rbdbackup-revocations-"));
    const b = mkdtempSync(path.join(tmpdir(), "rbdbackup-revocations-"));
    try {
      const p256 = issue(a, "prime256v1");
      const p384 = issue(b, "secp384r1");
      const bundle = Buffer.concat([readFileSync(p256.ca), readFileSync(p384.ca)]);
      const list = path.join(a, "revoked");
      writeFileSync(list, `${certFingerprint(p384.leaf)}\n${certFingerprint(p256.leaf)}\n`);
      const revoked = new RevocationList(list, bundle);
      assert.equal(revoked.revoked(twin(p384.leaf, orderOf("secp384r1"))), certFingerprint(p384.leaf));
      assert.equal(revoked.revoked(twin(p256.leaf, orderOf("prime256v1"))), certFingerprint(p256.leaf));
    } finally {
      rmSync(a, { recursive: true, force: true });
      rmSync(b, { recursive: true, force: true });
    }
  });

  it("a CA on a curve whose twins cannot be matched stops the start when a list is configured, not without one", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-revocations-"));
    try {
      const { ca } = issue(dir, "secp224r1");
      const list = path.join(dir, "revoked");
      writeFileSync(list, "# none\n");
      assert.throws(
        () => new RevocationList(list, readFileSync(ca)),
        /curve secp224r1, for which revocations cannot be matched/,
      );
      assert.doesNotThrow(() => new RevocationList("", readFileSync(ca)));
      // Also when that CA is a TRUSTED CERTIFICATE block behind a good one (Node's TLS trusts both).
      execFileSync("openssl", ["x509", "-in", ca, "-trustout", "-out", path.join(dir, "trusted.pem")]);
      const good = issue(mkdtempSync(path.join(dir, "p256-")), "prime256v1").ca;
      const bundle = Buffer.concat([readFileSync(good), readFileSync(path.join(dir, "trusted.pem"))]);
      assert.match(bundle.toString(), /BEGIN TRUSTED CERTIFICATE/);
      assert.throws(() => new RevocationList(list, bundle), /curve secp224r1/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("other encodings OpenSSL accepts reach us re-encoded: a non-minimal outer length gives the original's raw", () => {
    const der = original.raw;
    const outerLen = der.readUInt16BE(2); // 30 82 LL LL: the lab certificates are 256..65535 bytes
    assert.equal(der[1], 0x82);
    const loose = Buffer.concat([Buffer.from([0x30, 0x83, 0x00, outerLen >> 8, outerLen & 0xff]), der.subarray(4)]);
    const parsed = new X509Certificate(loose);
    assert.ok(parsed.verify(ca.publicKey), "accepted");
    assert.deepEqual(parsed.raw, der, "re-encoded: the fingerprint is the original's");
  });
});
