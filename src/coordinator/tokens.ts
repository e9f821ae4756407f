/**
 * API bearer tokens and the role each carries. The tokens file has one token per line:
 *
 *   # comment
 *   <role> <token>        role = reader | operator | admin; token at least 16 characters
 *
 * A line without a role (or with an unknown one) is refused with its line number: an old file of bare
 * tokens must not silently grant anything. Only sha256 digests are kept in memory and compared in
 * constant time. `TokenStore.reload()` (SIGHUP) reads the file again; a bad file keeps the old tokens.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { ROLES, type Role } from "../common/identity";
import { ReloadableFile } from "../common/reloadable-file";

export interface TokenEntry {
  role: Role;
  digest: Buffer;
}

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
    if (fields.length !== 2)
      throw new Error(`${where}: expected "<role> <token>" with role ${ROLES.join(" | ")} (a token without a role?)`);
    const [role, token] = fields as [string, string];
    if (!(ROLES as readonly string[]).includes(role))
      throw new Error(`${where}: unknown role "${role}" (expected ${ROLES.join(" | ")})`);
    if (token.length < 16) throw new Error(`${where}: a token must be at least 16 characters`);
    entries.push({ role: role as Role, digest: digest(token) });
  }
  return entries;
}

/** The tokens in force; `file` "" = none (API clients need a certificate). */
export class TokenStore {
  readonly #file: ReloadableFile<TokenEntry[]>;

  constructor(file: string) {
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
    return this.#file.reload().length;
  }

  /** The role of a bearer token; null when it is not one of ours. Every entry is compared (constant time). */
  roleOf(token: string): Role | null {
    const d = digest(token);
    let found: Role | null = null;
    for (const e of this.#file.value) if (timingSafeEqual(e.digest, d) && !found) found = e.role;
    return found;
  }
}
