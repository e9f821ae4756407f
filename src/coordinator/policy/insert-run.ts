/**
 * One policy run into the catalog: its backup job built (the agents of both clusters asked), then the
 * backup (Backup.policy = the policy, which retention reads), the job and the record's advance inserted
 * in one transaction under the run's idempotency key. A key already used (a retried tick, a restart)
 * inserts nothing and returns that job; `still` is asked in the transaction, after the agents answered:
 * false (paused or deleted meanwhile) inserts nothing and returns "".
 * `known` (a scheduled run whose volume's previous run did not fail: unprobedRun) skips the agents'
 * probes (jobs/backup-job.ts).
 */
import { AppError, failedPrecondition } from "../../common/errors";
import type { Logger } from "../../common/log";
import { BackupStatus, JobKind, JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy } from "../../gen/rbdbackup/v1/policy";
import type { Catalog } from "../catalog/catalog";
import type { PolicyStore } from "../catalog/policy-store";
import { backupFingerprint, buildBackupJob, type Unprobed } from "../jobs/backup-job";
import { isUniqueViolation } from "../jobs/new-job";
import { type JobRecord, volumeLabel } from "../model";
import type { Sessions } from "../sessions";
import * as v from "../validate";
import { type ProtectionRecord, volumeKey } from "./model";
import { saveRunnerFields } from "./records";
import { runRequest } from "./slots";

export interface RunDeps {
  catalog: Catalog;
  store: PolicyStore;
  sessions: Sessions;
  scheduler: { kick(): void };
  log: Logger;
  maxAttempts: number;
}

/**
 * A scheduled run admitted without probes, unless the volume's previous run failed (its record counts
 * failures, or that job did not succeed): then undefined, and the run is probed (a volume or pool that
 * is gone gives NOT_FOUND at admission, not a failed job each slot). The size is the previous run's
 * backup's (0 when there is none).
 */
export function unprobedRun(
  catalog: Catalog,
  rec: ProtectionRecord,
  prev: JobRecord | undefined,
): Unprobed | undefined {
  if (rec.consecutiveFailures || rec.lastError) return undefined;
  if (!prev) return { sizeBytes: 0 };
  if (prev.state !== JobState.JOB_STATE_SUCCEEDED || prev.kind !== JobKind.JOB_KIND_BACKUP) return undefined;
  const b = catalog.getBackup(prev.backupId);
  return { sizeBytes: b?.status === BackupStatus.BACKUP_STATUS_AVAILABLE ? b.sizeBytes : 0 };
}

export async function insertRun(
  deps: RunDeps,
  now: () => number,
  p: Policy,
  vol: VolumeRef,
  key: string,
  update: (jobId: string) => ProtectionRecord | undefined,
  still: () => boolean,
  known?: Unprobed,
): Promise<string> {
  const { catalog } = deps;
  const existing = catalog.jobByIdempotencyKey(key);
  const req = runRequest(p, vol, key);
  if (existing) {
    const rec = update(existing.id);
    if (rec) saveRunnerFields(deps.store, rec);
    return existing.id;
  }
  // A policy stored before its templates were bounded when written (validate.ts overlongTemplate) can fill
  // a value past CreateBackup's limits: that run fails saying so, as CreateBackup would refuse it.
  try {
    v.volumeMetadata(req.volumeId, req.volumeMetadata);
  } catch (e) {
    if (!(e instanceof AppError)) throw e;
    // The policy's state, not the caller's request (RunPolicyNow names only the policy): a precondition.
    throw failedPrecondition(
      `policy ${p.name}: ${e.message} once its placeholders are filled for ${volumeLabel(vol)}; shorten the policy's template (UpdatePolicy)`,
    );
  }
  const dest = p.destination ?? { cluster: "", pool: "", namespace: "" };
  const fp = backupFingerprint(req);
  const { backup, job } = await buildBackupJob(
    deps,
    req,
    { vol, loc: dest, fingerprint: fp },
    // Probed questions have their own deadlines; this bounds the pair (no timer when none is asked).
    known ? new AbortController().signal : AbortSignal.timeout(30_000),
    now(),
    known,
  );
  backup.policy = p.name;
  try {
    const queued = catalog.transaction(() => {
      if (!still()) return false;
      catalog.insertBackup(backup);
      catalog.insertJob(job);
      const rec = update(job.id);
      if (rec) saveRunnerFields(deps.store, rec);
      return true;
    });
    if (!queued) {
      deps.log.info("policy run not queued: paused or deselected meanwhile", { policy: p.name, key });
      return "";
    }
  } catch (e) {
    const other = isUniqueViolation(e) && catalog.jobByIdempotencyKey(key);
    if (!other) throw e;
    const rec = update(other.id);
    if (rec) saveRunnerFields(deps.store, rec);
    return other.id;
  }
  deps.log.info("policy run queued", { policy: p.name, volume: volumeKey(vol), job: job.id, key });
  deps.scheduler.kick();
  return job.id;
}
