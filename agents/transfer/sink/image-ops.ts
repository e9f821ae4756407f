/**
 * Image operations the destination shares between its phases, its crash recovery and the engine's
 * delete and clone restore: the marker of an uncommitted image, removal that waits out a stale watch,
 * whether a head moved away from a snapshot, and a backup's image-meta applied to a restored image.
 */
import { sameClientInstance } from "../../../src/common/address";
import { aborted } from "../../../src/common/errors";
import { retry } from "../../../src/common/retry";
import { existingAtEither, type IoCtx, isCephError, type Run } from "../../ceph";
import type { SinkImage } from "./ports";

/** This agent's Ceph client: its own handles on an image are watchers too. */
export interface OwnClient {
  clientAddr: string;
  clientId?: number | undefined;
}

/** Whether watch `w` is this agent's own (same client instance). */
export const isOwnWatch = (own: OwnClient, w: { addr: string; id: number }): boolean =>
  (own.clientId !== undefined && w.id === own.clientId) || sameClientInstance(w.addr, own.clientAddr);

/**
 * The clients other than this agent that have `image` open for writing (librbd watches an image's header
 * while it is open read-write): "client.N at ADDR, …", or "" when none. A base image is written by one
 * transfer at a time, and that is a fact of the cluster, not of one agent's memory: two agents of the
 * destination cluster (an attempt cut short on one, its retry on another; an agent restarting while
 * another writes) each open the image before they look, so whichever looks second sees the other — a
 * writer refuses to start beside another (baseInUse), a cleanup or recovery leaves alone an image
 * another client has open, and a commit refuses when another client opened it meanwhile (a mapped base
 * image's filesystem writes would be committed into the backup).
 */
export async function otherWriters(image: Pick<SinkImage, "watchers">, own: OwnClient): Promise<string> {
  const others = (await image.watchers()).filter((w) => !isOwnWatch(own, w));
  return others.map((w) => `client.${w.id} at ${w.addr}`).join(", ");
}

/** ABORTED (the coordinator waits and retries): a backup's base image open by another client (otherWriters). */
export const baseInUse = (where: string, who: string, what: string) =>
  aborted(
    `base image ${where} is open by another client (${who}): ${what}; a backup writes its base image alone — an earlier attempt's agent may still be winding down, or someone mapped it (rbd map, rbd-nbd): unmap it`,
  );

/** image-meta key marking an image a transfer created and has not committed yet. */
export const INCOMPLETE_KEY = "rbdbackup.incomplete";
/** The prefix of this product's own image-meta keys (INCOMPLETE_KEY, checkpoint.ts RESUME_KEY). */
export const OWN_KEY_PREFIX = "rbdbackup.";

/**
 * Removes an image, retrying while it is busy: a watch outlives a close that could not reach the
 * OSD (a full pool) until the OSD times it out (osd_client_watch_timeout, 30 s), so keep trying ~40 s.
 * Gone already counts as removed.
 */
export async function removeImageRetrying(
  io: Pick<IoCtx, "imageRemove">,
  name: string,
  attempts = 12,
  signal?: AbortSignal,
): Promise<void> {
  await retry(
    async () => {
      try {
        await io.imageRemove(name);
      } catch (e) {
        if (!isCephError(e, "ENOENT")) throw e;
      }
    },
    {
      attempts,
      baseMs: 500,
      maxMs: 4000,
      retryIf: (e) => isCephError(e, "EBUSY"),
      ...(signal ? { signal } : {}),
    },
  );
}

/** Whether any object of `image` exists (whole objects: one object-map comparison with fast-diff). */
export async function holdsData(image: Pick<SinkImage, "diff">): Promise<boolean> {
  for await (const batch of image.diff({ batchSize: 1, wholeObject: true })) if (batch.length > 0) return true;
  return false;
}

/** headDiffers walks the image in pieces of this size, the signal looked at between them. */
export const HEAD_WALK_PIECE_BYTES = 4 * 2 ** 30;

/**
 * True when the head of `image` differs from `snapshot` (data or size). The exact diff (librbd asks each
 * object walked about its extents, ~12 ms per GiB on the lab): the object map's "written since"
 * (fast-diff, a comparison of maps) is wrong after `rbd snap rollback` to a snapshot older than
 * `snapshot` — it would say "same" of a head holding an older backup's data (agents/ceph/pruned-diff.ts;
 * tried on the lab). Walked over the objects that exist at the head or at the snapshot when both object
 * maps can say which (existence survives a rollback; the snapshot's map through Image.openAt), otherwise
 * over the whole image; in pieces of at most 4 GiB: librbd's walk of a piece reports nothing until it
 * ends, so `signal` (a transfer cut short) stops it between pieces, not after the whole image.
 */
export async function headDiffers(
  image: Pick<SinkImage, "snapList" | "stat" | "diff" | "openAt">,
  snapshot: string,
  signal?: AbortSignal,
): Promise<boolean> {
  const snap = (await image.snapList()).find((s) => s.name === snapshot);
  if (!snap) return true;
  if ((await image.stat()).size !== snap.size) return true;
  const runs = (await existingAtEither(image, () => image.openAt(snapshot))) ?? [[0, snap.size] as Run];
  for (const [start, length] of runs) {
    for (let offset = start; offset < start + length; offset += HEAD_WALK_PIECE_BYTES) {
      signal?.throwIfAborted();
      const piece = Math.min(HEAD_WALK_PIECE_BYTES, start + length - offset);
      for await (const batch of image.diff({ fromSnapshot: snapshot, batchSize: 1, offset, length: piece })) {
        if (batch.length > 0) return true;
      }
    }
  }
  return false;
}

/**
 * A backup's image-meta set on a restored image. A `conf_` key this cluster refuses (EINVAL: an option
 * its Ceph does not know, or not allowed per image — a backup from a newer release) is a warning, not a
 * failed restore: the data is what matters, and the override can be set by hand. Any other failure throws.
 * This product's own keys (`rbdbackup.*`: the incomplete marker, a resume checkpoint) are never set: a
 * volume that was itself a restore target can carry a stale one into its backups.
 */
export async function applyImageMeta(
  image: Pick<SinkImage, "metaSet">,
  meta: Record<string, string>,
  warnings: string[],
): Promise<void> {
  for (const [k, v] of Object.entries(meta)) {
    if (k.startsWith(OWN_KEY_PREFIX)) continue;
    try {
      await image.metaSet(k, v);
    } catch (e) {
      if (!k.startsWith("conf_") || !isCephError(e, "EINVAL")) throw e;
      warnings.push(`image-meta ${k}=${v} not applied: this cluster refuses it as a per-image option (EINVAL)`);
    }
  }
}
