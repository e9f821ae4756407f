/**
 * ExportBackup: a backup (or the difference between two backups of one chain) as an `rbd export-diff`
 * stream. Phases: check the request and the backups (AVAILABLE; the from-backup an older one of the
 * same chain), queue the EXPORT job with its relay open (../interchange/run.ts), answer its id, then
 * relay the agent's bytes as they come; the stream ends once the job SUCCEEDED, or fails with the
 * job's status. The caller going away cancels the job.
 */
import type { CallContext } from "nice-grpc-common";
import { failedPrecondition, notFound, unavailable } from "../../common/errors";
import {
  type Backup,
  BackupStatus,
  DiffFormat,
  type ExportBackupChunk,
  type ExportBackupRequest,
} from "../../gen/rbdbackup/v1/backup_service";
import { madeJob } from "../ha/standby-gate";
import { InterchangeRun } from "../interchange/run";
import { exportJob } from "../jobs/interchange-jobs";
import * as v from "../validate";
import type { Admission } from "./admission";
import type { ApiDeps } from "./deps";

/** The format as the agent takes it (1 or 2). */
export const formatNumber = (f: DiffFormat): number => (f === DiffFormat.DIFF_FORMAT_RBD_V2 ? 2 : 1);

function available(deps: ApiDeps, id: string, field: string): Backup {
  const b = deps.catalog.getBackup(id);
  if (!b?.location || !b.volume) throw notFound(`${field}: backup ${id} not found`);
  if (b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE) {
    throw failedPrecondition(`backup ${b.id} is ${BackupStatus[b.status]}; only an available backup can be exported`);
  }
  return b;
}

/** `from` must be an older backup of b's chain (same location and base image). */
function requireOlderInChain(b: Backup, from: Backup): void {
  const loc = (x: Backup) => `${x.location?.cluster}/${x.location?.pool}/${x.location?.namespace}`;
  if (from.id === b.id) throw failedPrecondition(`from_backup_id: backup ${b.id} cannot be exported from itself`);
  if (loc(from) !== loc(b) || from.baseImage !== b.baseImage) {
    throw failedPrecondition(
      `from_backup_id: backup ${from.id} is not in backup ${b.id}'s chain (${loc(b)}/${b.baseImage}); an incremental export needs an older backup of the same chain`,
    );
  }
  if ((from.createdAt?.getTime() ?? 0) >= (b.createdAt?.getTime() ?? 0)) {
    throw failedPrecondition(`from_backup_id: backup ${from.id} is not older than backup ${b.id}`);
  }
}

export async function* exportBackup(
  deps: ApiDeps,
  adm: Admission,
  req: ExportBackupRequest,
  ctx: CallContext,
): AsyncGenerator<ExportBackupChunk> {
  v.uuid(req.backupId, "backup_id");
  if (req.fromBackupId) v.uuid(req.fromBackupId, "from_backup_id");
  v.diffFormat(req.format);
  const ix = deps.interchange;
  if (!ix) throw unavailable("this coordinator does not relay exports");
  const b = available(deps, req.backupId, "backup_id");
  const from = req.fromBackupId ? available(deps, req.fromBackupId, "from_backup_id") : undefined;
  if (from) requireOlderInChain(b, from);
  deps.sessions.any(b.location?.cluster ?? "");
  const job = exportJob(b, from, formatNumber(req.format));
  const run = new InterchangeRun({ ...ix, catalog: deps.catalog }, job.id, "export", ctx.signal);
  run.open();
  try {
    adm.submit(job);
    madeJob(ctx, job.id);
    yield { jobId: job.id, data: new Uint8Array(0) };
    for await (const data of run.pipe.read()) yield { jobId: "", data };
    await run.finished();
  } finally {
    run.close();
  }
}
