/**
 * One policy run into the catalog: its backup job built (the agents of both clusters asked), then the
 * backup (Backup.policy = the policy, which retention reads), the job and the record's advance inserted
 * in one transaction under the run's idempotency key. A key already used (a retried tick, a restart)
 * inserts nothing and returns that job; `still` is asked in the transaction, after the agents answered:
 * false (paused or deleted meanwhile) inserts nothing and returns "".
 */
import type { Logger } from "../../common/log";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy } from "../../gen/rbdbackup/v1/policy";
import type { Catalog } from "../catalog/catalog";
import type { PolicyStore } from "../catalog/policy-store";
import { backupFingerprint, buildBackupJob } from "../jobs/backup-job";
import { isUniqueViolation } from "../jobs/new-job";
import type { Sessions } from "../sessions";
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

export async function insertRun(
  deps: RunDeps,
  now: () => number,
  p: Policy,
  vol: VolumeRef,
  key: string,
  update: (jobId: string) => ProtectionRecord | undefined,
  still: () => boolean,
): Promise<string> {
  const { catalog } = deps;
  const existing = catalog.jobByIdempotencyKey(key);
  const req = runRequest(p, vol, key);
  if (existing) {
    const rec = update(existing.id);
    if (rec) saveRunnerFields(deps.store, rec);
    return existing.id;
  }
  const dest = p.destination ?? { cluster: "", pool: "", namespace: "" };
  const fp = backupFingerprint(req);
  const { backup, job } = await buildBackupJob(
    deps,
    req,
    { vol, loc: dest, fingerprint: fp },
    AbortSignal.timeout(30_000),
    now(),
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
