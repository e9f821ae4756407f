/**
 * The PolicyStore in the PostgreSQL catalog (mirror of ../sqlite-policies.ts): same tables and rows
 * (the Policy message's JSON; a ProtectionRecord as is, plus the filtered/ordered columns), in the
 * catalog's connection and transactions. Writes go through the catalog's fenced write; listings page
 * by offset with the catalog's page tokens, as the SQLite store does.
 */
import { Policy as PolicyMsg } from "../../../gen/rbdbackup/v1/policy";
import { type Policy, type ProtectionRecord, volumeKey } from "../../policy/model";
import type { Page } from "../catalog";
import { decodeToken, page } from "../page-token";
import type { PolicyStore, ProtectionFilter } from "../policy-store";
import type { Step, StepResult } from "./protocol";
import { Where } from "./rows";

type Doc = { doc: string };
const parsePolicy = (doc: string): Policy => PolicyMsg.fromJSON(JSON.parse(doc));
const parseProtection = (doc: string): ProtectionRecord => JSON.parse(doc) as ProtectionRecord;
const policyDoc = (p: Policy): string => JSON.stringify(PolicyMsg.toJSON(p));

export class PgPolicyStore implements PolicyStore {
  /** allPolicies' parses by document text (as in sqlite-policies.ts: a text fixes its Policy). */
  #parsed = new Map<string, Policy>();

  constructor(
    private readonly write: (steps: Step[]) => StepResult[],
    private readonly read: <R>(sql: string, params?: unknown[]) => R[],
  ) {}

  #docs(sql: string, params: unknown[] = []): string[] {
    return this.read<Doc>(sql, params).map((r) => r.doc);
  }

  insertPolicy(p: Policy): void {
    this.write([{ sql: "INSERT INTO policies (name, doc) VALUES ($1, $2)", params: [p.name, policyDoc(p)] }]);
  }

  getPolicy(name: string): Policy | undefined {
    const [d] = this.#docs("SELECT doc FROM policies WHERE name = $1", [name]);
    return d === undefined ? undefined : parsePolicy(d);
  }

  updatePolicy(p: Policy): void {
    const [r] = this.write([{ sql: "UPDATE policies SET doc = $2 WHERE name = $1", params: [p.name, policyDoc(p)] }]);
    if (r?.rowCount !== 1) throw new Error(`policy ${p.name} is not in the catalog`);
  }

  deletePolicy(name: string): void {
    // Both statements in one write: atomic on their own, and inside an open transaction too.
    this.write([
      { sql: "DELETE FROM protection WHERE policy = $1", params: [name] },
      { sql: "DELETE FROM policies WHERE name = $1", params: [name] },
    ]);
  }

  listPolicies(pageSize: number, pageToken: string): Page<Policy> {
    const offset = decodeToken(pageToken);
    const rows = this.read<Doc>(`SELECT doc FROM policies ORDER BY name LIMIT ${pageSize + 1} OFFSET ${offset}`);
    return page(rows, pageSize, offset, parsePolicy);
  }

  allPolicies(): Policy[] {
    const parsed = new Map<string, Policy>();
    const out = this.#docs("SELECT doc FROM policies ORDER BY name").map((d) => {
      const p = this.#parsed.get(d) ?? parsePolicy(d);
      parsed.set(d, p);
      return p;
    });
    this.#parsed = parsed;
    return out;
  }

  upsertProtection(r: ProtectionRecord): void {
    this.write([
      {
        sql: "INSERT INTO protection (policy, volume_key, cluster, next_run_at, doc) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (policy, volume_key) DO UPDATE SET next_run_at = excluded.next_run_at, doc = excluded.doc",
        params: [r.policy, volumeKey(r.volume), r.volume.cluster, r.nextRunAt, JSON.stringify(r)],
      },
    ]);
  }

  getProtection(policy: string, key: string): ProtectionRecord | undefined {
    const [d] = this.#docs("SELECT doc FROM protection WHERE policy = $1 AND volume_key = $2", [policy, key]);
    return d === undefined ? undefined : parseProtection(d);
  }

  protectionOfPolicy(policy: string): ProtectionRecord[] {
    return this.#docs("SELECT doc FROM protection WHERE policy = $1 ORDER BY volume_key", [policy]).map(
      parseProtection,
    );
  }

  dueProtection(nowMs: number): ProtectionRecord[] {
    return this.#docs("SELECT doc FROM protection WHERE next_run_at <= $1 ORDER BY policy, volume_key", [nowMs]).map(
      parseProtection,
    );
  }

  protectionOfVolume(key: string): ProtectionRecord[] {
    return this.#docs("SELECT doc FROM protection WHERE volume_key = $1 ORDER BY policy", [key]).map(parseProtection);
  }

  listProtection(f: ProtectionFilter, pageSize: number, pageToken: string): Page<ProtectionRecord> {
    const w = new Where();
    if (f.policy) w.add("policy = ?", f.policy);
    if (f.cluster) w.add("cluster = ?", f.cluster);
    const offset = decodeToken(pageToken);
    const rows = this.read<Doc>(
      `SELECT doc FROM protection ${w.sql} ORDER BY policy, volume_key LIMIT ${pageSize + 1} OFFSET ${offset}`,
      w.params,
    );
    return page(rows, pageSize, offset, parseProtection);
  }

  deleteProtection(policy: string, key: string): void {
    this.write([{ sql: "DELETE FROM protection WHERE policy = $1 AND volume_key = $2", params: [policy, key] }]);
  }
}
