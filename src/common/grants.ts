/**
 * What a capability allows, as flat fields that both sides derive the same way: the coordinator when
 * it mints (src/coordinator/scheduler), the receiving agent from the request it gets (agents/agent for
 * AgentService calls, agents/transfer for Transfer streams). A capability covers a request when every
 * field the request asks for equals the grant's (checkAllows in ./capability.ts).
 */
import type { BackupRequest, DeleteBackupDataRequest, FlattenRequest, RestoreRequest } from "../gen/rbdbackup/v1/agent";
import { RestoreMode } from "../gen/rbdbackup/v1/agent";
import { type TransferHeader, TransferKind } from "../gen/rbdbackup/v1/transfer";
import { denied, joinListItems } from "./capability";

export type Fields = Record<string, string>;

/** At most this many chains in one backup capability (the newest; it travels as an HTTP/2 header). */
export const MAX_CHAINS = 32;

// ---- Transfer streams (scope "transfer"): minted for the source agent, checked by the destination ----
// Both kinds name the destination cluster's fsid (`fsid`): the destination compares it with its own
// cluster's, so a capability replayed against another cluster (a second site with the same pool and
// image names) is refused before anything is written there.

/**
 * A backup's stream into the backup pool of the cluster with `fsid`: a base image of `volumeImage`,
 * for `backupId`, and only one of `chains` (base images: the chains the coordinator knows for this
 * volume at this location, and a full backup's own `<volume>.backup.<backupId>`), nowhere else.
 */
export function backupTransferAllows(b: {
  backupId: string;
  pool: string;
  namespace: string;
  volumeImage: string;
  fsid: string;
  chains: string[];
}): Fields {
  return {
    purpose: "backup",
    backupId: b.backupId,
    pool: b.pool,
    namespace: b.namespace,
    volumeImage: b.volumeImage,
    fsid: b.fsid,
    chain: joinListItems(new Set(b.chains)),
  };
}

/**
 * TransferService.ListChains on the cluster with `fsid`: the chains of `volumeImage` in this pool and
 * namespace. Covered by the capability of a backup of that volume into that pool (backupTransferAllows;
 * its backup id and chain are not asked), so only the agent about to back the volume up there learns
 * which backups of it exist.
 */
export function listChainsAsks(r: { pool: string; namespace: string; volumeImage: string }, fsid: string): Fields {
  return { purpose: "backup", pool: r.pool, namespace: r.namespace, volumeImage: r.volumeImage, fsid };
}

/** A full backup's chain (base image): `<volume>.backup.<backup id>`. */
export const ownChain = (volumeImage: string, backupId: string) => `${volumeImage}.backup.${backupId}`;

/** A restore's stream: exactly the target image on the cluster with `fsid`, in the mode the user chose. */
export function restoreTransferAllows(r: {
  backupId: string;
  pool: string;
  namespace: string;
  image: string;
  mode: "new" | "original";
  fsid: string;
  /** ORIGINAL written while other clients have it open (allow_open): granted only when asked for. */
  allowOpen?: boolean;
}): Fields {
  return {
    purpose: "restore",
    backupId: r.backupId,
    pool: r.pool,
    namespace: r.namespace,
    image: r.image,
    mode: r.mode,
    fsid: r.fsid,
    ...(r.allowOpen ? { allowOpen: "true" } : {}),
  };
}

/**
 * A failback's stream: exactly the original volume, for this backup. It may roll that volume back only
 * to a snapshot of this backup (transferAsks checks the header's from_snapshot), or copy it in full.
 */
export function failbackTransferAllows(r: {
  backupId: string;
  pool: string;
  namespace: string;
  image: string;
  fsid: string;
}): Fields {
  return {
    purpose: "failback",
    backupId: r.backupId,
    pool: r.pool,
    namespace: r.namespace,
    image: r.image,
    fsid: r.fsid,
  };
}

/**
 * The stream a restore job's mode needs onto `target` on the cluster with `fsid` (minted by the
 * coordinator and the lab client alike).
 */
export function restoreJobTransferAllows(
  backupId: string,
  target: { pool: string; namespace: string; image: string },
  mode: RestoreMode,
  fsid: string,
  allowOpen = false,
): Fields {
  const at = { backupId, pool: target.pool, namespace: target.namespace, image: target.image, fsid };
  if (mode === RestoreMode.RESTORE_MODE_FAILBACK) return failbackTransferAllows(at);
  const original = mode === RestoreMode.RESTORE_MODE_ORIGINAL;
  return restoreTransferAllows({ ...at, mode: original ? "original" : "new", allowOpen: original && allowOpen });
}

/** The snapshot names of backup `id` on a source volume (design: backup.<id>.snap.<unix seconds>). */
const snapshotOf = (id: string, name: string): boolean => name.startsWith(`backup.${id}.snap.`);

/**
 * What a Transfer stream's header asks for, in the fields above, on the destination cluster with
 * `fsid` (the receiving agent's own). A backup stream may only write a base image named by the layout
 * ("<volume image>.backup.<chain uuid>"; a full backup's chain is its own id), so nothing outside the
 * layout can ever be a backup stream's target: PERMISSION_DENIED otherwise. The result, minted as is,
 * is the narrowest capability for that header.
 */
export function transferAsks(h: TransferHeader, fsid: string): Fields {
  const d = h.destination;
  if (!d) throw denied("the header names no destination image", "not_covered");
  switch (h.kind) {
    case TransferKind.BACKUP_FULL:
    case TransferKind.BACKUP_INCREMENTAL: {
      const m = /^(.+)\.backup\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(d.image);
      if (!m) {
        throw denied(
          `a backup stream may only write a base image (<volume>.backup.<uuid>), not ${d.image}`,
          "not_covered",
        );
      }
      if (h.kind === TransferKind.BACKUP_FULL && m[2] !== h.backupId) {
        throw denied(
          `a full backup starts its own chain: its base image must end in .backup.${h.backupId}`,
          "not_covered",
        );
      }
      return backupTransferAllows({
        backupId: h.backupId,
        pool: d.pool,
        namespace: d.namespace,
        volumeImage: m[1] as string,
        fsid,
        chains: [d.image],
      });
    }
    case TransferKind.RESTORE_NEW:
    case TransferKind.RESTORE_ORIGINAL:
      return restoreTransferAllows({
        backupId: h.backupId,
        pool: d.pool,
        namespace: d.namespace,
        image: d.image,
        mode: h.kind === TransferKind.RESTORE_NEW ? "new" : "original",
        fsid,
        allowOpen: h.kind === TransferKind.RESTORE_ORIGINAL && h.allowOpen,
      });
    case TransferKind.FAILBACK:
      if (h.fromSnapshot && !snapshotOf(h.backupId, h.fromSnapshot)) {
        throw denied(
          `a failback may only roll back to a snapshot of backup ${h.backupId}, not ${h.fromSnapshot}`,
          "not_covered",
        );
      }
      return failbackTransferAllows({
        backupId: h.backupId,
        pool: d.pool,
        namespace: d.namespace,
        image: d.image,
        fsid,
      });
    default:
      throw denied(`unknown transfer kind ${h.kind}`, "not_covered");
  }
}

// ---- AgentService calls (scope "operation"): what a direct call may do on the callee agent ----

/** AgentService.Backup: this volume (or path), this backup id, to this destination agent and pool. */
export function backupOperationAsks(r: BackupRequest): Fields {
  const src = r.source;
  const source =
    src?.$case === "volume"
      ? `volume:${src.value.pool}/${src.value.namespace}/${src.value.image}`
      : src?.$case === "path"
        ? `path:${src.value}`
        : "none";
  return {
    op: "backup",
    backupId: r.backupId,
    source,
    destination: r.destination?.address ?? "",
    destinationPool: r.destinationPool,
    destinationNamespace: r.destinationNamespace,
  };
}

/** Each mode its own word: a grant for a restore to a new volume does not cover a clone (or back). */
const RESTORE_MODE_WORDS: Partial<Record<RestoreMode, string>> = {
  [RestoreMode.RESTORE_MODE_ORIGINAL]: "original",
  [RestoreMode.RESTORE_MODE_CLONE]: "clone",
  [RestoreMode.RESTORE_MODE_FAILBACK]: "failback",
};

/** AgentService.Restore: this backup, onto this target through this target agent, in this mode (a failback: from this source). */
export function restoreOperationAsks(r: RestoreRequest): Fields {
  const failback = r.mode === RestoreMode.RESTORE_MODE_FAILBACK;
  return {
    ...(failback ? { source: `${r.source?.pool ?? ""}/${r.source?.namespace ?? ""}/${r.source?.image ?? ""}` } : {}),
    op: "restore",
    backupId: r.backupId,
    backup: `${r.backupPool}/${r.backupNamespace}/${r.baseImage}@${r.snapshot}`,
    target: `${r.target?.pool ?? ""}/${r.target?.namespace ?? ""}/${r.target?.image ?? ""}`,
    targetAgent: r.targetAgent?.address ?? "",
    mode: RESTORE_MODE_WORDS[r.mode] ?? "new",
    ...(r.allowOpen ? { allowOpen: "true" } : {}),
  };
}

/** AgentService.DeleteBackup: this backup's snapshot, base image and metadata object, nothing else. */
export function deleteOperationAsks(r: DeleteBackupDataRequest): Fields {
  return { op: "delete", backupId: r.backupId, backup: `${r.pool}/${r.namespace}/${r.baseImage}` };
}

/** AgentService.Flatten: this clone of this backup's snapshot, nothing else. */
export function flattenOperationAsks(r: FlattenRequest): Fields {
  const im = r.image;
  return {
    op: "flatten",
    backupId: r.backupId,
    backup: `${r.backupPool}/${r.backupNamespace}/${r.baseImage}`,
    target: `${im?.pool ?? ""}/${im?.namespace ?? ""}/${im?.image ?? ""}`,
  };
}
