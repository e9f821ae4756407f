/**
 * The PolicyStore in the catalog's SQLite file (same database and transactions as sqlite.ts). Like the
 * other tables, a row keeps the record as JSON (the public Policy message's JSON; a ProtectionRecord as
 * is) plus the columns that are filtered, ordered or unique. Listings page by key (policies by name,
 * records by (policy, volume key): unique, so a page starts strictly after the previous one's last item)
 * with tokens signed by the catalog's paging key (page-token.ts). `next_run_at` (added by policy-columns.ts) indexes the records' next runs.
 */
import type Database from "better-sqlite3";
import { Policy as PolicyMsg } from "../../gen/rbdbackup/v1/policy";
import { type Policy, type ProtectionRecord, volumeKey } from "../policy/model";
import type { Page } from "./catalog";
import { decodeKeyToken, keyPage, pageScope } from "./page-token";
import type { PolicyStore, ProtectionFilter } from "./policy-store";
import { statementCache } from "./statements";

/** Created with the rest of the schema (sqlite.ts); IF NOT EXISTS, so older catalogs gain them. */
export const POLICY_SCHEMA = `
CREATE TABLE IF NOT EXISTS policies (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS protection (
  policy TEXT NOT NULL,
  volume_key TEXT NOT NULL,
  cluster TEXT NOT NULL,
  doc TEXT NOT NULL,
  PRIMARY KEY (policy, volume_key)
);
CREATE INDEX IF NOT EXISTS protection_volume ON protection (volume_key);
`;

const parsePolicy = (doc: string): Policy => PolicyMsg.fromJSON(JSON.parse(doc));
const parseProtection = (doc: string): ProtectionRecord => JSON.parse(doc) as ProtectionRecord;
const policyDoc = (p: Policy): string => JSON.stringify(PolicyMsg.toJSON(p));

/**
 * The due records, through the next_run_at index. Without `INDEXED BY`, SQLite (no statistics: the
 * catalog is never ANALYZEd) answers the ORDER BY from the primary key and scans every record each
 * runner tick (1 s) to find the few that are due; through the index it reads only those, then sorts them.
 */
export const DUE_PROTECTION_SQL =
  "SELECT doc FROM protection INDEXED BY protection_due WHERE next_run_at <= ? ORDER BY policy, volume_key";

/** Parsed protection records kept at most (then forgotten all at once; current ones parse again). */
const MAX_PARSED_RECORDS = 4_096;

export class SqlitePolicyStore implements PolicyStore {
  readonly #sql: (sql: string) => Database.Statement;
  /**
   * allPolicies' parses by document text: the runners read every policy each tick (1 s), and parsing a
   * policy with a long volume list is most of an idle tick. The text fixes the Policy, so an entry is
   * never stale; only the current documents are kept. Callers treat the policies as read-only.
   */
  #parsed = new Map<string, Policy>();
  /**
   * allPolicies' answer, kept until this store writes a policy (this process is the file's only writer):
   * the runners, the verify runner and every scrape ask for it, and reading the documents (a policy of
   * 100 explicit volumes is 10 KB of text to read and hash) cost more than the rest of an idle tick.
   * Filled only outside a transaction, so a rolled-back write can never leave it stale. getPolicy
   * answers from it too while it is current.
   */
  #all: Policy[] | null = null;
  /**
   * Protection records parsed, by document text (the text fixes the record; only the documents of the
   * last read are kept, per read kind). Callers get a shallow copy, as they may assign fields of what
   * they read; a record's `volume` is never modified in place.
   */
  #records = new Map<string, ProtectionRecord>();
  /**
   * protectionOfPolicy's answers by policy, each kept until a record of that policy is written (this
   * process is the file's only writer): the runner's full passes and every /metrics scrape read every
   * record of every policy, and reading 1,000 documents' text was most of a scrape. A write drops its
   * policy's answer before it runs, and an answer is kept only when read outside a transaction, so a
   * rolled-back write never leaves one stale. Callers get shallow copies, as from #recordsOf.
   */
  readonly #ofPolicy = new Map<string, ProtectionRecord[]>();

  constructor(
    private readonly db: Database.Database,
    private readonly pagingKey: Buffer,
  ) {
    this.#sql = statementCache(db);
  }

  insertPolicy(p: Policy): void {
    this.#all = null;
    this.#sql("INSERT INTO policies (name, doc) VALUES (?, ?)").run(p.name, policyDoc(p));
  }

  getPolicy(name: string): Policy | undefined {
    // Served from allPolicies' answer while it is current (read-only, like allPolicies' policies).
    if (this.#all) return this.#all.find((p) => p.name === name);
    const r = this.#sql("SELECT doc FROM policies WHERE name = ?").get(name) as { doc: string } | undefined;
    return r ? parsePolicy(r.doc) : undefined;
  }

  updatePolicy(p: Policy): void {
    this.#all = null;
    const r = this.#sql("UPDATE policies SET doc = ? WHERE name = ?").run(policyDoc(p), p.name);
    if (r.changes !== 1) throw new Error(`policy ${p.name} is not in the catalog`);
  }

  deletePolicy(name: string): void {
    this.#all = null;
    this.#ofPolicy.delete(name);
    this.db.transaction(() => {
      this.#sql("DELETE FROM protection WHERE policy = ?").run(name);
      this.#sql("DELETE FROM policies WHERE name = ?").run(name);
    })();
  }

  listPolicies(pageSize: number, pageToken: string): Page<Policy> {
    const scope = pageScope("policies", {});
    const after = decodeKeyToken(this.pagingKey, scope, pageToken, 1);
    const rows = this.#sql(
      `SELECT name, doc FROM policies ${after ? "WHERE name > ?" : ""} ORDER BY name LIMIT ${pageSize + 1}`,
    ).all(...(after ?? [])) as { name: string; doc: string }[];
    return keyPage(
      rows,
      pageSize,
      (r) => parsePolicy(r.doc),
      (r) => [r.name],
      this.pagingKey,
      scope,
    );
  }

  allPolicies(): Policy[] {
    if (this.#all) return this.#all.slice();
    const rows = this.#sql("SELECT doc FROM policies ORDER BY name").all() as { doc: string }[];
    const parsed = new Map<string, Policy>();
    const out = rows.map((r) => {
      const p = this.#parsed.get(r.doc) ?? parsePolicy(r.doc);
      parsed.set(r.doc, p);
      return p;
    });
    this.#parsed = parsed;
    if (!this.db.inTransaction) this.#all = out.slice();
    return out;
  }

  /** Rows' documents as records (parsed once per document text; see #records). */
  #recordsOf(rows: { doc: string }[]): ProtectionRecord[] {
    const out: ProtectionRecord[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      const doc = (rows[i] as { doc: string }).doc;
      let r = this.#records.get(doc);
      if (!r) {
        r = parseProtection(doc);
        if (this.#records.size >= MAX_PARSED_RECORDS) this.#records.clear();
        this.#records.set(doc, r);
      }
      out[i] = { ...r };
    }
    return out;
  }

  upsertProtection(r: ProtectionRecord): void {
    this.#ofPolicy.delete(r.policy);
    this.#sql(
      "INSERT INTO protection (policy, volume_key, cluster, next_run_at, doc) VALUES (?, ?, ?, ?, ?) ON CONFLICT(policy, volume_key) DO UPDATE SET next_run_at = excluded.next_run_at, doc = excluded.doc",
    ).run(r.policy, volumeKey(r.volume), r.volume.cluster, r.nextRunAt, JSON.stringify(r));
  }

  dueProtection(nowMs: number): ProtectionRecord[] {
    return this.#recordsOf(this.#sql(DUE_PROTECTION_SQL).all(nowMs) as { doc: string }[]);
  }

  getProtection(policy: string, key: string): ProtectionRecord | undefined {
    const r = this.#sql("SELECT doc FROM protection WHERE policy = ? AND volume_key = ?").get(policy, key) as
      | { doc: string }
      | undefined;
    return r ? parseProtection(r.doc) : undefined;
  }

  protectionOfPolicy(policy: string): ProtectionRecord[] {
    const kept = this.#ofPolicy.get(policy);
    if (kept) return kept.map((r) => ({ ...r }));
    const out = this.#recordsOf(
      this.#sql("SELECT doc FROM protection WHERE policy = ? ORDER BY volume_key").all(policy) as {
        doc: string;
      }[],
    );
    if (!this.db.inTransaction)
      this.#ofPolicy.set(
        policy,
        out.map((r) => ({ ...r })),
      );
    return out;
  }

  protectionOfVolume(key: string): ProtectionRecord[] {
    return (
      this.#sql("SELECT doc FROM protection WHERE volume_key = ? ORDER BY policy").all(key) as { doc: string }[]
    ).map((r) => parseProtection(r.doc));
  }

  listProtection(f: ProtectionFilter, pageSize: number, pageToken: string): Page<ProtectionRecord> {
    const where: string[] = [];
    const args: Record<string, unknown> = {};
    if (f.policy) {
      where.push("policy = @policy");
      args.policy = f.policy;
    }
    if (f.cluster) {
      where.push("cluster = @cluster");
      args.cluster = f.cluster;
    }
    const scope = pageScope("protection", f);
    const after = decodeKeyToken(this.pagingKey, scope, pageToken, 2);
    if (after) {
      where.push("(policy, volume_key) > (@after_p, @after_v)");
      args.after_p = after[0];
      args.after_v = after[1];
    }
    const rows = this.#sql(
      `SELECT policy, volume_key, doc FROM protection ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY policy, volume_key LIMIT ${pageSize + 1}`,
    ).all(args) as { policy: string; volume_key: string; doc: string }[];
    return keyPage(
      rows,
      pageSize,
      (r) => parseProtection(r.doc),
      (r) => [r.policy, r.volume_key],
      this.pagingKey,
      scope,
    );
  }

  deleteProtection(policy: string, key: string): void {
    this.#ofPolicy.delete(policy);
    this.#sql("DELETE FROM protection WHERE policy = ? AND volume_key = ?").run(policy, key);
  }
}
