/**
 * Which volumes each API client may touch (auth.scopesFile): a role says what a client may do, its
 * scope where. Two control planes sharing the coordinator — an OpenStack's Cinder and a Kubernetes
 * operator on the same clusters — each see and change only their own volumes and backups. The file:
 *
 *   # comment
 *   <client> <scope> [<scope>…]
 *
 * client: `client/<name>` (a certificate naming rbdbackup://client/<role>/<name>) or `token/<name>` (a
 * token line's name, tokens.ts). scope: where the client's volumes are, `<cluster>`, `<cluster>/<pool>`
 * or `<cluster>/<pool>/<namespace>` (the namespace "" written `<cluster>/<pool>/`); where its backups
 * may be kept, the same after `backups:`; or `*` (everything). The two kinds are apart on purpose: a
 * backup pool two clients share holds base images and, after a failover, volumes — a client's backup
 * scope makes none of them its volumes. With a file configured, an API client it does not list is
 * refused every call but an admin's (admins are never scoped: the calls only they may make — record
 * imports, catalog rebuild, ForgetAgent, an unscoped ImportBackup — act on every volume); without one
 * nobody is scoped (and ImportBackup is an admin's call: api/scoped.ts ADMIN_UNLESS_SCOPED). A bad line stops
 * the coordinator at start, naming it; SIGHUP reloads the file (a bad file keeps the scopes in force).
 *
 * What a scope covers: a volume (cluster, pool, namespace) is covered by a volume entry naming its
 * cluster, and its pool and namespace where the entry names them; a backup location likewise by a
 * `backups:` entry. A backup is the caller's when its volume — the one backed up — is; a job when its
 * volume is and, with a backup, that backup is the caller's; a policy when its selector's volumes are
 * and its destination is a location of the caller's. New backups must go to such a location. The
 * checks are in api/scoped.ts.
 */

import { ReloadableFile } from "../common/reloadable-file";
import type { BackupLocation, VolumeRef } from "../gen/rbdbackup/v1/common";
import { type Caller, roleOf } from "./authz";
import { NAME_RE } from "./validate";

export interface ScopeEntry {
  /** Where the client's volumes are, or where its backups may be kept. */
  kind: "volumes" | "backups";
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
const RBD_PART_RE = /^[^/@#*\s\x00-\x1f\x7f]{1,200}$/;

/** The scope lines of a scopes file's text; throws naming the file and line of the first bad one. */
export function parseScopes(text: string, file: string): Map<string, ScopeLine> {
  const out = new Map<string, ScopeLine>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    // A comment starts a line or follows a space ("#" is refused inside a scope).
    const line = (lines[i] as string).replace(/(^|\s)#.*$/, "").trim();
    if (!line) continue;
    const where = `${file} line ${i + 1}`;
    const [principal, ...scopes] = line.split(/\s+/) as [string, ...string[]];
    if (!PRINCIPAL_RE.test(principal)) throw new Error(`${where}: "${principal}" is not client/<name> or token/<name>`);
    if (scopes.length === 0)
      throw new Error(`${where}: ${principal} names no scope ([backups:]<cluster>[/<pool>[/<namespace>]] or *)`);
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

function parseEntry(text: string, where: string): ScopeEntry {
  const kind = text.startsWith("backups:") ? "backups" : "volumes";
  const s = kind === "backups" ? text.slice("backups:".length) : text;
  const parts = s.split("/");
  const [cluster, pool, namespace] = parts;
  const bad = () =>
    new Error(
      `${where}: scope "${text}" is not [backups:]<cluster>, [backups:]<cluster>/<pool> or [backups:]<cluster>/<pool>/<namespace>`,
    );
  if (parts.length > 3 || !cluster || !NAME_RE.test(cluster)) throw bad();
  if (pool === undefined) return { kind, cluster };
  if (!RBD_PART_RE.test(pool)) throw bad();
  if (namespace === undefined) return { kind, cluster, pool };
  if (namespace !== "" && !RBD_PART_RE.test(namespace)) throw bad();
  return { kind, cluster, pool, namespace };
}

/** A caller's scope: what it may see and change. */
export class Scope {
  constructor(
    readonly principal: string,
    readonly entries: readonly ScopeEntry[],
  ) {}

  /**
   * Whether an entry of `kind` covers the place: its cluster, and its pool (undefined: a whole cluster
   * is asked for, which only a cluster-wide entry covers) and namespace where the entry names them.
   */
  covers(kind: ScopeEntry["kind"], cluster: string, pool?: string, namespace?: string): boolean {
    return this.entries.some(
      (e) =>
        e.kind === kind &&
        e.cluster === cluster &&
        (e.pool === undefined || e.pool === pool) &&
        (e.namespace === undefined || e.namespace === (namespace ?? "")),
    );
  }

  /** Whether any entry names the cluster. */
  touches(cluster: string): boolean {
    return this.entries.some((e) => e.cluster === cluster);
  }

  /** Whether a `backups:` entry names the cluster (the client keeps backups somewhere on it). */
  keepsOn(cluster: string): boolean {
    return this.entries.some((e) => e.kind === "backups" && e.cluster === cluster);
  }

  /** The volume is the client's. */
  sees(vol: VolumeRef | undefined): boolean {
    return !!vol && this.covers("volumes", vol.cluster, vol.pool, vol.namespace);
  }

  /** The client's backups may be kept there (the location's pool resolved). */
  keeps(loc: BackupLocation): boolean {
    return this.covers("backups", loc.cluster, loc.pool, loc.namespace);
  }

  /** For messages: "client/cinder (scopes site-a/volumes, backups:site-b/backups)". */
  describe(): string {
    const list = this.entries.map((e) => {
      const where =
        e.pool === undefined
          ? e.cluster
          : e.namespace === undefined
            ? `${e.cluster}/${e.pool}`
            : `${e.cluster}/${e.pool}/${e.namespace}`;
      return e.kind === "backups" ? `backups:${where}` : where;
    });
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

  /**
   * The caller's scope: null = unscoped (no file, an admin, `*`, insecure mode); refused = a file that
   * does not list it (or a caller the file cannot name: fail closed).
   */
  of(c: Caller | null): ScopeVerdict {
    if (!this.#file.file || c?.via === "insecure") return { scope: null };
    const role = roleOf(c);
    if (role === "admin") return { scope: null };
    if (role === null || !c)
      return { refused: "this caller is no API client the scopes file (auth.scopesFile) can name" };
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
