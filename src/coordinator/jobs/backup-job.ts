/**
 * A backup job as it is created, by CreateBackup (api/create-backup.ts) and by the policy runner alike:
 * the request checked, both clusters asked (the volume exists and is not empty, the destination pool and
 * namespace exist), an INCREMENTAL's parent required, then the backup record (CREATING) and its job
 * (QUEUED), ready to be inserted together. Idempotency and the insert stay with the caller.
 *
 * A policy's scheduled run is not probed (`Unprobed`, from the runner) unless the volume's previous
 * run failed: no API caller waits for a NOT_FOUND, the policy's destination was checked when the policy
 * was written, discovery lists a pool selector's images, and the two questions were most of a
 * scheduled backup's session messages. Agents of both clusters must still be connected (UNAVAILABLE
 * otherwise, as with the probes, so the runner's "no agent" handling is unchanged); the destination
 * pool and fsid are resolved as the probed path resolves them. Should the volume (or the pool) be gone,
 * the lease fails NOT_FOUND (not retried), the run counts as failed in the volume's protection status,
 * and that failure makes the next run probe again (one failed job, not one a slot). The record's size
 * is the previous backup's until the agent reports the image's (0 for a first run). API calls
 * (CreateBackup, RunPolicyNow) are always probed.
 */
import { randomUUID } from "node:crypto";
import { failedPrecondition, notFound } from "../../common/errors";
import { BackupMode } from "../../gen/rbdbackup/v1/agent";
import { type Backup, BackupStatus, CreateBackupRequest, JobKind } from "../../gen/rbdbackup/v1/backup_service";
import type { BackupLocation, VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { ProbeResponse } from "../../gen/rbdbackup/v1/session";
import type { Catalog } from "../catalog/catalog";
import { type JobRecord, volumeLabel } from "../model";
import { lockOfVolume } from "../scheduler";
import type { Sessions } from "../sessions";
import * as v from "../validate";
import { fingerprint, newJobRecord, sortedMeta } from "./new-job";
import { probe } from "./probes";

/** Where the backup goes, with the pool resolved (the agent's default backup pool when none was named). */
interface Destination {
  cluster: string;
  pool: string;
  namespace: string;
  fsid: string;
}

export interface BackupJobDeps {
  catalog: Catalog;
  sessions: Sessions;
  /** Attempts the job may make (the scheduler's maxAttempts). */
  maxAttempts: number;
}

/** The request's checked volume and location (INVALID_ARGUMENT naming the field). */
export function validateBackupRequest(req: CreateBackupRequest): { vol: VolumeRef; loc: BackupLocation } {
  const vol = v.volumeRef(req.volume, "volume");
  const loc = v.location(req.location, "location");
  v.backupMode(req.mode);
  v.volumeMetadata(req.volumeId, req.volumeMetadata);
  v.idempotencyKey(req.idempotencyKey);
  v.maxSnapshots(req.maxSnapshots);
  v.transferOptions(req.transfer);
  return { vol, loc };
}

/** The fingerprint of a backup request (its idempotency key left out, its metadata in key order). */
export function backupFingerprint(req: CreateBackupRequest): string {
  return fingerprint(
    "backup",
    CreateBackupRequest.toJSON({
      ...req,
      idempotencyKey: "",
      volumeMetadata: sortedMeta(req.volumeMetadata),
      transfer: v.transferOptions(req.transfer),
    }),
  );
}

/** A run admitted without probes: the volume's size as last known (0 = unknown until the agent reports). */
export interface Unprobed {
  sizeBytes: number;
}

/** The backup (CREATING) and its job (QUEUED) of a validated request; not inserted yet. */
export async function buildBackupJob(
  deps: BackupJobDeps,
  req: CreateBackupRequest,
  checked: { vol: VolumeRef; loc: BackupLocation; fingerprint: string },
  signal: AbortSignal,
  nowMs: number = Date.now(),
  known?: Unprobed,
): Promise<{ backup: Backup; job: JobRecord }> {
  const { vol, loc } = checked;
  const incremental = req.mode === BackupMode.BACKUP_MODE_INCREMENTAL;
  const trusted = known && !incremental ? unprobed(deps.sessions, vol, loc, known) : null;
  const { src, dest } = trusted ?? (await probeBoth(deps.sessions, vol, loc, signal));
  if (req.mode === BackupMode.BACKUP_MODE_INCREMENTAL) requireParent(deps.catalog, vol, dest, src);
  const backup = newBackup(req, vol, dest, src.imageSize, nowMs);
  const job = newJobRecord(
    {
      kind: JobKind.JOB_KIND_BACKUP,
      backupId: backup.id,
      volume: vol,
      operation: { kind: "backup", mode: req.mode, maxSnapshots: req.maxSnapshots, ...v.transferField(req.transfer) },
      idempotencyKey: req.idempotencyKey,
      fingerprint: checked.fingerprint,
      locks: [lockOfVolume(vol)],
      execCluster: vol.cluster,
      peerCluster: loc.cluster,
    },
    deps.maxAttempts,
    nowMs,
  );
  backup.jobId = job.id;
  return { backup, job };
}

/** A run that is not probed (see above): the destination resolved; UNAVAILABLE when no agent of either cluster is connected. */
function unprobed(
  sessions: Sessions,
  vol: VolumeRef,
  loc: BackupLocation,
  known: Unprobed,
): { src: ProbeResponse; dest: Destination } {
  sessions.any(vol.cluster);
  const dst = sessions.any(loc.cluster);
  const pool = loc.pool || dst.info.defaultBackupPool;
  const src = {
    missingPools: [],
    missingNamespaces: [],
    imageExists: true,
    imageSize: known.sizeBytes,
    imageSnapshots: [],
  };
  return { src, dest: { cluster: loc.cluster, pool, namespace: loc.namespace, fsid: dst.info.clusterFsid } };
}

/** Asks the source cluster about the volume and the destination cluster about the pool, at once. */
async function probeBoth(
  sessions: Sessions,
  vol: VolumeRef,
  loc: BackupLocation,
  signal: AbortSignal,
): Promise<{ src: ProbeResponse; dest: Destination }> {
  const dst = sessions.any(loc.cluster);
  const pool = loc.pool || dst.info.defaultBackupPool;
  const [src] = await Promise.all([
    probe(sessions, vol.cluster, { pools: [], image: vol, keepOpen: true }, signal, "volume"),
    probe(
      sessions,
      loc.cluster,
      { pools: [pool], namespaces: [{ pool, namespace: loc.namespace }] },
      signal,
      "location",
    ),
  ]);
  if (!src.imageExists) throw notFound(`volume ${volumeLabel(vol)} not found`);
  if (src.imageSize === 0) throw failedPrecondition(`volume ${volumeLabel(vol)} has size 0: nothing to back up`);
  return { src, dest: { cluster: loc.cluster, pool, namespace: loc.namespace, fsid: dst.info.clusterFsid } };
}

/** An INCREMENTAL needs an available backup in the same location whose snapshot is still on the volume. */
function requireParent(catalog: Catalog, vol: VolumeRef, dest: Destination, src: ProbeResponse): void {
  const onVolume = new Set(src.imageSnapshots.map((s) => s.name));
  const parent = catalog
    .backupsOfVolume(vol.cluster, vol.pool, vol.namespace, vol.image, BackupStatus.BACKUP_STATUS_AVAILABLE)
    .some(
      (b) =>
        b.status === BackupStatus.BACKUP_STATUS_AVAILABLE &&
        b.location?.cluster === dest.cluster &&
        b.location.pool === dest.pool &&
        b.location.namespace === dest.namespace &&
        onVolume.has(b.snapshot),
    );
  if (!parent) {
    throw failedPrecondition(
      `mode INCREMENTAL: no available backup of ${volumeLabel(vol)} in ${dest.cluster}/${dest.pool} whose snapshot is still on the volume; use AUTO or FULL`,
    );
  }
}

/** The backup record as it starts: CREATING, nothing transferred yet. */
function newBackup(
  req: CreateBackupRequest,
  vol: VolumeRef,
  dest: Destination,
  sizeBytes: number,
  nowMs: number,
): Backup {
  return creatingBackup({
    id: randomUUID(),
    volume: vol,
    volumeId: req.volumeId,
    volumeMetadata: req.volumeMetadata,
    location: { cluster: dest.cluster, pool: dest.pool, namespace: dest.namespace },
    locationFsid: dest.fsid,
    sizeBytes,
    createdAt: new Date(nowMs),
  });
}

/** A backup record in state CREATING: what is given, nothing transferred, no result yet. */
export function creatingBackup(
  b: Pick<
    Backup,
    "id" | "volume" | "volumeId" | "volumeMetadata" | "location" | "locationFsid" | "sizeBytes" | "createdAt"
  > &
    Partial<Pick<Backup, "incremental" | "parentSnapshot">>,
): Backup {
  return {
    status: BackupStatus.BACKUP_STATUS_CREATING,
    baseImage: "",
    snapshot: "",
    incremental: false,
    parentSnapshot: "",
    forcedFullReason: "",
    dataBytesSent: 0,
    zeroBytes: 0,
    transferSeconds: 0,
    jobId: "",
    completedAt: undefined,
    error: "",
    warnings: [],
    clones: [],
    integrity: undefined,
    policy: "",
    ...b,
  };
}
