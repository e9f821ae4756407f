/**
 * `rbdbackup backup create|list|show|delete|restore|snapshots`: the backup verbs of the public API
 * (CreateBackup, ListBackups, GetBackup, DeleteBackup, RestoreBackup, ListBackupSnapshots).
 */
import { BackupMode, ListBackupSnapshotsResponse, RestoreMode } from "../../gen/rbdbackup/v1/agent";
import { Backup, BackupStatus, type ListBackupsRequest } from "../../gen/rbdbackup/v1/backup_service";
import {
  idempotencyKey,
  parseChoice,
  parseFlags,
  parseIntFlag,
  parseLocationSpec,
  parseMeta,
  parseVolumeSpec,
  positionals,
  requiredFlag,
} from "../args";
import { withConnection } from "../connection";
import { dispatch } from "../dispatch";
import { ExitCode } from "../exit-codes";
import { backupBlock, backupTable, snapshotTable } from "../format";
import { note, print, printJson } from "../output";
import { fetchPages } from "../paging";
import { afterQueued } from "../watch";

const backupModes = {
  auto: BackupMode.BACKUP_MODE_AUTO,
  full: BackupMode.BACKUP_MODE_FULL,
  incremental: BackupMode.BACKUP_MODE_INCREMENTAL,
};

const restoreModes = { new: RestoreMode.RESTORE_MODE_NEW, original: RestoreMode.RESTORE_MODE_ORIGINAL };

const statuses = {
  creating: BackupStatus.BACKUP_STATUS_CREATING,
  available: BackupStatus.BACKUP_STATUS_AVAILABLE,
  failed: BackupStatus.BACKUP_STATUS_FAILED,
  deleting: BackupStatus.BACKUP_STATUS_DELETING,
  deleted: BackupStatus.BACKUP_STATUS_DELETED,
};

async function create(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    volume: { type: "string" },
    to: { type: "string" },
    mode: { type: "string" },
    "volume-id": { type: "string" },
    meta: { type: "string", multiple: true },
    "idempotency-key": { type: "string" },
    "max-snapshots": { type: "string" },
    wait: { type: "boolean" },
  });
  positionals("backup create", pos, []);
  const volume = parseVolumeSpec(requiredFlag(values.volume, "volume", "backup create"), "--volume");
  const location = parseLocationSpec(requiredFlag(values.to, "to", "backup create"), "--to");
  const request = {
    volume,
    location,
    mode: parseChoice(values.mode, "mode", backupModes) ?? BackupMode.BACKUP_MODE_AUTO,
    volumeId: values["volume-id"] ?? "",
    volumeMetadata: parseMeta(values.meta),
    idempotencyKey: idempotencyKey(values["idempotency-key"]),
    maxSnapshots: parseIntFlag(values["max-snapshots"], "max-snapshots", 0, 100_000) ?? 0,
  };
  return withConnection(values, async (conn) => {
    const job = await conn.call((o) => conn.client.createBackup(request, o));
    return afterQueued(conn, job, { wait: values.wait === true, json: values.json === true });
  });
}

async function list(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    cluster: { type: "string" },
    pool: { type: "string" },
    image: { type: "string" },
    "volume-id": { type: "string" },
    location: { type: "string" },
    status: { type: "string" },
    limit: { type: "string" },
    "page-token": { type: "string" },
    all: { type: "boolean" },
  });
  positionals("backup list", pos, []);
  const filter: Omit<ListBackupsRequest, "pageToken"> = {
    cluster: values.cluster ?? "",
    pool: values.pool ?? "",
    image: values.image ?? "",
    volumeId: values["volume-id"] ?? "",
    locationCluster: values.location ?? "",
    status: parseChoice(values.status, "status", statuses) ?? BackupStatus.BACKUP_STATUS_UNSPECIFIED,
    pageSize: parseIntFlag(values.limit, "limit", 1, 1000) ?? 0,
  };
  return withConnection(values, async (conn) => {
    const page = await fetchPages(
      async (pageToken) => {
        const r = await conn.call((o) => conn.client.listBackups({ ...filter, pageToken }, o));
        return { items: r.backups, next: r.nextPageToken };
      },
      values["page-token"] ?? "",
      values.all === true,
    );
    if (values.json) {
      printJson({ backups: page.items.map((b) => Backup.toJSON(b)), nextPageToken: page.next });
    } else {
      print(backupTable(page.items));
      if (page.next) note(`more backups: --page-token ${page.next} (or --all)`);
    }
    return ExitCode.Ok;
  });
}

async function show(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {});
  const [backupId = ""] = positionals("backup show", pos, ["BACKUP_ID"]);
  return withConnection(values, async (conn) => {
    const b = await conn.call((o) => conn.client.getBackup({ backupId }, o));
    if (values.json) printJson(Backup.toJSON(b));
    else print(backupBlock(b));
    return ExitCode.Ok;
  });
}

async function remove(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    "idempotency-key": { type: "string" },
    wait: { type: "boolean" },
  });
  const [backupId = ""] = positionals("backup delete", pos, ["BACKUP_ID"]);
  const key = idempotencyKey(values["idempotency-key"]);
  return withConnection(values, async (conn) => {
    const job = await conn.call((o) => conn.client.deleteBackup({ backupId, idempotencyKey: key }, o));
    return afterQueued(conn, job, { wait: values.wait === true, json: values.json === true });
  });
}

async function restore(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    target: { type: "string" },
    mode: { type: "string" },
    "idempotency-key": { type: "string" },
    wait: { type: "boolean" },
  });
  const [backupId = ""] = positionals("backup restore", pos, ["BACKUP_ID"]);
  const request = {
    backupId,
    target: parseVolumeSpec(requiredFlag(values.target, "target", "backup restore"), "--target"),
    mode: parseChoice(values.mode, "mode", restoreModes) ?? RestoreMode.RESTORE_MODE_NEW,
    idempotencyKey: idempotencyKey(values["idempotency-key"]),
  };
  return withConnection(values, async (conn) => {
    const job = await conn.call((o) => conn.client.restoreBackup(request, o));
    return afterQueued(conn, job, { wait: values.wait === true, json: values.json === true });
  });
}

async function snapshots(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {});
  const [spec = ""] = positionals("backup snapshots", pos, ["CLUSTER/POOL[/NAMESPACE]/IMAGE"]);
  const volume = parseVolumeSpec(spec);
  return withConnection(values, async (conn) => {
    const r = await conn.call((o) => conn.client.listBackupSnapshots({ volume }, o));
    if (values.json) printJson({ snapshots: [], ...(ListBackupSnapshotsResponse.toJSON(r) as object) });
    else print(snapshotTable(r.snapshots));
    return ExitCode.Ok;
  });
}

export function backupCommand(argv: string[]): Promise<number> {
  return dispatch("backup", { create, list, show, delete: remove, restore, snapshots }, argv);
}
