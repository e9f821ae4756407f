/**
 * CreateBackup: admits a backup of a volume into a location. Phases: validate the request and look up
 * its idempotency key; ask both clusters' agents whether the volume and the destination pool/namespace
 * exist; check an INCREMENTAL has a parent to start from; then insert the backup (CREATING) and its
 * job together.
 */
import { randomUUID } from "node:crypto";
import type { CallContext } from "nice-grpc-common";
import { failedPrecondition, notFound } from "../../common/errors";
import { BackupMode } from "../../gen/rbdbackup/v1/agent";
import {
  type Backup,
  BackupStatus,
  CreateBackupRequest,
  type Job,
  JobKind,
} from "../../gen/rbdbackup/v1/backup_service";
import type { BackupLocation, VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { ProbeResponse } from "../../gen/rbdbackup/v1/session";
import type { Catalog } from "../catalog/catalog";
import { volumeLabel } from "../model";
import { lockOfVolume } from "../scheduler";
import * as v from "../validate";
import { type Admission, fingerprint, sortedMeta } from "./admission";
import type { ApiDeps } from "./deps";
import { probe } from "./probes";

/** Where the backup goes, with the pool resolved (the agent's default backup pool when none was named). */
interface Destination {
  cluster: string;
  pool: string;
  namespace: string;
  fsid: string;
}

export async function createBackup(
  deps: ApiDeps,
  adm: Admission,
  req: CreateBackupRequest,
  ctx: CallContext,
): Promise<Job> {
  const { vol, loc } = validate(req);
  const fp = fingerprint(
    "backup",
    CreateBackupRequest.toJSON({ ...req, idempotencyKey: "", volumeMetadata: sortedMeta(req.volumeMetadata) }),
  );
  const again = adm.replay(req.idempotencyKey, fp);
  if (again) return adm.view(again);
  adm.knownCluster(vol.cluster, "volume.cluster");
  adm.knownCluster(loc.cluster, "location.cluster");
  const { src, dest } = await probeBoth(deps, vol, loc, ctx.signal);
  if (req.mode === BackupMode.BACKUP_MODE_INCREMENTAL) requireParent(deps.catalog, vol, dest, src);
  const backup = newBackup(req, vol, dest, src.imageSize);
  const job = adm.newJob({
    kind: JobKind.JOB_KIND_BACKUP,
    backupId: backup.id,
    volume: vol,
    operation: { kind: "backup", mode: req.mode, maxSnapshots: req.maxSnapshots },
    idempotencyKey: req.idempotencyKey,
    fingerprint: fp,
    locks: [lockOfVolume(vol)],
    execCluster: vol.cluster,
    peerCluster: loc.cluster,
  });
  backup.jobId = job.id;
  return adm.submit(job, () => deps.catalog.insertBackup(backup));
}

function validate(req: CreateBackupRequest): { vol: VolumeRef; loc: BackupLocation } {
  const vol = v.volumeRef(req.volume, "volume");
  const loc = v.location(req.location, "location");
  v.backupMode(req.mode);
  v.volumeMetadata(req.volumeId, req.volumeMetadata);
  v.idempotencyKey(req.idempotencyKey);
  v.maxSnapshots(req.maxSnapshots);
  return { vol, loc };
}

/** Asks the source cluster about the volume and the destination cluster about the pool, at once. */
async function probeBoth(
  deps: ApiDeps,
  vol: VolumeRef,
  loc: BackupLocation,
  signal: AbortSignal,
): Promise<{ src: ProbeResponse; dest: Destination }> {
  const dst = deps.sessions.any(loc.cluster);
  const pool = loc.pool || dst.info.defaultBackupPool;
  const [src] = await Promise.all([
    probe(deps.sessions, vol.cluster, { pools: [], image: vol }, signal, "volume"),
    probe(
      deps.sessions,
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
    .backupsOfVolume(vol.cluster, vol.pool, vol.namespace, vol.image)
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
function newBackup(req: CreateBackupRequest, vol: VolumeRef, dest: Destination, sizeBytes: number): Backup {
  return {
    id: randomUUID(),
    volume: vol,
    volumeId: req.volumeId,
    volumeMetadata: req.volumeMetadata,
    location: { cluster: dest.cluster, pool: dest.pool, namespace: dest.namespace },
    locationFsid: dest.fsid,
    status: BackupStatus.BACKUP_STATUS_CREATING,
    baseImage: "",
    snapshot: "",
    incremental: false,
    parentSnapshot: "",
    forcedFullReason: "",
    sizeBytes,
    dataBytesSent: 0,
    zeroBytes: 0,
    transferSeconds: 0,
    jobId: "",
    createdAt: new Date(),
    completedAt: undefined,
    error: "",
    warnings: [],
    clones: [],
  };
}
