/**
 * Revoked certificates, by SHA-256 fingerprint — the deployment's CA signs with no CRL, so a leaked or
 * retired certificate (an admin client's, an agent's forgotten with ForgetAgent) is shut out by listing
 * it here. The file has one fingerprint per line, as `openssl x509 -noout -fingerprint -sha256 -in
 * CERT.pem` prints it ("sha256 Fingerprint=AB:CD:…") or as bare hex, with or without colons; "#" starts
 * a comment. A bad line is refused with its line number. `RevocationList.reload()` (SIGHUP) reads the
 * file again; a bad file keeps the list in force.
 */
import { createHash, X509Certificate } from "node:crypto";
import { memoByDer } from "./der-memo";
import { ReloadableFile } from "./reloadable-file";

/** The SHA-256 fingerprint of a DER certificate: lowercase hex, no colons. */
export function certFingerprint(der: Buffer): string {
  return createHash("sha256").update(der).digest("hex");
}

/**
 * The group orders of the curves a CA's key may be on, by the name Node gives them
 * (KeyObject.asymmetricKeyDetails.namedCurve), as `openssl ecparam -name NAME -param_enc explicit -text`
 * prints them.
 */
export const CURVE_ORDERS: Readonly<Record<string, bigint>> = {
  prime256v1: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  secp384r1: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
  secp521r1:
    0x01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409n,
  secp256k1: 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n,
  brainpoolP256r1: 0xa9fb57dba1eea9bc3e660a909d838d718c397aa3b561a6f7901e0e82974856a7n,
  brainpoolP384r1: 0x8cb91e82a3386d280f5d6f7e50e641df152f7109ed5456b31f166e6cac0425a7cf3ab6af6b7fc3103b883202e9046565n,
  brainpoolP512r1:
    0xaadd9db8dbe9c48b3fd4e6ae33c9fc07cb308db3b3c9d20ed6639cca70330870553e5c414ca92619418661197fac10471db1d381085ddaddb58796829ca90069n,
};
const ALL_ORDERS = Object.values(CURVE_ORDERS);

/**
 * Every certificate of a CA file, as Node's TLS trusts them (CERTIFICATE, TRUSTED CERTIFICATE and X509
 * CERTIFICATE blocks; several during a rotation); a file with no PEM block is one certificate (DER).
 */
export function caCertificates(caPem: string | Buffer): X509Certificate[] {
  const text = Buffer.isBuffer(caPem) ? caPem.toString("latin1") : caPem;
  const blocks = text.match(
    /-----BEGIN (?:TRUSTED |X509 )?CERTIFICATE-----[\s\S]*?-----END (?:TRUSTED |X509 )?CERTIFICATE-----/g,
  );
  return (blocks ?? [caPem]).map((b) => new X509Certificate(b));
}

/**
 * Checks that every CA in the file (a CA file may hold several, e.g. an old and a new CA during a
 * rotation) signs on a curve whose twins can be matched: throws for an EC key on a curve not in
 * CURVE_ORDERS — revocation could not be complete, and the daemon must not start believing it is. RSA
 * and Ed25519 CAs pass (their signatures have no twin).
 */
export function checkCaCurves(caPem: string | Buffer): void {
  for (const ca of caCertificates(caPem)) {
    const key = ca.publicKey;
    if (key.asymmetricKeyType !== "ec") continue;
    const curve = key.asymmetricKeyDetails?.namedCurve ?? "";
    if (CURVE_ORDERS[curve] === undefined) {
      throw new Error(
        `a CA's key is on curve ${curve || "(unnamed)"}, for which revocations cannot be matched completely (an ECDSA signature has a twin on it that another fingerprint would name); use CAs on ${Object.keys(CURVE_ORDERS).join(", ")}, RSA or Ed25519`,
      );
    }
  }
}

/** A DER element at `at`: where its content starts and ends (null when it is not well formed). */
function element(der: Buffer, at: number): { tag: number; start: number; end: number } | null {
  if (at + 2 > der.length) return null;
  const tag = der[at] as number;
  let len = der[at + 1] as number;
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > der.length) return null;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (der[start + i] as number);
    start += n;
  }
  const end = start + len;
  return end <= der.length ? { tag, start, end } : null;
}

/** DER's length octets for `n` bytes of content. */
function lengthOctets(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

const tlv = (tag: number, content: Buffer) =>
  Buffer.concat([Buffer.from([tag]), lengthOctets(content.length), content]);

/** A non-negative INTEGER's DER content (minimal, a 0x00 first when the high bit is set). */
function integerContent(v: bigint): Buffer {
  let hex = v.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  const b = Buffer.from(hex, "hex");
  return (b[0] as number) & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b;
}

/**
 * The DER of the certificate's ECDSA twins: an ECDSA signature (r, s) verifies as well as (r, n − s), so
 * whoever holds a certificate can make a second one the CA's signature still covers — same identity, key
 * and serial, other bytes, other fingerprint. One twin per curve of CURVE_ORDERS of the signature's size (a wrong curve's twin is never presented: its signature
 * does not verify). None for other signatures, or unexpected DER. Other
 * re-encodings need no twin: OpenSSL (under Node) accepts some non-DER forms of a certificate (BER lengths,
 * trailing bytes) but hands over its re-encoded DER as `raw`, the bytes hashed here — a unit test pins that
 * (test/unit/common/revocations.test.ts).
 */
export function ecdsaTwins(der: Buffer): Buffer[] {
  const cert = element(der, 0);
  if (cert?.tag !== 0x30) return [];
  const tbs = element(der, cert.start);
  const alg = tbs && element(der, tbs.end);
  const sigBits = alg && element(der, alg.end);
  if (!tbs || !alg || !sigBits || sigBits.tag !== 0x03 || sigBits.end !== cert.end || der[sigBits.start] !== 0)
    return [];
  const sig = element(der, sigBits.start + 1);
  if (sig?.tag !== 0x30 || sig.end !== sigBits.end) return [];
  const r = element(der, sig.start);
  const sv = r && element(der, r.end);
  if (!r || !sv || r.tag !== 0x02 || sv.tag !== 0x02 || sv.end !== sig.end || sv.end === sv.start) return [];
  const s = BigInt(`0x${der.subarray(sv.start, sv.end).toString("hex")}`);
  const r0 = BigInt(`0x${der.subarray(r.start, r.end).toString("hex") || "0"}`);
  // r and s are below the signing curve's order and, but for a 2^-32 chance, within 32 bits of its size:
  // the curves of another size are left out (their twin would never verify anyway).
  const size = Math.max(r0.toString(2).length, s.toString(2).length);
  const fits = (n: bigint) => {
    const bits = n.toString(2).length;
    return s > 0n && s < n && bits >= size && bits - size < 32;
  };
  const head = der.subarray(cert.start, alg.end); // tbsCertificate and signatureAlgorithm, as they are
  const rElement = der.subarray(sig.start, r.end); // r's tag, length and value, as they are
  return ALL_ORDERS.filter(fits).map((n) => {
    const newSig = tlv(0x30, Buffer.concat([rElement, tlv(0x02, integerContent(n - s))]));
    const bits = tlv(0x03, Buffer.concat([Buffer.from([0]), newSig]));
    return tlv(0x30, Buffer.concat([head, bits]));
  });
}

/**
 * Every fingerprint the certificate can be presented with: its own first, then its ECDSA twins'
 * (ecdsaTwins). A revocation of any of them revokes it.
 */
export function certFingerprints(der: Buffer): string[] {
  return [...fingerprintsOfDer(der)];
}

/** Memoized per certificate (der-memo.ts): building the twins and hashing them took ~18 µs a call. */
const fingerprintsOfDer = memoByDer(256, (der): readonly string[] => [
  certFingerprint(der),
  ...ecdsaTwins(der).map(certFingerprint),
]);

/** The listed fingerprint of the certificate `der` (its own or a twin's); null when it is not revoked. */
export function revokedFingerprint(revoked: Revoked | undefined, der: Buffer): string | null {
  if (!revoked) return null;
  for (const fp of certFingerprints(der)) if (revoked.has(fp)) return fp;
  return null;
}

/** The fingerprints of a revocation file's text; throws naming the file and line of the first bad line. */
export function parseRevoked(text: string, file: string): Set<string> {
  const out = new Set<string>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).replace(/#.*/, "").trim();
    if (!line) continue;
    const hex = line
      .replace(/^sha-?256\s+fingerprint\s*=\s*/i, "")
      .replaceAll(":", "")
      .toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(hex)) {
      throw new Error(
        `${file} line ${i + 1}: expected a certificate's SHA-256 fingerprint (openssl x509 -noout -fingerprint -sha256 -in CERT.pem)`,
      );
    }
    out.add(hex);
  }
  return out;
}

/** What a check needs of a revocation list (a RevocationList; a Set in tests). */
export interface Revoked {
  has(fingerprint: string): boolean;
}

/** The revocations in force; `file` "" = none. */
export class RevocationList {
  readonly #file: ReloadableFile<Set<string>>;
  /**
   * `caPem`: the deployment's CA file; with a list configured, every CA in it must be on a curve of
   * CURVE_ORDERS (checkCaCurves throws otherwise: revocation could not be complete). The twins are matched
   * on every known curve of the signature's size (ecdsaTwins), so an intermediate CA not in the file, or
   * a block of the file misread here, cannot narrow them.
   */
  constructor(file: string, caPem?: string | Buffer) {
    // A deny list: an empty file read while being rewritten would lift every revocation.
    this.#file = new ReloadableFile(file, "revoked certificates file", parseRevoked, new Set(), {
      refuseEmpty: (current) => current.size > 0,
    });
    if (caPem && file) checkCaCurves(caPem);
  }

  get file(): string {
    return this.#file.file;
  }

  get size(): number {
    return this.#file.value.size;
  }

  /** The fingerprints the last reload lifted (listed before it, not after). */
  #lifted: string[] = [];

  /** Reads the file again. Throws (and keeps the list in force) when the new file is bad. */
  reload(): number {
    const before = this.#file.value;
    const now = this.#file.reload();
    this.#lifted = [...before].filter((fp) => !now.has(fp));
    return now.size;
  }

  /** The fingerprints the last reload lifted. */
  removed(): string[] {
    return this.#lifted;
  }

  /** Whether a fingerprint (certFingerprint's form) is listed. */
  has(fingerprint: string): boolean {
    return this.#file.value.has(fingerprint);
  }

  /** The listed fingerprint when the certificate (or an ECDSA twin of it) is revoked, else null. */
  revoked(der: Buffer): string | null {
    return revokedFingerprint(this, der);
  }
}
