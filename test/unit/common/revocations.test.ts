/**
 * Revocation by fingerprint against ECDSA "twins" (src/common/revocations.ts): an ECDSA signature (r, s)
 * verifies as (r, n − s) too, so whoever holds a revoked certificate can re-encode it — the CA's signature
 * still good, same identity, key and serial — under another SHA-256 fingerprint. The twin here is built
 * independently of the code under test (P-256, the lab CA's curve), and shown to verify under the CA; the
 * list, the coordinator's caller check and the capability verifier must refuse it as the original.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { Status } from "nice-grpc";
import { CapabilitySigner, CapabilityVerifier } from "../../../src/common/capability";
import { certFingerprint, certFingerprints, revokedFingerprint } from "../../../src/common/revocations";
import { establishCaller } from "../../../src/coordinator/auth";
import { TokenStore } from "../../../src/coordinator/tokens";
import { labTls } from "../../../src/lab/agent-process";

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
/** The certificate with its signature's s replaced by n − s. */
function twin(der: Buffer): Buffer {
  const outer = tlv(der, 0);
  const tbs = tlv(der, outer.body);
  const alg = tlv(der, tbs.end);
  const sig = tlv(der, alg.end);
  const body = der.subarray(sig.body + 1, sig.end);
  const seq = tlv(body, 0);
  const r = tlv(body, seq.body);
  const s = tlv(body, r.end);
  const sv = BigInt(`0x${body.subarray(s.body, s.end).toString("hex")}`);
  const ecdsa = enc(
    0x30,
    Buffer.concat([enc(0x02, body.subarray(r.body, r.end)), enc(0x02, intBytes(P256_ORDER - sv))]),
  );
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
