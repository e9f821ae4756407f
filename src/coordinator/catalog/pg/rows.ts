/**
 * How records become rows of the PostgreSQL catalog and back (the same JSON documents as ../sqlite.ts,
 * times as epoch ms), and the WHERE clauses of the listings with numbered parameters.
 */
import { Backup as BackupMsg, BackupStatus } from "../../../gen/rbdbackup/v1/backup_service";
import type { Backup, BackupFilter, JobFilter, JobRecord } from "../../model";
import { backupFilterColumns } from "../filters";
import type { KeysetPosition } from "../page-token";

export const parseBackup = (doc: string): Backup => BackupMsg.fromJSON(JSON.parse(doc));
export const parseJob = (doc: string): JobRecord => JSON.parse(doc) as JobRecord;

/** backups columns, in the order of BACKUP_COLUMNS. */
export const BACKUP_COLUMNS =
  "id, status, cluster, pool, namespace, image, volume_id, location_cluster, policy, created_at, completed_at, verified_at, doc";

export function backupParams(b: Backup): unknown[] {
  const v = b.volume ?? { cluster: "", pool: "", namespace: "", image: "" };
  return [
    b.id,
    b.status,
    v.cluster,
    v.pool,
    v.namespace,
    v.image,
    b.volumeId,
    b.location?.cluster ?? "",
    b.policy ?? "",
    b.createdAt?.getTime() ?? 0,
    b.completedAt?.getTime() ?? null,
    b.integrity?.lastVerifiedAt?.getTime() ?? 0,
    JSON.stringify(BackupMsg.toJSON(b)),
  ];
}

export function jobParams(j: JobRecord): unknown[] {
  return [j.id, j.state, j.kind, j.backupId, j.idempotencyKey || null, j.createdAt, JSON.stringify(j)];
}

/** A WHERE clause built with $n parameters. */
export class Where {
  readonly parts: string[] = [];
  readonly params: unknown[] = [];

  /** `sql` with "?" standing for `value`'s parameter. */
  add(sql: string, value: unknown): void {
    this.params.push(value);
    this.parts.push(sql.replace("?", `$${this.params.length}`));
  }

  /** The keyset condition: strictly after `pos` in (created_at DESC, id DESC) order. */
  after(pos: KeysetPosition | undefined): void {
    if (!pos) return;
    this.params.push(pos.createdAt, pos.id);
    const n = this.params.length;
    this.parts.push(`(created_at, id) < ($${n - 1}, $${n})`);
  }

  get sql(): string {
    return this.parts.length ? `WHERE ${this.parts.join(" AND ")}` : "";
  }
}

export function backupWhere(f: BackupFilter): Where {
  const w = new Where();
  for (const [col, v] of backupFilterColumns(f)) w.add(`${col} = ?`, v);
  if (f.statuses?.length) w.add("status = ANY(?::int[])", f.statuses.map(Number));
  else if (f.excludeDeleted) w.parts.push(`status <> ${BackupStatus.BACKUP_STATUS_DELETED}`);
  return w;
}

export function jobWhere(f: JobFilter): Where {
  const w = new Where();
  if (f.state) w.add("state = ?", Number(f.state));
  if (f.kind) w.add("kind = ?", Number(f.kind));
  if (f.backupId) w.add("backup_id = ?", f.backupId);
  return w;
}
