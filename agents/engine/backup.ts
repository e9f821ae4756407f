/**
 * Backup of an RBD volume (or a file/block device) of this agent's cluster into a pool of the
 * destination agent's cluster. The request is validated here; then a volume goes through the phases
 * of backup-volume.ts (open, plan, snapshot, transfer, prune; its new source snapshot removed on
 * failure) and a path through backup-path.ts (always a full copy). The decisions are pure
 * (backup-plan.ts), as are the header and metadata sent ahead of the data (backup-header.ts).
 */
import { invalidArgument } from "../../src/common/errors";
import { isUuid } from "../../src/common/ids";
import { BackupMode, type BackupRequest, type BackupResult } from "../../src/gen/rbdbackup/v1/agent";
import { validName } from "../transfer/protocol";
import { backupPath } from "./backup-path";
import { backupVolume } from "./backup-volume";
import type { EngineContext } from "./context";
import { newProgress, type Progress } from "./progress";
import { allowedSourcePath } from "./source-paths";

export function validateBackupRequest(req: BackupRequest): void {
  if (!isUuid(req.backupId)) throw invalidArgument("backup_id must be a lowercase UUID");
  const src = req.source;
  if (!src) throw invalidArgument("a source is required: volume (pool, image) or path");
  if (src.$case === "volume") {
    validName(src.value.pool, "source volume pool");
    validName(src.value.namespace, "source volume namespace", { allowEmpty: true });
    validName(src.value.image, "source volume image");
  } else {
    if (!src.value.startsWith("/")) throw invalidArgument("source path must be absolute");
    validName(req.sourceName, "source_name (the name base images of a path source are called after)");
  }
  validName(req.destinationPool, "destination_pool", { allowEmpty: true });
  validName(req.destinationNamespace, "destination_namespace", { allowEmpty: true });
  if (
    ![BackupMode.BACKUP_MODE_AUTO, BackupMode.BACKUP_MODE_FULL, BackupMode.BACKUP_MODE_INCREMENTAL].includes(req.mode)
  ) {
    throw invalidArgument(`mode ${req.mode} is not AUTO, FULL or INCREMENTAL`);
  }
  for (const k of req.keepSnapshots) validName(k, "keep_snapshots entry");
  const metaBytes = Object.entries(req.volumeMetadata).reduce((n, [k, v]) => n + k.length + v.length, 0);
  if (metaBytes > 256 * 1024) throw invalidArgument("volume_metadata is larger than 256 KiB");
}

export async function backup(
  ctx: EngineContext,
  req: BackupRequest,
  signal: AbortSignal,
  progress: Progress = newProgress(),
): Promise<BackupResult> {
  validateBackupRequest(req);
  const src = req.source as NonNullable<BackupRequest["source"]>;
  if (src.$case === "path") {
    const real = await allowedSourcePath(src.value, ctx.sourcePaths ?? []);
    return backupPath(ctx, req, real, signal, progress);
  }
  return backupVolume(ctx, req, src.value, signal, progress);
}
