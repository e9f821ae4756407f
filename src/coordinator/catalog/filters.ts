/**
 * The equality filters of a backup listing, as (column, value) pairs for the stores' SQL: one list, so
 * the SQLite and PostgreSQL listings filter on the same columns. Only the filters that are set.
 */
import type { BackupStatus } from "../../gen/rbdbackup/v1/backup_service";
import type { BackupFilter } from "../model";

/** backupsOfVolume's status argument: one status or several. */
export type Statuses = BackupStatus | readonly BackupStatus[];

/** backupsOfVolume's status argument as a list ([] = every status). */
export function statusList(status?: Statuses): BackupStatus[] {
  return status === undefined ? [] : typeof status === "number" ? [status] : [...status];
}

export function backupFilterColumns(f: BackupFilter): Array<[column: string, value: string]> {
  const all: Array<[string, string | undefined]> = [
    ["cluster", f.cluster],
    ["pool", f.pool],
    ["image", f.image],
    ["volume_id", f.volumeId],
    ["location_cluster", f.locationCluster],
    ["policy", f.policy],
  ];
  return all.filter((e): e is [string, string] => !!e[1]);
}
