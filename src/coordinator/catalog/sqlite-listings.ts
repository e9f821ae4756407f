/**
 * The SQL of the SQLite catalog's paged listings (backups, jobs) and the indexes that serve them.
 * Keyset paging (page-token.ts): ordered (created_at DESC, id DESC), a page after a position is
 * `(created_at, id) < (@after_c, @after_i)`, LIMIT page size + 1. Each filter has an index ending in
 * (created_at, id), so a page — the first or one 50 pages deep — is a range scan of page size + 1 index
 * entries in order, with no sort and no OFFSET (the plans are checked in test/unit/catalog/paging.test.ts).
 */
import { BackupStatus } from "../../gen/rbdbackup/v1/backup_service";
import type { BackupFilter, JobFilter } from "../model";
import { backupFilterColumns } from "./filters";
import type { KeysetPosition } from "./page-token";

/**
 * Run at every open, after the added columns exist (one names backups.policy). backupsOfVolume has
 * its own index with the status (what runs per job reads a volume's backups of named statuses, not its
 * DELETED history); the default listing (all but DELETED) a partial one without the DELETED rows, which
 * outnumber the rest as the years go by; volume_id and policy are mostly '', hence partial. The
 * single-column indexes these replace are dropped (an older coordinator recreates them:
 * harmless).
 */
export const LISTING_INDEXES = `
DROP INDEX IF EXISTS backups_volume;
DROP INDEX IF EXISTS backups_created;
DROP INDEX IF EXISTS backups_policy;
DROP INDEX IF EXISTS jobs_state;
DROP INDEX IF EXISTS jobs_created;
CREATE INDEX IF NOT EXISTS backups_by_created ON backups (created_at, id);
CREATE INDEX IF NOT EXISTS backups_live_by_created ON backups (created_at, id) WHERE status <> ${BackupStatus.BACKUP_STATUS_DELETED};
CREATE INDEX IF NOT EXISTS backups_by_volume_status ON backups (cluster, pool, namespace, image, status, created_at, id);
CREATE INDEX IF NOT EXISTS backups_by_volume ON backups (cluster, pool, image, created_at, id);
CREATE INDEX IF NOT EXISTS backups_by_cluster ON backups (cluster, created_at, id);
CREATE INDEX IF NOT EXISTS backups_by_cluster_image ON backups (cluster, image, created_at, id);
CREATE INDEX IF NOT EXISTS backups_by_status ON backups (status, created_at, id);
CREATE INDEX IF NOT EXISTS backups_by_location ON backups (location_cluster, created_at, id);
CREATE INDEX IF NOT EXISTS backups_by_volume_id ON backups (volume_id, created_at, id) WHERE volume_id <> '';
CREATE INDEX IF NOT EXISTS backups_by_policy ON backups (policy, created_at, id) WHERE policy <> '';
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_kind ON jobs (kind, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_backup ON jobs (backup_id, created_at, id);
`;

export interface Listing {
  sql: string;
  args: Record<string, unknown>;
}

/** A keyset position's created_at as the backups table keeps it (ISO 8601 in ms, which sorts as text). */
function isoOf(ms: number): string {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) throw new RangeError("page_token is not one this server issued for this listing");
  return d.toISOString();
}

function keyset(where: string[], args: Record<string, unknown>, after: KeysetPosition | undefined, c: unknown) {
  if (!after) return;
  where.push("(created_at, id) < (@after_c, @after_i)");
  args.after_c = c;
  args.after_i = after.id;
}

const whereOf = (where: string[]) => (where.length ? `WHERE ${where.join(" AND ")}` : "");

/** A page of backups: rows (created_at, id, doc). Values are parameters; enums are checked numbers. */
export function backupListing(f: BackupFilter, pageSize: number, after?: KeysetPosition): Listing {
  const where: string[] = [];
  const args: Record<string, unknown> = {};
  for (const [col, v] of backupFilterColumns(f)) {
    where.push(`${col} = @${col}`);
    args[col] = v;
  }
  // A partial index is used only when the query states its condition (a parameter could be '').
  if (f.volumeId) where.push("volume_id <> ''");
  if (f.policy) where.push("policy <> ''");
  if (f.statuses?.length) where.push(`status IN (${f.statuses.map(Number).join(",")})`);
  else if (f.excludeDeleted) where.push(`status <> ${BackupStatus.BACKUP_STATUS_DELETED}`);
  keyset(where, args, after, after && isoOf(after.createdAt));
  return {
    sql: `SELECT created_at, id, doc FROM backups ${whereOf(where)} ORDER BY created_at DESC, id DESC LIMIT ${pageSize + 1}`,
    args,
  };
}

/** A page of jobs: rows (created_at, id, doc). */
export function jobListing(f: JobFilter, pageSize: number, after?: KeysetPosition): Listing {
  const where: string[] = [];
  const args: Record<string, unknown> = {};
  if (f.state) where.push(`state = ${Number(f.state)}`);
  if (f.kind) where.push(`kind = ${Number(f.kind)}`);
  if (f.backupId) {
    where.push("backup_id = @backup_id");
    args.backup_id = f.backupId;
  }
  keyset(where, args, after, after?.createdAt);
  return {
    sql: `SELECT created_at, id, doc FROM jobs ${whereOf(where)} ORDER BY created_at DESC, id DESC LIMIT ${pageSize + 1}`,
    args,
  };
}
