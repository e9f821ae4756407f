/**
 * EXPORT and IMPORT jobs as they are created (ExportBackup, ImportBackup): one attempt each (a caller's
 * stream cannot be replayed), on an agent of the backup's cluster.
 *
 *  - EXPORT holds the backup's lock (and the from-backup's), so neither is deleted under the stream.
 *  - IMPORT creates its backup CREATING, like a backup job: a full import starts the chain
 *    "<volume image>.backup.<id>"; an incremental applies onto its parent's base image at the parent's
 *    snapshot. It holds the volume's lock (one job writes a volume's chains at a time) and the parent's.
 *    The coordinator names the new snapshot and writes backup.<id>.meta as a backup's (version 1); the
 *    image facts it cannot know before the stream (size, layout) are the parent's or defaults, and the
 *    agent that parses the stream may correct the size.
 */
import { randomUUID } from "node:crypto";
import { backupSnapName, baseImageName } from "../../common/ids";
import { type Backup, JobKind } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import { type Catalog, registeredFsid } from "../catalog/catalog";
import type { JobRecord } from "../model";
import { lockOfVolume, sharedLockOfBackup } from "../scheduler";
import { creatingBackup } from "./backup-job";
import { newJobRecord } from "./new-job";

/** librbd's default object size (order 22: 4 MiB), for an imported full backup's metadata. */
const DEFAULT_ORDER = 22;

/** An EXPORT job of AVAILABLE backup `b` (optionally from `from`, an older backup of its chain). */
export function exportJob(b: Backup, from: Backup | undefined, format: number, nowMs = Date.now()): JobRecord {
  if (!b.volume || !b.location) throw new Error(`backup ${b.id} has no volume or location`);
  const j = newJobRecord(
    {
      kind: JobKind.JOB_KIND_EXPORT,
      backupId: b.id,
      volume: b.volume,
      operation: { kind: "export", fromBackupId: from?.id ?? "", format },
      idempotencyKey: "",
      fingerprint: "",
      locks: [sharedLockOfBackup(b.id), ...(from ? [sharedLockOfBackup(from.id)] : [])],
      execCluster: b.location.cluster,
      peerCluster: "",
    },
    1,
    nowMs,
  );
  return j;
}

export interface ImportSpec {
  volume: VolumeRef;
  /** The location with its pool resolved, and the fsid of its cluster. */
  location: { cluster: string; pool: string; namespace: string };
  locationFsid: string;
  volumeId: string;
  volumeMetadata: Record<string, string>;
  parent: Backup | undefined;
  format: number;
  /** Epoch ms, ≤ now: when the stream's data was taken (header.taken_at); the backup's times then. */
  takenAtMs?: number;
  idempotencyKey: string;
  fingerprint: string;
}

/** The backup (CREATING) and IMPORT job (QUEUED) of a checked ImportBackup header; not inserted yet. */
export function importJob(catalog: Catalog, s: ImportSpec, nowMs = Date.now()): { backup: Backup; job: JobRecord } {
  const id = randomUUID();
  const p = s.parent;
  const baseImage = p ? p.baseImage : baseImageName(s.volume.image, id);
  const toSnapshot = backupSnapName(id, nowMs);
  // The data's time when the caller knows it (header.taken_at), else the import's.
  const at = s.takenAtMs ?? nowMs;
  const backup: Backup = creatingBackup({
    id,
    volume: s.volume,
    volumeId: s.volumeId,
    volumeMetadata: s.volumeMetadata,
    location: { ...s.location },
    locationFsid: s.locationFsid,
    incremental: !!p,
    parentSnapshot: p?.snapshot ?? "",
    sizeBytes: p?.sizeBytes ?? 0,
    createdAt: new Date(at),
  });

  const meta = importMetadata(catalog, backup, baseImage, toSnapshot, at);
  const job = newJobRecord(
    {
      kind: JobKind.JOB_KIND_IMPORT,
      backupId: id,
      volume: s.volume,
      operation: {
        kind: "import",
        format: s.format,
        baseImage,
        fromSnapshot: p?.snapshot ?? "",
        toSnapshot,
        metadataJson: JSON.stringify(meta),
        ...(p && catalog.getJob(p.jobId)?.kind === JobKind.JOB_KIND_IMPORT ? { parentImported: true } : {}),
        ...(s.takenAtMs !== undefined ? { takenAtMs: s.takenAtMs } : {}),
      },
      idempotencyKey: s.idempotencyKey,
      fingerprint: s.fingerprint,
      locks: [lockOfVolume(s.volume), ...(p ? [sharedLockOfBackup(p.id)] : [])],
      execCluster: s.location.cluster,
      peerCluster: "",
    },
    1,
    nowMs,
  );
  backup.jobId = job.id;
  return { backup, job };
}

/** backup.<id>.meta of an imported backup, as a volume backup's (agents/engine/metadata.ts, version 1). */
export function importMetadata(catalog: Catalog, b: Backup, baseImage: string, snapshot: string, nowMs: number) {
  const v = b.volume as VolumeRef;
  const fsid = registeredFsid(catalog, v.cluster);
  return {
    version: 1,
    backup_id: b.id,
    created_at: new Date(nowMs).toISOString(),
    volume: { id: b.volumeId, metadata: b.volumeMetadata },
    source: {
      kind: "rbd",
      cluster_fsid: fsid,
      cluster_name: v.cluster,
      pool: v.pool,
      namespace: v.namespace,
      image: v.image,
      snapshot,
    },
    image: {
      size: b.sizeBytes,
      features: "0",
      order: DEFAULT_ORDER,
      stripe_unit: 0,
      stripe_count: 0,
      image_meta: {},
    },
    chain: {
      base_image: baseImage,
      incremental: b.incremental,
      parent_snapshot: b.incremental ? b.parentSnapshot : null,
      snapshot,
    },
  };
}
