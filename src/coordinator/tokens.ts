/**
 * API bearer tokens and the role each carries. The tokens file has one token per line:
 *
 *   # comment
 *   <role> <token> [<name>]   role = reader | operator | admin; token at least 16 characters;
 *                             name ([A-Za-z0-9._-], ≤ 128): how the audit log names its caller
 *                             (token:<role>/<name>) and the scopes file lists it (token/<name>)
 *
 * A line without a role (or with an unknown one) is refused with its line number: an old file of bare
 * tokens must not silently grant anything. Only sha256 digests are kept in memory and compared in
 * constant time. `TokenStore.reload()` (SIGHUP) reads the file again; a bad file keeps the old tokens.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { ROLES, type Role } from "../common/identity";
import { ReloadableFile } from "../common/reloadable-file";
import { checkSecretFile } from "../common/secret-file";

export interface TokenEntry {
  role: Role;
  /** "" = unnamed. */
  name: string;
  digest: Buffer;
}

const TOKEN_NAME_RE = /^[A-Za-z0-9._-]{1,128}$/;

const digest = (s: string): Buffer => createHash("sha256").update(s).digest();

/** The entries of a tokens file's text; throws naming the file and line of the first bad line. */
export function parseTokens(text: string, file: string): TokenEntry[] {
  const entries: TokenEntry[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (!line || line.startsWith("#")) continue;
    const fields = line.split(/\s+/);
    const where = `${file} line ${i + 1}`;
    if (fields.length !== 2 && fields.length !== 3)
      throw new Error(
        `${where}: expected "<role> <token> [<name>]" with role ${ROLES.join(" | ")} (a token without a role?)`,
      );
    const [role, token, name = ""] = fields as [string, string, string?];
    if (!(ROLES as readonly string[]).includes(role))
      // The field is not echoed: a line written "<token> <role>" would put the token in the log.
      throw new Error(`${where}: the first field is not a role (expected ${ROLES.join(" | ")}, then the token)`);
    if (token.length < 16) throw new Error(`${where}: a token must be at least 16 characters`);
    if (name && !TOKEN_NAME_RE.test(name))
      throw new Error(`${where}: a token's name is 1-128 characters of [A-Za-z0-9._-]`);
    // A name that looks like a secret (32+ hex digits, as `openssl rand -hex` makes): most likely a line
    // written "<role> <name> <token>", which would put the token in the audit log as the caller's name.
    if (/^[0-9a-fA-F]{32,}$/.test(name))
      throw new Error(
        `${where}: the third field looks like a token (32 or more hex digits), not a name: a line is "<role> <token> [<name>]"`,
      );
    // Not echoed: a line written "<role> <name> <token>" makes the token the name.
    if (name && entries.some((e) => e.name === name))
      throw new Error(`${where}: its name is given on an earlier line too`);
    const d = digest(token);
    // One secret, one caller: a token on two lines would be whichever came first (its role, its name).
    if (entries.some((e) => e.digest.equals(d))) throw new Error(`${where}: this token is on an earlier line too`);
    entries.push({ role: role as Role, name, digest: d });
  }
  return entries;
}

/** The tokens in force; `file` "" = none (API clients need a certificate). */
export class TokenStore {
  readonly #file: ReloadableFile<TokenEntry[]>;

  constructor(file: string) {
    if (file) checkSecretFile(file, "API token file");
    this.#file = new ReloadableFile(file, "API token file", parseTokens, []);
  }

  get file(): string {
    return this.#file.file;
  }

  get size(): number {
    return this.#file.value.length;
  }

  /** Reads the file again. Throws (and keeps the tokens in force) when the new file is bad. */
  reload(): number {
    if (this.file) checkSecretFile(this.file, "API token file");
    return this.#file.reload().length;
  }

  /** The role of a bearer token; null when it is not one of ours. */
  roleOf(token: string): Role | null {
    return this.entryOf(token)?.role ?? null;
  }

  /** The entry (role, name) of a bearer token; null when it is not one of ours. Every entry is compared (constant time). */
  entryOf(token: string): { role: Role; name: string } | null {
    const d = digest(token);
    let found: TokenEntry | null = null;
    for (const e of this.#file.value) if (timingSafeEqual(e.digest, d) && !found) found = e;
    return found ? { role: found.role, name: found.name } : null;
  }
}
