/**
 * Revoked certificates, by SHA-256 fingerprint — the deployment's CA signs with no CRL, so a leaked or
 * retired certificate (an admin client's, an agent's forgotten with ForgetAgent) is shut out by listing
 * it here. The file has one fingerprint per line, as `openssl x509 -noout -fingerprint -sha256 -in
 * CERT.pem` prints it ("sha256 Fingerprint=AB:CD:…") or as bare hex, with or without colons; "#" starts
 * a comment. A bad line is refused with its line number. `RevocationList.reload()` (SIGHUP) reads the
 * file again; a bad file keeps the list in force.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

/** The SHA-256 fingerprint of a DER certificate: lowercase hex, no colons. */
export function certFingerprint(der: Buffer): string {
  return createHash("sha256").update(der).digest("hex");
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

/** The fingerprints of a revocation file; throws with a message naming the file (and the line) when it is bad. */
export function readRevoked(file: string): Set<string> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`cannot read the revoked certificates file ${file}: ${(e as Error).message}`);
  }
  return parseRevoked(text, file);
}

/** The revocations in force; `file` "" = none. */
export class RevocationList {
  #revoked: Set<string>;

  constructor(readonly file: string) {
    this.#revoked = file ? readRevoked(file) : new Set();
  }

  get size(): number {
    return this.#revoked.size;
  }

  /** Reads the file again. Throws (and keeps the list in force) when the new file is bad. */
  reload(): number {
    if (!this.file) return 0;
    this.#revoked = readRevoked(this.file);
    return this.#revoked.size;
  }

  /** Whether a fingerprint (certFingerprint's form) is listed. */
  has(fingerprint: string): boolean {
    return this.#revoked.has(fingerprint);
  }

  /** The certificate's fingerprint when it is revoked, else null. */
  revoked(der: Buffer): string | null {
    if (this.#revoked.size === 0) return null;
    const fp = certFingerprint(der);
    return this.#revoked.has(fp) ? fp : null;
  }
}
