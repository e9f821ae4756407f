/**
 * Which volumes each API client may touch (auth.scopesFile): a role says what a client may do, its
 * scope where. Two control planes sharing the coordinator — an OpenStack's Cinder and a Kubernetes
 * operator on the same clusters — each see and change only their own volumes and backups. The file:
 *
 *   # comment
 *   <client> <scope> [<scope>…]
 *
 * client: `client/<name>` (a certificate naming rbdbackup://client/<role>/<name>) or `token/<name>` (a
 * token line's name, tokens.ts); scope: `<cluster>`, `<cluster>/<pool>` or `<cluster>/<pool>/<namespace>`
 * (the namespace "" written as `<cluster>/<pool>/`), or `*` (everything). With a file configured, an
 * API client it does not list is refused every call but an admin's (admins are never scoped: the
 * calls only they may make — imports, catalog rebuild, ForgetAgent — act on every volume); without
 * one nobody is scoped. A bad line stops the coordinator at start, naming it; SIGHUP reloads the file
 * (a bad file keeps the scopes in force).
 *
 * What a scope covers: a volume (cluster, pool, namespace) is covered by an entry naming its cluster,
 * and its pool and namespace where the entry names them. A backup is the caller's when its volume —
 * the one backed up — is covered; a job when its volume is covered and, with a backup, that backup is
 * the caller's; a policy when its selector and its destination are covered. New backups must go to a
 * covered location. The checks are in api/scoped.ts.
 */

import { ReloadableFile } from "../common/reloadable-file";
import type { BackupLocation, VolumeRef } from "../gen/rbdbackup/v1/common";
import type { Caller } from "./authz";
import { NAME_RE } from "./validate";

export interface ScopeEntry {
  cluster: string;
  /** Undefined: every pool of the cluster. */
  pool?: string;
  /** Undefined: every namespace of the pool. */
  namespace?: string;
}

/** A scoped caller's entries; `all` for `*`. */
export interface ScopeLine {
  principal: string;
  entries: ScopeEntry[];
  all: boolean;
}

const PRINCIPAL_RE = /^(client|token)\/[A-Za-z0-9._-]{1,128}$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
const RBD_PART_RE = /^[^/@\s\x00-\x1f\x7f]{1,200}$/;

/** The scope lines of a scopes file's text; throws naming the file and line of the first bad one. */
export function parseScopes(text: string, file: string): Map<string, ScopeLine> {
  const out = new Map<string, ScopeLine>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).replace(/#.*$/, "").trim();
    if (!line) continue;
    const where = `${file} line ${i + 1}`;
    const [principal, ...scopes] = line.split(/\s+/) as [string, ...string[]];
    if (!PRINCIPAL_RE.test(principal)) throw new Error(`${where}: "${principal}" is not client/<name> or token/<name>`);
    if (scopes.length === 0)
      throw new Error(`${where}: ${principal} names no scope (<cluster>[/<pool>[/<namespace>]] or *)`);
    if (out.has(principal)) throw new Error(`${where}: ${principal} is listed twice`);
    const entries: ScopeEntry[] = [];
    let all = false;
    for (const s of scopes) {
      if (s === "*") {
        all = true;
        continue;
      }
      entries.push(parseEntry(s, where));
    }
    out.set(principal, { principal, entries, all });
  }
  return out;
}

function parseEntry(s: string, where: string): ScopeEntry {
  const parts = s.split("/");
  const [cluster, pool, namespace] = parts;
  const bad = () =>
    new Error(`${where}: scope "${s}" is not <cluster>, <cluster>/<pool> or <cluster>/<pool>/<namespace>`);
  if (parts.length > 3 || !cluster || !NAME_RE.test(cluster)) throw bad();
  if (pool === undefined) return { cluster };
  if (!RBD_PART_RE.test(pool)) throw bad();
  if (namespace === undefined) return { cluster, pool };
  if (namespace !== "" && !RBD_PART_RE.test(namespace)) throw bad();
  return { cluster, pool, namespace };
}

/** A caller's scope: what it may see and change. */
export class Scope {
  constructor(
    readonly principal: string,
    readonly entries: readonly ScopeEntry[],
  ) {}

  /** Whether the place (a pool's namespace; pool undefined: anywhere on the cluster) is covered. */
  covers(cluster: string, pool?: string, namespace?: string): boolean {
    return this.entries.some(
      (e) =>
        e.cluster === cluster &&
        (e.pool === undefined || e.pool === pool) &&
        (e.namespace === undefined || e.namespace === (namespace ?? "")),
    );
  }

  /** Whether the cluster is covered anywhere (an entry names it). */
  touches(cluster: string): boolean {
    return this.entries.some((e) => e.cluster === cluster);
  }

  sees(vol: VolumeRef | undefined): boolean {
    return !!vol && this.covers(vol.cluster, vol.pool, vol.namespace);
  }

  /** Keeps a location (its pool resolved) — `covers` of its cluster, pool and namespace. */
  keeps(loc: BackupLocation): boolean {
    return this.covers(loc.cluster, loc.pool, loc.namespace);
  }

  /** For messages: "client/cinder (scopes site-a/volumes, site-b/backups)". */
  describe(): string {
    const list = this.entries.map((e) =>
      e.pool === undefined
        ? e.cluster
        : e.namespace === undefined
          ? `${e.cluster}/${e.pool}`
          : `${e.cluster}/${e.pool}/${e.namespace}`,
    );
    return `${this.principal} (scopes ${list.join(", ") || "none"})`;
  }
}

/** The principal a caller is listed under: client/<name>, token/<name>; null for the unnamed (a token without a name, insecure mode). */
export function principalOf(c: Caller): string | null {
  if (c.via === "certificate") return c.identity?.kind === "client" ? `client/${c.identity.name}` : null;
  if (c.via === "token") return c.name ? `token/${c.name}` : null;
  return null;
}

/** What the scopes file says of a caller. */
export type ScopeVerdict = { scope: Scope | null } | { refused: string };

export class ScopeStore {
  readonly #file: ReloadableFile<Map<string, ScopeLine>>;

  constructor(file: string) {
    this.#file = new ReloadableFile(file, "API scopes file", parseScopes, new Map());
  }

  get file(): string {
    return this.#file.file;
  }

  get size(): number {
    return this.#file.value.size;
  }

  reload(): number {
    return this.#file.reload().size;
  }

  /** The caller's scope: null = unscoped (no file, an admin, `*`); refused = a file that does not list it. */
  of(c: Caller | null): ScopeVerdict {
    if (!this.#file.file || !c || c.via === "insecure") return { scope: null };
    const role = c.via === "token" ? c.role : c.identity?.kind === "client" ? c.identity.role : null;
    if (role === "admin" || role === null) return { scope: null };
    const principal = principalOf(c);
    const line = principal ? this.#file.value.get(principal) : undefined;
    if (!line) {
      const who = principal ?? "an unnamed token";
      return {
        refused: `${who} is not listed in the API scopes file (auth.scopesFile): every ${role} must be given its scopes there${principal ? "" : " (name the token: a third field on its line)"}`,
      };
    }
    return { scope: line.all ? null : new Scope(line.principal, line.entries) };
  }
}
