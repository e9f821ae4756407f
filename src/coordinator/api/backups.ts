/** Reads of backups: GetBackup and ListBackups from the catalog; ListBackupSnapshots from an agent (live). */
import type { CallContext } from "nice-grpc-common";
import { invalidArgument, notFound } from "../../common/errors";
import type { ListBackupSnapshotsResponse } from "../../gen/rbdbackup/v1/agent";
import {
  Backup,
  type GetBackupRequest,
  type ListBackupSnapshotsRequest,
  type ListBackupsRequest,
  type ListBackupsResponse,
} from "../../gen/rbdbackup/v1/backup_service";
import { ask } from "../jobs/probes";
import * as v from "../validate";
import type { Admission } from "./admission";
import type { ApiDeps } from "./deps";
import { boundedPage, encodedSize } from "./paging";

export function getBackup(deps: ApiDeps, req: GetBackupRequest): Backup {
  v.uuid(req.backupId, "backup_id");
  const b = deps.catalog.getBackup(req.backupId);
  if (!b) throw notFound(`backup ${req.backupId} not found`);
  return b;
}

export function listBackups(deps: ApiDeps, req: ListBackupsRequest): ListBackupsResponse {
  if (req.cluster) v.clusterName(req.cluster, "cluster");
  if (req.locationCluster) v.clusterName(req.locationCluster, "location_cluster");
  if (req.pool) v.rbdName(req.pool, "pool");
  if (req.image) v.rbdName(req.image, "image");
  // A pool or an image is named within its cluster: without it no index serves the filter (a scan of
  // every backup, on the coordinator's one thread).
  if (req.pool && !req.cluster) throw invalidArgument("pool needs cluster (a pool is named within its cluster)");
  if (req.image && !req.cluster) throw invalidArgument("image needs cluster (an image is named within its cluster)");
  if (req.volumeId) v.volumeId(req.volumeId, "volume_id");
  v.backupStatus(req.status);
  const size = v.pageSize(req.pageSize);
  const filter = {
    cluster: req.cluster,
    pool: req.pool,
    image: req.image,
    volumeId: req.volumeId,
    locationCluster: req.locationCluster,
    ...(req.status ? { statuses: [req.status] } : { excludeDeleted: true }),
  };
  const p = boundedPage((n) => deps.catalog.listBackups(filter, n, req.pageToken), size, encodedSize(Backup));
  return { backups: p.items, nextPageToken: p.next };
}

export async function listBackupSnapshots(
  deps: ApiDeps,
  adm: Admission,
  req: ListBackupSnapshotsRequest,
  ctx: CallContext,
): Promise<ListBackupSnapshotsResponse> {
  const vol = v.volumeRef(req.volume, "volume", { lookup: true });
  adm.knownCluster(vol.cluster, "volume.cluster");
  const image = { pool: vol.pool, namespace: vol.namespace, image: vol.image };
  return ask(deps.sessions.any(vol.cluster), { $case: "snapshots", value: { image } }, "snapshots", ctx.signal);
}
