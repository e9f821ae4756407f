/**
 * Backup records: ExportBackupRecord writes what another coordinator needs to know an available backup;
 * ImportBackupRecord takes such a record in, after checking it (fields, version) and checking with an
 * agent of the location's cluster that the cluster is the same one (fsid) and the backup's snapshot is
 * still there — an import never adds a backup whose data is gone.
 */
import type { CallContext } from "nice-grpc-common";
import { alreadyExists, failedPrecondition, invalidArgument, notFound, Status, statusOf } from "../../common/errors";
import { isBaseImage, parseBackupSnap } from "../../common/ids";
import {
  type Backup,
  BackupStatus,
  type ExportBackupRecordRequest,
  type ImportBackupRecordRequest,
} from "../../gen/rbdbackup/v1/backup_service";
import type { BackupLocation } from "../../gen/rbdbackup/v1/common";
import { isUniqueViolation } from "../jobs/new-job";
import { ask } from "../jobs/probes";
import { volumeKey } from "../model";
import type { AgentSession } from "../sessions";
import * as v from "../validate";
import type { Admission } from "./admission";
import type { ApiDeps } from "./deps";

/** The version of the record format this coordinator writes and reads. */
const RECORD_VERSION = 1;

export function exportBackupRecord(deps: ApiDeps, req: ExportBackupRecordRequest): { version: number; backup: Backup } {
  v.uuid(req.backupId, "backup_id");
  const b = deps.catalog.getBackup(req.backupId);
  if (!b) throw notFound(`backup ${req.backupId} not found`);
  if (b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE) {
    throw failedPrecondition(`backup ${b.id} is ${BackupStatus[b.status]}; only an available backup can be exported`);
  }
  return { version: RECORD_VERSION, backup: b };
}

export async function importBackupRecord(
  deps: ApiDeps,
  adm: Admission,
  req: ImportBackupRecordRequest,
  ctx: CallContext,
): Promise<Backup> {
  const { b, loc } = validateRecord(req);
  if (deps.catalog.getBackup(b.id)) throw alreadyExists(`backup ${b.id} is already in this catalog`);
  adm.knownCluster(loc.cluster, "record.backup.location.cluster");
  const agent = deps.sessions.any(loc.cluster);
  if (b.locationFsid && agent.info.clusterFsid !== b.locationFsid) {
    throw failedPrecondition(
      `the record's backup is on a cluster with fsid ${b.locationFsid}, but cluster ${loc.cluster} here has fsid ${agent.info.clusterFsid}`,
    );
  }
  await requireSnapshot(agent, b, loc, ctx.signal);
  // A policy name is the exporting coordinator's: a policy of the same name here would take the backup
  // under its retention (and delete it). An imported backup belongs to no policy.
  const imported: Backup = {
    ...b,
    jobId: "",
    locationFsid: agent.info.clusterFsid,
    policy: "",
    warnings: b.policy
      ? [`made by policy ${b.policy} of the coordinator it was exported from; no policy manages it here`]
      : [],
  };
  try {
    deps.catalog.insertBackup(imported);
  } catch (e) {
    if (isUniqueViolation(e)) throw alreadyExists(`backup ${b.id} is already in this catalog`);
    throw e;
  }
  deps.log.info("backup record imported", {
    backup: b.id,
    volume: volumeKey(b.volume ?? { cluster: "", pool: "", namespace: "", image: "" }),
  });
  return imported;
}

/** Clones one record may list (each a volume the coordinator probes before a delete). */
const MAX_CLONES = 1000;

/** Every field of the record that the catalog relies on; INVALID_ARGUMENT naming the field. */
function validateRecord(req: ImportBackupRecordRequest): { b: Backup; loc: BackupLocation } {
  const r = req.record;
  if (!r?.backup) throw invalidArgument("record.backup is required");
  if (r.version !== RECORD_VERSION) {
    throw invalidArgument(`record.version ${r.version} is not supported (this coordinator reads ${RECORD_VERSION})`);
  }
  const b = r.backup;
  v.uuid(b.id, "record.backup.id");
  v.volumeRef(b.volume, "record.backup.volume");
  const loc = v.location(b.location, "record.backup.location");
  v.rbdName(loc.pool, "record.backup.location.pool");
  v.rbdName(b.baseImage, "record.backup.base_image");
  // Deleting the backup removes its base image once no backup snapshot is left on it: a record naming
  // a live volume as its base image would have DeleteBackup take that volume's matching snapshot, then it.
  if (!isBaseImage(b.baseImage)) {
    throw invalidArgument(
      `record.backup.base_image "${b.baseImage}" is not a base image name (<volume>.backup.<backup uuid>)`,
    );
  }
  if (parseBackupSnap(b.snapshot)?.backupId !== b.id) {
    throw invalidArgument(`record.backup.snapshot "${b.snapshot}" is not a snapshot of backup ${b.id}`);
  }
  v.volumeMetadata(b.volumeId, b.volumeMetadata);
  // The clones reach agents (DeleteBackup probes them, FlattenVolume names them): each a valid volume.
  if (b.clones.length > MAX_CLONES) throw invalidArgument(`record.backup.clones: at most ${MAX_CLONES}`);
  for (const [i, c] of b.clones.entries()) v.volumeRef(c, `record.backup.clones[${i}]`);
  if (b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE)
    throw invalidArgument("record.backup.status must be AVAILABLE");
  // Every later SAMPLE, FULL or SOURCE verification checks the digest map against this digest.
  const digest = b.integrity?.imageDigest ?? "";
  if (digest !== "" && !/^[0-9a-f]{64}$/.test(digest)) {
    throw invalidArgument("record.backup.integrity.image_digest must be empty or a lowercase hex SHA-256");
  }
  const block = b.integrity?.digestBlockSize ?? 0;
  if (digest !== "" && !(block >= 65536 && block <= 2 ** 31 && (block & (block - 1)) === 0)) {
    throw invalidArgument("record.backup.integrity.digest_block_size must be a power of two from 64 KiB to 2 GiB");
  }
  if (digest === "" && block !== 0) {
    throw invalidArgument("record.backup.integrity.digest_block_size must be 0 without an image_digest");
  }
  // Listings order by creation time; the catalogs store years 0000-9999 alike (ISO text, epoch ms).
  for (const [field, d] of [
    ["created_at", b.createdAt],
    ["completed_at", b.completedAt],
    ["integrity.last_verified_at", b.integrity?.lastVerifiedAt],
  ] as const) {
    const t = d?.getTime();
    if (t !== undefined && !(t >= 0 && t <= MAX_TIME_MS)) {
      throw invalidArgument(`record.backup.${field} must be between 1970 and 9999`);
    }
  }
  if (b.integrity) v.verifyMode(b.integrity.lastVerifyMode, "record.backup.integrity.last_verify_mode");
  return { b, loc };
}

/** 9999-12-31T23:59:59.999Z. */
const MAX_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/** FAILED_PRECONDITION unless the record's base image and snapshot are on the cluster. */
async function requireSnapshot(agent: AgentSession, b: Backup, loc: BackupLocation, signal: AbortSignal) {
  const image = { pool: loc.pool, namespace: loc.namespace, image: b.baseImage };
  const snaps = await ask(agent, { $case: "snapshots", value: { image } }, "snapshots", signal).catch((e) => {
    if (statusOf(e) === Status.NOT_FOUND) {
      throw failedPrecondition(
        `base image ${loc.pool}/${b.baseImage} of the record is not on cluster ${loc.cluster}: ${(e as Error).message}`,
      );
    }
    throw e;
  });
  if (!snaps.snapshots.some((s) => s.name === b.snapshot)) {
    throw failedPrecondition(
      `snapshot ${b.snapshot} of the record is not on ${loc.cluster}/${loc.pool}/${b.baseImage}: the backup is gone`,
    );
  }
}
