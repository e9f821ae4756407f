/**
 * Columns the policy runner reads instead of whole records, added to catalogs made before them:
 *
 * - `backups.policy` (Backup.policy): the policy whose run made the backup, so retention tells a
 *   policy's backups without reading each one's job. Backups from before the column get it from their
 *   record's JSON when it has one, else from their job's idempotency key ("pol:<policy>:…", the runner's keys; a retention DELETE key has no backup of
 *   its own), in the column and in the record's JSON.
 * - `protection.next_run_at` (ProtectionRecord.nextRunAt), indexed: the runner reads only due records.
 *
 * Idempotent: run at every open.
 */
import type Database from "better-sqlite3";

const hasColumn = (db: Database.Database, table: string, col: string): boolean =>
  (db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).some((c) => c.name === col);

/** Backfills Backup.policy of policy-made backups from before the column (their jobs' keys). */
const BACKFILL_BACKUP_POLICY = `
UPDATE backups SET
  policy = (SELECT substr(j.idempotency_key, 5, instr(substr(j.idempotency_key, 5), ':') - 1)
            FROM jobs j WHERE j.id = json_extract(backups.doc, '$.jobId')),
  doc = json_set(doc, '$.policy',
          (SELECT substr(j.idempotency_key, 5, instr(substr(j.idempotency_key, 5), ':') - 1)
           FROM jobs j WHERE j.id = json_extract(backups.doc, '$.jobId')))
WHERE policy = '' AND EXISTS (
  SELECT 1 FROM jobs j WHERE j.id = json_extract(backups.doc, '$.jobId') AND j.idempotency_key LIKE 'pol:%:%'
)
`;

export function migratePolicyColumns(db: Database.Database): void {
  db.transaction(() => {
    if (!hasColumn(db, "backups", "policy")) {
      db.exec("ALTER TABLE backups ADD COLUMN policy TEXT NOT NULL DEFAULT ''");
      db.exec("UPDATE backups SET policy = COALESCE(json_extract(doc, '$.policy'), '')");
      db.exec(BACKFILL_BACKUP_POLICY);
    }
    if (!hasColumn(db, "protection", "next_run_at")) {
      db.exec("ALTER TABLE protection ADD COLUMN next_run_at INTEGER NOT NULL DEFAULT 0");
      db.exec("UPDATE protection SET next_run_at = COALESCE(json_extract(doc, '$.nextRunAt'), 0)");
    }
    db.exec("CREATE INDEX IF NOT EXISTS protection_due ON protection (next_run_at)");
  })();
}
