/**
 * Revoked certificates, by SHA-256 fingerprint — the deployment's CA signs with no CRL, so a leaked or
 * retired certificate (an admin client's, an agent's forgotten with ForgetAgent) is shut out by listing
 * it here. The file has one fingerprint per line, as `openssl x509 -noout -fingerprint -sha256 -in
 * CERT.pem` prints it ("sha256 Fingerprint=AB:CD:…") or as bare hex, with or without colons; "#" starts
 * a comment. A bad line is refused with its line number. `RevocationList.reload()` (SIGHUP) reads the
 * file again; a bad file keeps the list in force.
 */
import { createHash } from "node:crypto";
import { ReloadableFile } from "./reloadable-file";

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

/** What a check needs of a revocation list (a RevocationList; a Set in tests). */
export interface Revoked {
  has(fingerprint: string): boolean;
}

/** The revocations in force; `file` "" = none. */
export class RevocationList {
  readonly #file: ReloadableFile<Set<string>>;

  constructor(file: string) {
    this.#file = new ReloadableFile(file, "revoked certificates file", parseRevoked, new Set());
  }

  get file(): string {
    return this.#file.file;
  }

  get size(): number {
    return this.#file.value.size;
  }

  /** Reads the file again. Throws (and keeps the list in force) when the new file is bad. */
  reload(): number {
    return this.#file.reload().size;
  }

  /** Whether a fingerprint (certFingerprint's form) is listed. */
  has(fingerprint: string): boolean {
    return this.#file.value.has(fingerprint);
  }

  /** The certificate's fingerprint when it is revoked, else null. */
  revoked(der: Buffer): string | null {
    const fp = certFingerprint(der);
    return this.has(fp) ? fp : null;
  }
}
