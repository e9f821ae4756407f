/**
 * FlattenVolume: queues the FLATTEN job (scheduler/clones.ts flattenJob's shape) for a volume a CLONE
 * restore or FailoverVolume made, so that it stops reading through to the backup's snapshot; the job's
 * success removes it from Backup.clones (clones.ts cloneDetached), after which the backup may be
 * deleted. The agent finds a volume that is no longer a clone (flattened by hand) and succeeds with a
 * warning, so the list is mended the same way.
 *
 * The backup is the one named (it must list the volume), else the one listing it: clones live on their
 * backup's cluster, so only the backups kept on the volume's cluster are looked at.
 */
import { failedPrecondition, notFound } from "../../common/errors";
import { type FlattenVolumeRequest, type Job, JobKind } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Catalog } from "../catalog/catalog";
import { fingerprint } from "../jobs/new-job";
import { type Backup, volumeKey, volumeLabel } from "../model";
import { lockOfVolume } from "../scheduler";
import * as v from "../validate";
import type { Admission } from "./admission";
import type { ApiDeps } from "./deps";

const lists = (b: Backup, vol: VolumeRef): boolean => b.clones.some((c) => volumeKey(c) === volumeKey(vol));

/** The backup (not deleted) kept on the volume's cluster that lists it among its clones. */
export function backupOfClone(catalog: Catalog, vol: VolumeRef): Backup | undefined {
  let token = "";
  do {
    const page = catalog.listBackups({ locationCluster: vol.cluster, excludeDeleted: true }, 1000, token);
    const b = page.items.find((x) => lists(x, vol));
    if (b) return b;
    token = page.next;
  } while (token);
  return undefined;
}

function chooseBackup(catalog: Catalog, req: FlattenVolumeRequest, vol: VolumeRef): Backup {
  if (!req.backupId) {
    const b = backupOfClone(catalog, vol);
    if (!b) throw notFound(`no backup lists ${volumeLabel(vol)} among its clones`);
    return b;
  }
  const b = catalog.getBackup(req.backupId);
  if (!b) throw notFound(`backup ${req.backupId} not found`);
  if (!lists(b, vol)) throw notFound(`backup ${b.id} does not list ${volumeLabel(vol)} among its clones`);
  return b;
}

export async function flattenVolume(deps: ApiDeps, adm: Admission, req: FlattenVolumeRequest): Promise<Job> {
  const vol = v.volumeRef(req.volume, "volume");
  if (req.backupId) v.uuid(req.backupId, "backup_id");
  v.idempotencyKey(req.idempotencyKey);
  const fp = fingerprint("flatten", { volume: volumeKey(vol), backup: req.backupId });
  const again = adm.replay(req.idempotencyKey, fp);
  if (again) return adm.view(again);
  const b = chooseBackup(deps.catalog, req, vol);
  const at = b.location?.cluster ?? vol.cluster;
  const busy = adm.activeHolder([lockOfVolume(vol)]);
  if (busy) {
    throw failedPrecondition(
      `${volumeLabel(vol)} is in use by job ${busy.id} (${JobKind[busy.kind]}); retry when it has finished`,
    );
  }
  deps.sessions.any(at);
  const job = adm.newJob({
    kind: JobKind.JOB_KIND_FLATTEN,
    backupId: b.id,
    volume: vol,
    operation: { kind: "flatten", target: { ...vol } },
    idempotencyKey: req.idempotencyKey,
    fingerprint: fp,
    locks: [lockOfVolume(vol)],
    execCluster: at,
    peerCluster: "",
  });
  const submitted = adm.submit(job);
  deps.log.info("flatten queued", { volume: volumeLabel(vol), backup: b.id, job: submitted.id });
  return submitted;
}
