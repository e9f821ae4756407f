/**
 * The PolicyStore in the catalog's SQLite file (same database and transactions as sqlite.ts). Like the
 * other tables, a row keeps the record as JSON (the public Policy message's JSON; a ProtectionRecord as
 * is) plus the columns that are filtered, ordered or unique. Listings page by offset with the catalog's
 * page tokens. `next_run_at` (added by policy-columns.ts) indexes the records' next runs.
 */
import type Database from "better-sqlite3";
import { Policy as PolicyMsg } from "../../gen/rbdbackup/v1/policy";
import { type Policy, type ProtectionRecord, volumeKey } from "../policy/model";
import type { Page } from "./catalog";
import { decodeToken, page } from "./page-token";
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

export class SqlitePolicyStore implements PolicyStore {
  readonly #sql: (sql: string) => Database.Statement;
  /**
   * allPolicies' parses by document text: the runners read every policy each tick (1 s), and parsing a
   * policy with a long volume list is most of an idle tick. The text fixes the Policy, so an entry is
   * never stale; only the current documents are kept. Callers treat the policies as read-only.
   */
  #parsed = new Map<string, Policy>();

  constructor(private readonly db: Database.Database) {
    this.#sql = statementCache(db);
  }

  insertPolicy(p: Policy): void {
    this.#sql("INSERT INTO policies (name, doc) VALUES (?, ?)").run(p.name, policyDoc(p));
  }

  getPolicy(name: string): Policy | undefined {
    const r = this.#sql("SELECT doc FROM policies WHERE name = ?").get(name) as { doc: string } | undefined;
    return r ? parsePolicy(r.doc) : undefined;
  }

  updatePolicy(p: Policy): void {
    const r = this.#sql("UPDATE policies SET doc = ? WHERE name = ?").run(policyDoc(p), p.name);
    if (r.changes !== 1) throw new Error(`policy ${p.name} is not in the catalog`);
  }

  deletePolicy(name: string): void {
    this.db.transaction(() => {
      this.#sql("DELETE FROM protection WHERE policy = ?").run(name);
      this.#sql("DELETE FROM policies WHERE name = ?").run(name);
    })();
  }

  listPolicies(pageSize: number, pageToken: string): Page<Policy> {
    const offset = decodeToken(pageToken);
    const rows = this.#sql(`SELECT doc FROM policies ORDER BY name LIMIT ${pageSize + 1} OFFSET ${offset}`).all() as {
      doc: string;
    }[];
    return page(rows, pageSize, offset, parsePolicy);
  }

  allPolicies(): Policy[] {
    const rows = this.#sql("SELECT doc FROM policies ORDER BY name").all() as { doc: string }[];
    const parsed = new Map<string, Policy>();
    const out = rows.map((r) => {
      const p = this.#parsed.get(r.doc) ?? parsePolicy(r.doc);
      parsed.set(r.doc, p);
      return p;
    });
    this.#parsed = parsed;
    return out;
  }

  upsertProtection(r: ProtectionRecord): void {
    this.#sql(
      "INSERT INTO protection (policy, volume_key, cluster, next_run_at, doc) VALUES (?, ?, ?, ?, ?) ON CONFLICT(policy, volume_key) DO UPDATE SET next_run_at = excluded.next_run_at, doc = excluded.doc",
    ).run(r.policy, volumeKey(r.volume), r.volume.cluster, r.nextRunAt, JSON.stringify(r));
  }

  dueProtection(nowMs: number): ProtectionRecord[] {
    return (
      this.#sql("SELECT doc FROM protection WHERE next_run_at <= ? ORDER BY policy, volume_key").all(nowMs) as {
        doc: string;
      }[]
    ).map((r) => parseProtection(r.doc));
  }

  getProtection(policy: string, key: string): ProtectionRecord | undefined {
    const r = this.#sql("SELECT doc FROM protection WHERE policy = ? AND volume_key = ?").get(policy, key) as
      | { doc: string }
      | undefined;
    return r ? parseProtection(r.doc) : undefined;
  }

  protectionOfPolicy(policy: string): ProtectionRecord[] {
    return (
      this.#sql("SELECT doc FROM protection WHERE policy = ? ORDER BY volume_key").all(policy) as {
        doc: string;
      }[]
    ).map((r) => parseProtection(r.doc));
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
    const offset = decodeToken(pageToken);
    const rows = this.#sql(
      `SELECT doc FROM protection ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY policy, volume_key LIMIT ${pageSize + 1} OFFSET ${offset}`,
    ).all(args) as { doc: string }[];
    return page(rows, pageSize, offset, parseProtection);
  }

  deleteProtection(policy: string, key: string): void {
    this.#sql("DELETE FROM protection WHERE policy = ? AND volume_key = ?").run(policy, key);
  }
}
