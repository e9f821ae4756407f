/**
 * CreateBackup: admits a backup of a volume into a location. Phases: validate the request and look up
 * its idempotency key; check both clusters are known; then the shared construction (jobs/backup-job.ts:
 * probes, an INCREMENTAL's parent, the backup and its job) and the insert of both together.
 */
import type { CallContext } from "nice-grpc-common";
import type { CreateBackupRequest, Job } from "../../gen/rbdbackup/v1/backup_service";
import { backupFingerprint, buildBackupJob, validateBackupRequest } from "../jobs/backup-job";
import type { Admission } from "./admission";
import type { ApiDeps } from "./deps";

export async function createBackup(
  deps: ApiDeps,
  adm: Admission,
  req: CreateBackupRequest,
  ctx: CallContext,
): Promise<Job> {
  const { vol, loc } = validateBackupRequest(req);
  const fp = backupFingerprint(req);
  const again = adm.replay(req.idempotencyKey, fp);
  if (again) return adm.view(again);
  adm.knownCluster(vol.cluster, "volume.cluster");
  adm.knownCluster(loc.cluster, "location.cluster");
  const { backup, job } = await buildBackupJob(deps, req, { vol, loc, fingerprint: fp }, ctx.signal);
  return adm.submit(job, () => deps.catalog.insertBackup(backup));
}
