/**
 * Transfer capabilities the coordinator mints when it leases an attempt: the source agent presents
 * one to the destination (HTTP/2 header `rbdbackup-capability`), which checks it once, when the stream
 * starts, against what the stream's header asks for (src/common/grants.ts derives the same fields on
 * both sides). Without a signer (insecure mode, tests) the capability is empty and nobody checks it.
 *
 * Lifetime: a fixed bound, TRANSFER_CAPABILITY_TTL_MS (1 h), not the lease TTL. The lease is renewed by
 * heartbeats while the attempt runs, but the capability is minted once and checked once, at stream
 * start — which may come after a long source-side phase (snapshot, diff, a busy image's retries). A
 * lease-TTL capability (15 s by default) would expire before a slow start; one hour bounds the window
 * in which a stolen token is any use, and it only ever allows this job's one destination image.
 *
 * Both kinds name the destination cluster's fsid (the one its agents registered with, pinned in the
 * catalog), so the token is refused by an agent of any other cluster, and the destination agent
 * (`toAgent`), so it is refused by any other agent of that cluster. A backup's capability names the
 * chains it may write (`chains`): the base images of this volume's AVAILABLE backups at this location
 * (the newest MAX_CHAINS), and the backup's own `<volume>.backup.<id>` should it be a full one — the
 * source picks among them (incremental: the newest backup snapshot present on both sides). A chain the
 * catalog does not know (planted, or left by a direct call) is never extended by a coordinator's job.
 */
import type { CapabilitySigner } from "../../common/capability";
import { backupTransferAllows, MAX_CHAINS, ownChain, restoreJobTransferAllows } from "../../common/grants";
import { BackupStatus } from "../../gen/rbdbackup/v1/backup_service";
import type { Catalog } from "../catalog/catalog";
import type { Backup, JobRecord } from "../model";

/** How long a transfer capability is valid after it is minted, ms (see above). */
export const TRANSFER_CAPABILITY_TTL_MS = 3_600_000;

export type Located = Backup & { location: NonNullable<Backup["location"]>; volume: NonNullable<Backup["volume"]> };

/** The holder: the agent the lease goes to (the source of the stream), of the job's exec cluster. */
export interface Holder {
  cluster: string;
  agentId: string;
}

/**
 * Where the stream goes: the destination cluster's fsid and the agent of it the source is sent to (the
 * capability names it: another agent of that cluster refuses it, so its spent set — kept by the agent
 * that took the stream — cannot be dodged); for a backup, the chains it may write.
 */
export interface StreamTarget {
  fsid: string;
  agentId: string;
  chains: string[];
}

/**
 * The chains a backup of `b` may write: the base images of the volume's AVAILABLE backups at the same
 * location (cluster, pool, namespace), newest first, at most MAX_CHAINS, then its own (a full backup).
 */
export function knownChains(catalog: Catalog, b: Located): string[] {
  const v = b.volume;
  const here = `${b.location.cluster}/${b.location.pool}/${b.location.namespace}`;
  const chains = catalog
    .backupsOfVolume(v.cluster, v.pool, v.namespace, v.image, BackupStatus.BACKUP_STATUS_AVAILABLE)
    .filter((o) => o.status === BackupStatus.BACKUP_STATUS_AVAILABLE && o.baseImage && o.location)
    .filter((o) => `${o.location?.cluster}/${o.location?.pool}/${o.location?.namespace}` === here)
    .sort((x, y) => (y.createdAt?.getTime() ?? 0) - (x.createdAt?.getTime() ?? 0))
    .map((o) => o.baseImage);
  return [...new Set(chains)].slice(0, MAX_CHAINS - 1).concat(ownChain(v.image, b.id));
}

/** The capability for this attempt's stream, or "" when the coordinator signs nothing (insecure mode). */
export function transferCapability(
  signer: CapabilitySigner | undefined,
  b: Located,
  j: JobRecord,
  attempt: number,
  holder: Holder,
  to: StreamTarget,
): string {
  if (!signer) return "";
  const op = j.operation;
  const allows =
    op.kind === "backup"
      ? backupTransferAllows({
          backupId: b.id,
          pool: b.location.pool,
          namespace: b.location.namespace,
          volumeImage: b.volume.image,
          fsid: to.fsid,
          chains: to.chains,
        })
      : op.kind === "restore"
        ? restoreJobTransferAllows(b.id, op.target, op.mode, to.fsid, op.allowOpen === true)
        : null;
  if (!allows) return "";
  return signer.sign(
    { scope: "transfer", job: j.id, attempt, holder: { ...holder }, allows: { ...allows, toAgent: to.agentId } },
    TRANSFER_CAPABILITY_TTL_MS,
  );
}
