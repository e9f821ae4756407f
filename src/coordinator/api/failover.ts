/**
 * FailoverVolume, the failover drill: the newest AVAILABLE backup of a volume at a location becomes a
 * writable volume there — a CLONE restore (restore-delete.ts; optionally flattened afterwards) — and
 * every protection record of the volume is paused (ProtectionRecord.pausedReason), so that no policy
 * keeps backing up the lost site's volume over the history the failover started from. Resuming is
 * left to the operator (the policy API).
 */
import type { CallContext } from "nice-grpc-common";
import { invalidArgument, notFound } from "../../common/errors";
import { RestoreMode } from "../../gen/rbdbackup/v1/agent";
import {
  Backup,
  FailoverVolumeRequest,
  type FailoverVolumeResponse,
  JobKind,
  JobState,
} from "../../gen/rbdbackup/v1/backup_service";
import type { BackupLocation, VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Catalog } from "../catalog/catalog";
import { fingerprint, POLICY_RUN_KEY_PREFIX } from "../jobs/new-job";
import { volumeKey, volumeLabel } from "../model";
import { newestAvailable } from "../policy/recovery-point";
import { withdrawRetentionDeletes } from "../policy/retention-jobs";
import * as v from "../validate";
import type { Admission } from "./admission";
import type { ApiDeps } from "./deps";
import { restoreBackup } from "./restore-delete";

const MAX_REASON = 256;

/** The newest available backup of `volume` kept at `at` (pool empty = any pool of the cluster). */
export function newestAt(catalog: Catalog, volume: VolumeRef, at: BackupLocation): Backup | undefined {
  return newestAvailable(
    catalog,
    volume,
    (l) => l.cluster === at.cluster && (!at.pool || (l.pool === at.pool && l.namespace === at.namespace)),
  );
}

/** The policies whose protection of the volume is paused now (a replayed failover's answer). */
function pausedFor(catalog: Catalog, volume: VolumeRef): string[] {
  return catalog.policies
    .protectionOfVolume(volumeKey(volume))
    .filter((r) => r.pausedReason)
    .map((r) => r.policy);
}

/**
 * Pauses every protection record of the volume (those already paused keep their reason); returns the
 * policies concerned.
 */
export function pauseProtection(catalog: Catalog, volume: VolumeRef, reason: string): string[] {
  const store = catalog.policies;
  return catalog.transaction(() =>
    store.protectionOfVolume(volumeKey(volume)).map((r) => {
      if (!r.pausedReason) store.upsertProtection({ ...r, pausedReason: reason });
      return r.policy;
    }),
  );
}

/**
 * The volume's policy runs still queued (a slot due before the failover, waiting for the lost site's
 * agent) are cancelled: run later, they would back the lost volume up into the chain, its newest backup.
 * A run already going is the operator's to cancel (CancelJob). Its retention DELETEs still queued are
 * withdrawn ("no retention until resumed": the older restore points may be what the failover needs).
 */
function cancelQueuedRuns(deps: ApiDeps, volume: VolumeRef, failover: string): void {
  const key = volumeKey(volume);
  for (const j of deps.catalog.activeJobs()) {
    if (j.kind !== JobKind.JOB_KIND_BACKUP || j.state !== JobState.JOB_STATE_QUEUED) continue;
    if (!j.idempotencyKey.startsWith(POLICY_RUN_KEY_PREFIX) || !j.volume || volumeKey(j.volume) !== key) continue;
    deps.scheduler.cancel(j);
    deps.log.info("queued policy run cancelled by a failover", { job: j.id, volume: key, failover });
  }
  withdrawRetentionDeletes(deps, { volume }, `the volume's protection was paused by failover job ${failover}`);
}

export async function failoverVolume(
  deps: ApiDeps,
  adm: Admission,
  req: FailoverVolumeRequest,
  ctx: CallContext,
): Promise<FailoverVolumeResponse> {
  const volume = v.volumeRef(req.volume, "volume");
  const at = v.location(req.location, "location");
  if (!req.target) throw invalidArgument("target is required");
  const target = v.volumeRef({ ...req.target, cluster: req.target.cluster || at.cluster }, "target");
  if (target.cluster !== at.cluster) {
    throw invalidArgument(`target.cluster: the failover volume is made on the backups' cluster ${at.cluster}`);
  }
  if (req.reason.length > MAX_REASON) throw invalidArgument(`reason: at most ${MAX_REASON} characters`);
  v.idempotencyKey(req.idempotencyKey);
  // The key stands for this request (volume, location, target, flatten, reason), not for the restore it
  // became: a retry gets the same job even when a newer backup completed meanwhile, and pauses nothing
  // again (the operator may have resumed protection since).
  const fp = fingerprint("failover", FailoverVolumeRequest.toJSON({ ...req, idempotencyKey: "" }));
  const again = adm.replay(req.idempotencyKey, fp);
  if (again) {
    return {
      job: adm.view(again),
      backup: deps.catalog.getBackup(again.backupId) ?? Backup.fromPartial({ id: again.backupId }),
      pausedPolicies: pausedFor(deps.catalog, volume),
    };
  }
  const b = newestAt(deps.catalog, volume, at);
  if (!b) {
    const where = `${at.cluster}${at.pool ? `/${at.pool}${at.namespace ? `/${at.namespace}` : ""}` : ""}`;
    throw notFound(`volume ${volumeLabel(volume)} has no available backup at ${where}`);
  }
  // The protection is paused in the transaction that queues the restore: both or neither (a write
  // fenced between two transactions left a failover whose policies kept backing up the lost volume).
  let pausedPolicies: string[] = [];
  let madeId = "";
  const job = await restoreBackup(
    deps,
    adm,
    {
      backupId: b.id,
      target,
      mode: RestoreMode.RESTORE_MODE_CLONE,
      idempotencyKey: req.idempotencyKey,
      flatten: req.flatten,
      allowCorrupt: false,
      transfer: undefined,
      allowOpen: false,
      skipImageMeta: false,
    },
    ctx,
    fp,
    (made) => {
      madeId = made.id;
      const why = `failed over to ${volumeLabel(target)} from backup ${b.id} (job ${made.id})${req.reason ? `: ${req.reason}` : ""}`;
      pausedPolicies = pauseProtection(deps.catalog, volume, why);
    },
  );
  // Another call with the same key queued its job first (this transaction rolled back): what it paused.
  if (job.id !== madeId) pausedPolicies = pausedFor(deps.catalog, volume);
  else cancelQueuedRuns(deps, volume, job.id);
  deps.log.info("volume failed over", { volume: volumeLabel(volume), backup: b.id, job: job.id, pausedPolicies });
  return { job, backup: deps.catalog.getBackup(b.id) ?? b, pausedPolicies };
}
