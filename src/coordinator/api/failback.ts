/**
 * FailbackVolume, the way back after FailoverVolume: the original volume V takes the content of the
 * failed-over volume V' (a CLONE restore of backup B on B's cluster). It is a RESTORE job of B, mode
 * FAILBACK, run by B's cluster's agent (which holds V') and streamed to V's agent:
 *
 *  - V' still a clone of B's snapshot and V still holding its own snapshot of B (same name): V is
 *    rolled back to that snapshot and only V''s own extents travel — the changes since the failover;
 *  - otherwise (V' flattened, V gone, V without the snapshot) every byte is copied, and the job's
 *    result says why (RestoreResult.full_copy_reason). The agents decide: they see the images.
 *
 * The backup is the one named, else the backup of V listing V' among its clones, else the one of the
 * newest successful CLONE restore onto V' (a flattened V' has left the clones list).
 */
import type { CallContext } from "nice-grpc-common";
import { failedPrecondition, invalidArgument, notFound } from "../../common/errors";
import { RestoreMode } from "../../gen/rbdbackup/v1/agent";
import {
  type Backup,
  BackupStatus,
  type FailbackVolumeRequest,
  type FailbackVolumeResponse,
  JobKind,
  JobState,
} from "../../gen/rbdbackup/v1/backup_service";
import { TransferOptions, type VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Catalog } from "../catalog/catalog";
import { fingerprint } from "../jobs/new-job";
import { probe } from "../jobs/probes";
import { volumeKey, volumeLabel } from "../model";
import { lockOfVolume, sharedLockOfBackup } from "../scheduler";
import * as v from "../validate";
import type { Admission } from "./admission";
import type { ApiDeps } from "./deps";

const same = (a: VolumeRef | undefined, b: VolumeRef) => !!a && volumeKey(a) === volumeKey(b);

/** The backup of `volume` that `source` was cloned from (see the module comment), or undefined. */
export function parentBackup(catalog: Catalog, volume: VolumeRef, source: VolumeRef): Backup | undefined {
  const backups = catalog
    .backupsOfVolume(volume.cluster, volume.pool, volume.namespace, volume.image, BackupStatus.BACKUP_STATUS_AVAILABLE)
    .filter((b) => b.status === BackupStatus.BACKUP_STATUS_AVAILABLE);
  const listed = backups.find((b) => b.clones.some((c) => same(c, source)));
  if (listed) return listed;
  let best: { b: Backup; at: number } | undefined;
  for (const b of backups) {
    const jobs = catalog.listJobs(
      { kind: JobKind.JOB_KIND_RESTORE, backupId: b.id, state: JobState.JOB_STATE_SUCCEEDED },
      1000,
      "",
    ).items;
    for (const j of jobs) {
      const op = j.operation;
      if (op.kind !== "restore" || op.mode !== RestoreMode.RESTORE_MODE_CLONE || !same(op.target, source)) continue;
      if (!best || j.finishedAt > best.at) best = { b, at: j.finishedAt };
    }
  }
  return best?.b;
}

function chooseBackup(catalog: Catalog, req: FailbackVolumeRequest, volume: VolumeRef, source: VolumeRef): Backup {
  if (req.backupId) {
    v.uuid(req.backupId, "backup_id");
    const b = catalog.getBackup(req.backupId);
    if (!b?.location) throw notFound(`backup ${req.backupId} not found`);
    if (!same(b.volume, volume)) {
      throw invalidArgument(`backup_id: backup ${b.id} is not a backup of ${volumeLabel(volume)}`);
    }
    if (b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE) {
      throw failedPrecondition(`backup ${b.id} is ${BackupStatus[b.status]}; a failback needs an available backup`);
    }
    return b;
  }
  const b = parentBackup(catalog, volume, source);
  if (!b) {
    throw notFound(
      `no available backup of ${volumeLabel(volume)} is known as the parent of ${volumeLabel(source)} (name it with backup_id)`,
    );
  }
  return b;
}

export async function failbackVolume(
  deps: ApiDeps,
  adm: Admission,
  req: FailbackVolumeRequest,
  ctx: CallContext,
): Promise<FailbackVolumeResponse> {
  const volume = v.volumeRef(req.volume, "volume");
  const source = v.volumeRef(req.source, "source");
  if (same(volume, source)) throw invalidArgument("source: the failed-over volume cannot be the volume itself");
  v.idempotencyKey(req.idempotencyKey);
  const transfer = v.transferField(req.transfer);
  const fp = fingerprint("failback", {
    volume: volumeKey(volume),
    source: volumeKey(source),
    backup: req.backupId,
    ...(transfer.transfer ? { transfer: TransferOptions.toJSON(transfer.transfer) } : {}),
  });
  const again = adm.replay(req.idempotencyKey, fp);
  if (again) return { job: adm.view(again), backup: deps.catalog.getBackup(again.backupId) };
  adm.knownCluster(volume.cluster, "volume.cluster");
  const b = chooseBackup(deps.catalog, req, volume, source);
  const at = b.location?.cluster ?? "";
  if (source.cluster !== at) {
    throw invalidArgument(`source.cluster: the failed-over volume is on the backup's cluster ${at}`);
  }
  deps.sessions.any(at);
  deps.sessions.any(volume.cluster);
  const requireFree = () => {
    const busy = deps.catalog
      .activeJobs()
      .find((j) => j.locks.includes(lockOfVolume(volume)) || j.locks.includes(lockOfVolume(source)));
    if (busy) {
      throw failedPrecondition(
        `${volumeLabel(volume)} or ${volumeLabel(source)} is in use by job ${busy.id} (${JobKind[busy.kind]}); retry when it has finished`,
      );
    }
  };
  requireFree();
  const p = await probe(deps.sessions, at, { pools: [], image: source }, ctx.signal, "source");
  if (!p.imageExists) throw notFound(`source ${volumeLabel(source)} not found`);
  const job = adm.newJob({
    kind: JobKind.JOB_KIND_RESTORE,
    backupId: b.id,
    volume,
    operation: { kind: "restore", target: volume, mode: RestoreMode.RESTORE_MODE_FAILBACK, source, ...transfer },
    idempotencyKey: req.idempotencyKey,
    fingerprint: fp,
    locks: [lockOfVolume(volume), lockOfVolume(source), sharedLockOfBackup(b.id)],
    execCluster: at,
    peerCluster: volume.cluster,
  });
  // Again with the insert: another failback (or restore) onto either volume may have been admitted while
  // the source was probed — unless that one is this very request again (its retry answers with its job).
  const submitted = await adm.submit(job, () => {
    if (req.idempotencyKey && deps.catalog.jobByIdempotencyKey(req.idempotencyKey)) return;
    requireFree();
    // The backup too, as it is now: handed to a DELETE while the source was probed, it cannot be sent back.
    const now = deps.catalog.getBackup(b.id);
    if (now?.status !== BackupStatus.BACKUP_STATUS_AVAILABLE) {
      throw failedPrecondition(
        `backup ${b.id} is ${now ? BackupStatus[now.status] : "gone"} (changed while the source was checked); fail back again`,
      );
    }
  });
  deps.log.info("volume failback queued", {
    volume: volumeLabel(volume),
    source: volumeLabel(source),
    backup: b.id,
    job: submitted.id,
  });
  return { job: submitted, backup: deps.catalog.getBackup(b.id) ?? b };
}
