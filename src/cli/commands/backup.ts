/**
 * `rbdbackup backup create|list|show|delete|restore|snapshots|verify|export|import`: the backup verbs of
 * the public API (CreateBackup, ListBackups, GetBackup, DeleteBackup, RestoreBackup, ListBackupSnapshots;
 * VerifyBackup in ./backup-verify.ts; ExportBackup and ImportBackup in ./interchange.ts).
 */
import { MAX_SNAPSHOTS } from "../../common/api-limits";
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
  UsageError,
} from "../args";
import { withConnection } from "../connection";
import { dispatch } from "../dispatch";
import { ExitCode } from "../exit-codes";
import { backupBlock, backupTable, snapshotTable } from "../format";
import type { NounHelp } from "../help";
import { print, printJson } from "../output";
import { listPages } from "../paging";
import { TRANSFER_SYNOPSIS, transferField, transferFlagHelp, transferFlags } from "../transfer-flags";
import { afterQueued } from "../watch";
import { verify, verifyHelp } from "./backup-verify";
import { exportVerb, importVerb, interchangeHelp } from "./interchange";

const backupModes = {
  auto: BackupMode.BACKUP_MODE_AUTO,
  full: BackupMode.BACKUP_MODE_FULL,
  incremental: BackupMode.BACKUP_MODE_INCREMENTAL,
};

const restoreModes = {
  new: RestoreMode.RESTORE_MODE_NEW,
  original: RestoreMode.RESTORE_MODE_ORIGINAL,
  clone: RestoreMode.RESTORE_MODE_CLONE,
};

const statuses = {
  creating: BackupStatus.BACKUP_STATUS_CREATING,
  available: BackupStatus.BACKUP_STATUS_AVAILABLE,
  failed: BackupStatus.BACKUP_STATUS_FAILED,
  deleting: BackupStatus.BACKUP_STATUS_DELETING,
  deleted: BackupStatus.BACKUP_STATUS_DELETED,
  corrupt: BackupStatus.BACKUP_STATUS_CORRUPT,
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
    ...transferFlags,
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
    maxSnapshots: parseIntFlag(values["max-snapshots"], "max-snapshots", 0, MAX_SNAPSHOTS) ?? 0,
    ...transferField(values),
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
    return listPages(
      values,
      async (pageToken) => {
        const r = await conn.call((o) => conn.client.listBackups({ ...filter, pageToken }, o));
        return { items: r.backups, next: r.nextPageToken };
      },
      { field: "backups", toJSON: (x) => Backup.toJSON(x), table: backupTable, noun: "backups" },
    );
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
    flatten: { type: "boolean" },
    "allow-corrupt": { type: "boolean" },
    "allow-open": { type: "boolean" },
    "skip-image-meta": { type: "boolean" },
    "idempotency-key": { type: "string" },
    wait: { type: "boolean" },
    ...transferFlags,
  });
  const [backupId = ""] = positionals("backup restore", pos, ["BACKUP_ID"]);
  const mode = parseChoice(values.mode, "mode", restoreModes) ?? RestoreMode.RESTORE_MODE_NEW;
  if (values.flatten && mode !== RestoreMode.RESTORE_MODE_CLONE) throw new UsageError("--flatten needs --mode clone");
  if (values["allow-open"] && mode !== RestoreMode.RESTORE_MODE_ORIGINAL) {
    throw new UsageError("--allow-open needs --mode original");
  }
  const request = {
    backupId,
    target: parseVolumeSpec(requiredFlag(values.target, "target", "backup restore"), "--target"),
    mode,
    idempotencyKey: idempotencyKey(values["idempotency-key"]),
    flatten: values.flatten === true,
    allowCorrupt: values["allow-corrupt"] === true,
    allowOpen: values["allow-open"] === true,
    skipImageMeta: values["skip-image-meta"] === true,
    ...transferField(values),
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

const KEY = "--idempotency-key KEY";
const KEY_HELP =
  "the same key again returns the same job instead of queuing another (1 to 128 characters of A-Z a-z 0-9 . _ : -; default: a new cli-<uuid>, named in the error when the answer is lost)";
const WAIT_HELP = "follow the job to its end; the exit code says how it ended (0 succeeded, 1 failed, 3 cancelled)";

export const backupHelp: NounHelp = {
  noun: "backup",
  summary: "backups",
  verbs: {
    create: {
      synopsis:
        "--volume CLUSTER/POOL[/NAMESPACE]/IMAGE --to CLUSTER[/POOL[/NAMESPACE]] [--mode auto|full|incremental] " +
        `[--volume-id ID] [--meta KEY=VALUE]... [--idempotency-key KEY] [--max-snapshots N] ${TRANSFER_SYNOPSIS} [--wait]`,
      summary: "queue a backup of a volume into a pool of a cluster (no pool: that cluster's default backup pool)",
      flags: [
        ["--volume CLUSTER/POOL[/NAMESPACE]/IMAGE", "the volume to back up (required)"],
        [
          "--to CLUSTER[/POOL[/NAMESPACE]]",
          "where to keep the backup (required; no pool: the cluster's default backup pool)",
        ],
        [
          "--mode auto|full|incremental",
          "auto (default): incremental when a usable parent exists, else full; incremental without a parent is refused",
        ],
        ["--volume-id ID", "the control plane's id of the volume, kept with the backup"],
        ["--meta KEY=VALUE", "metadata kept with the backup and returned on restore (repeat for more)"],
        [KEY, KEY_HELP],
        [
          "--max-snapshots N",
          `backup snapshots to keep on the source volume, 0 to ${MAX_SNAPSHOTS} (default 0: what chains need)`,
        ],
        ...transferFlagHelp,
        ["--wait", WAIT_HELP],
      ],
      examples: ["backup create --volume site-a/rbd/vol-1 --to site-b/backups --wait"],
    },
    list: {
      synopsis:
        "[--cluster C] [--pool P] [--image I] [--volume-id ID] [--location CLUSTER] " +
        "[--status creating|available|failed|deleting|deleted|corrupt] [--limit N] [--page-token T] [--all]",
      summary:
        "backups, newest first (default: every status but deleted; one page of --limit, 1..1000; --all: every page)",
      flags: [
        [
          "--cluster C, --pool P, --image I",
          "only backups of volumes in this cluster, pool, image (--pool and --image need --cluster)",
        ],
        ["--volume-id ID", "only backups of the volume with this control-plane id"],
        ["--location CLUSTER", "only backups kept in this cluster"],
        ["--status STATUS", "only backups in this status: creating, available, failed, deleting, deleted or corrupt"],
        ["--limit N", "backups per page, 1 to 1000"],
        ["--page-token T", "the page after the one that printed this token"],
        ["--all", "every page"],
      ],
      examples: ["backup list --cluster site-a --image vol-1", "backup list --status failed --all --json"],
    },
    show: {
      synopsis: "BACKUP_ID",
      summary: "one backup: its volume, location, snapshot, parent, sizes and status",
      args: [["BACKUP_ID", "the backup's id (backup list shows them)"]],
      examples: ["backup show 0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60"],
    },
    delete: {
      synopsis: "BACKUP_ID [--idempotency-key KEY] [--wait]",
      summary: "queue the deletion of a backup (its snapshot, its metadata, the base image once empty)",
      args: [["BACKUP_ID", "the backup to delete"]],
      flags: [
        [KEY, KEY_HELP],
        ["--wait", WAIT_HELP],
      ],
      examples: ["backup delete 0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60 --wait"],
    },
    restore: {
      synopsis:
        "BACKUP_ID --target CLUSTER/POOL[/NAMESPACE]/IMAGE [--mode new|original|clone] [--flatten] " +
        `[--allow-corrupt] [--allow-open] [--skip-image-meta] [--idempotency-key KEY] ${TRANSFER_SYNOPSIS} [--wait]`,
      summary: "queue a restore of an available backup to a new volume (default), over an existing one, or as a clone",
      args: [["BACKUP_ID", "the backup to restore"]],
      flags: [
        [
          "--target CLUSTER/POOL[/NAMESPACE]/IMAGE",
          "the volume to write, in any cluster with a connected agent (required)",
        ],
        [
          "--mode new|original|clone",
          "new (default): the target must not exist; original: over an existing volume, every byte rewritten; " +
            "clone: an RBD clone of the backup's snapshot on the backup's own cluster, usable at once, no data copied",
        ],
        ["--flatten", "clone only: then copy the backup's data in (a FLATTEN job), so the backup can be deleted"],
        ["--allow-corrupt", "restore a backup a verification found CORRUPT anyway (else refused)"],
        [
          "--allow-open",
          "original only: write the volume even while another client has it open (else refused, nothing changed)",
        ],
        ["--skip-image-meta", "new, original: leave the backup's image-meta (e.g. QoS limits) off the target"],
        [KEY, KEY_HELP],
        ...transferFlagHelp,
        ["--wait", WAIT_HELP],
      ],
      examples: [
        "backup restore 0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60 --target site-b/rbd/vol-1-restored --wait",
        "backup restore 0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60 --target site-b/rbd/vol-1-now --mode clone --flatten",
      ],
    },
    snapshots: {
      synopsis: "CLUSTER/POOL[/NAMESPACE]/IMAGE",
      summary: "backup snapshots present on a volume (as its cluster's agent sees them now)",
      args: [["CLUSTER/POOL[/NAMESPACE]/IMAGE", "the volume"]],
      examples: ["backup snapshots site-a/rbd/vol-1"],
    },
    verify: verifyHelp,
    ...interchangeHelp,
  },
};

export function backupCommand(argv: string[]): Promise<number> {
  return dispatch(
    backupHelp,
    {
      create,
      list,
      show,
      delete: remove,
      restore,
      snapshots,
      verify,
      export: exportVerb,
      import: importVerb,
    },
    argv,
  );
}
