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
 */
import type { CapabilitySigner } from "../../common/capability";
import { backupTransferAllows, restoreJobTransferAllows } from "../../common/grants";
import type { Backup, JobRecord } from "../model";

/** How long a transfer capability is valid after it is minted, ms (see above). */
export const TRANSFER_CAPABILITY_TTL_MS = 3_600_000;

export type Located = Backup & { location: NonNullable<Backup["location"]>; volume: NonNullable<Backup["volume"]> };

/** The holder: the agent the lease goes to (the source of the stream), of the job's exec cluster. */
export interface Holder {
  cluster: string;
  agentId: string;
}

/** The capability for this attempt's stream, or "" when the coordinator signs nothing (insecure mode). */
export function transferCapability(
  signer: CapabilitySigner | undefined,
  b: Located,
  j: JobRecord,
  attempt: number,
  holder: Holder,
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
        })
      : op.kind === "restore"
        ? restoreJobTransferAllows(b.id, op.target, op.mode)
        : null;
  if (!allows) return "";
  return signer.sign(
    { scope: "transfer", job: j.id, attempt, holder: { ...holder }, allows },
    TRANSFER_CAPABILITY_TTL_MS,
  );
}
