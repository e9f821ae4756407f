/**
 * Failback (RESTORE_MODE_FAILBACK), run by the agent of the backup's cluster, which holds the
 * failed-over volume V' (`req.source`, a CLONE restore of the backup). The original volume V
 * (`req.target`, on the target agent's cluster) takes V''s content, size included:
 *
 *  1. V' is snapshotted (`failback.<transfer id>`, removed at the end, and by the next attempt if this
 *     one died) so that what is sent is one point in time.
 *  2. V' still a clone of the backup's snapshot S: a FAILBACK transfer with from_snapshot S — the
 *     destination rolls V back to its own S (a backup's snapshot has the same name on the volume and
 *     on the base image) and the source sends only V''s own objects (diff with include_parent false,
 *     from creation, whole objects): what was written or trimmed at the failover site, at object
 *     granularity (copy-on-write makes any object written in the clone a whole object of its own).
 *  3. Otherwise — V' flattened, V' shrunk since the failover (its parent overlap lowered: what reads as
 *     zeros beyond it is in none of its objects), or the destination refusing because V is gone or lacks
 *     S (FAILED_PRECONDITION, nothing written) — a FAILBACK transfer without from_snapshot: every byte
 *     of V', and RestoreResult.full_copy_reason says why.
 */
import { randomUUID } from "node:crypto";
import { failedPrecondition, invalidArgument, messageOf, notFound, Status, statusOf } from "../../src/common/errors";
import type { RestoreRequest, RestoreResult } from "../../src/gen/rbdbackup/v1/agent";
import { type TransferHeader, TransferKind } from "../../src/gen/rbdbackup/v1/transfer";
import type { Image, IoCtx } from "../ceph";
import { isCephError } from "../ceph";
import { NO_COMMON_SNAPSHOT, RefusalReason, reasonOf, validName } from "../transfer/protocol";
import { otherWriters } from "../transfer/sink";
import { newStats, rbdMessages, type SourceStats } from "../transfer/source";
import { isCloneOf } from "./clone";
import type { EngineContext } from "./context";
import { locateBackup } from "./locate";
import { newProgress, type Progress } from "./progress";

type Ref = NonNullable<RestoreRequest["source"]>;

const label = (t: Ref): string => `${t.pool}/${t.namespace ? `${t.namespace}/` : ""}${t.image}`;

/** The failback's own snapshot of V' (never a backup snapshot: backup.<id>.snap.* is not touched). */
export const failbackSnapshot = (transferId: string): string => `failback.${transferId}`;
/** A failback snapshot an earlier attempt left (transfer ids are UUIDs). */
const LEFTOVER = /^failback\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export async function failback(
  ctx: EngineContext,
  req: RestoreRequest,
  signal: AbortSignal,
  progress: Progress = newProgress(),
): Promise<RestoreResult> {
  const source = req.source;
  if (!source) throw invalidArgument("source (pool, image) is required for a failback");
  validName(source.pool, "source pool");
  validName(source.namespace, "source namespace", { allowEmpty: true });
  validName(source.image, "source image");
  const started = Date.now();
  const log = ctx.log.child({ op: "failback", backup: req.backupId, job: req.jobId || undefined });
  if (!(await ctx.cluster.poolExists(req.backupPool))) throw notFound(`backup pool ${req.backupPool} not found`);
  if (!(await ctx.cluster.poolExists(source.pool))) throw notFound(`source pool ${source.pool} not found`);
  const backups = await ctx.cluster.openIoCtx(req.backupPool, { namespace: req.backupNamespace });
  const io = await ctx.cluster.openIoCtx(source.pool, { namespace: source.namespace }).catch(async (e) => {
    await backups.close().catch(() => {});
    throw e;
  });
  const transferId = randomUUID();
  const snap = failbackSnapshot(transferId);
  let head: Image | null = null;
  let img: Image | null = null;
  try {
    const loc = await locateBackup(backups, req.backupId, req.baseImage || undefined);
    head = await openSource(io, source);
    // The failback sends the failed-over volume as it is at the snapshot taken next: a VM still writing
    // to it would lose every write after that once it moves back to the original. Refused while another
    // client has it open (README: stop writes to the failed-over volume first); nothing is changed.
    const users = await otherWriters(head, { clientAddr: ctx.cluster.addrs(), clientId: ctx.cluster.instanceId() });
    if (users) {
      throw failedPrecondition(
        `the failed-over volume ${label(source)} is in use (watched by ${users}): a failback sends it as it is now, so later writes would be lost — stop the VM or unmap it, then fail back again; nothing was changed`,
      );
    }
    await removeLeftovers(head, log);
    const clone = await isCloneOf(backups, loc, source);
    await head.snapCreate(snap);
    img = await io.imageOpen(source.image, { snapshot: snap });
    const st = await img.stat();
    const size = st.size;
    const target = req.target as NonNullable<RestoreRequest["target"]>;
    const header = (fromSnapshot: string): TransferHeader => ({
      transferId: fromSnapshot ? transferId : randomUUID(),
      jobId: req.jobId,
      kind: TransferKind.FAILBACK,
      destination: target,
      fromSnapshot,
      toSnapshot: "",
      imageSize: size,
      features: 0,
      order: 0,
      stripeUnit: 0,
      stripeCount: 0,
      imageMeta: {},
      backupId: req.backupId,
      metadataJson: Buffer.alloc(0),
      expectedFsid: req.targetAgent?.clusterFsid ?? "",
      chunkSize: ctx.source.chunkSize,
      resumeOffset: 0,
      resumePrefixDigest: new Uint8Array(0),
      resumable: false,
      allowOpen: false,
      compression: 0, // COMPRESSION_NONE; a shaped target (agents/transfer/shaping) sets it
    });
    progress.phase = "transfer";
    progress.bytesTotal = size;
    const send = async (fromSnapshot: string, stats: SourceStats) => {
      progress.stats = stats;
      // The clone's own objects, whole: an object that exists in the clone hides the parent's whole
      // object (a trimmed one reads as zeros but has no extents: only whole-object diffs report it).
      const o = fromSnapshot ? { fullCopy: false, includeParent: false, wholeObject: true } : { fullCopy: true };
      const opts = { ...ctx.source, meter: ctx.meter, meterPool: source.pool };
      return ctx
        .target(req.targetAgent?.address ?? "", req.transferOptions)
        .transfer(
          rbdMessages(img as Image, header(fromSnapshot), o, opts, stats),
          signal,
          req.transferCapability || undefined,
        );
    };
    let reason = clone
      ? await shrunkBelowParent(backups, loc, st.parentOverlap, size, label(source))
      : `${label(source)} is no longer a clone of ${loc.baseImage}@${loc.snapshot} (flattened)`;
    let stats = newStats();
    let summary: Awaited<ReturnType<typeof send>> | null = null;
    if (!reason) {
      try {
        summary = await send(loc.snapshot, stats);
      } catch (e) {
        if (statusOf(e) !== Status.FAILED_PRECONDITION || reasonOf(e) !== RefusalReason.NO_COMMON_SNAPSHOT) throw e;
        const m = messageOf(e);
        const at = m.indexOf(NO_COMMON_SNAPSHOT);
        reason = at >= 0 ? m.slice(at) : m;
      }
    }
    if (reason) {
      log.info("failback copies every byte", { reason });
      stats = newStats();
      summary = await send("", stats);
    }
    log.info("failback done", { source: label(source), target: label(target), dataBytes: stats.dataBytes, reason });
    return {
      backupId: req.backupId,
      target,
      imageSize: size,
      dataBytesSent: stats.dataBytes,
      zeroBytes: stats.zeroBytes,
      dataChunks: stats.dataChunks,
      zeroRanges: stats.zeroRanges,
      seconds: (Date.now() - started) / 1000,
      volumeId: "",
      volumeMetadata: {},
      imageMeta: {},
      warnings: [...(reason ? [`full copy: ${reason}`] : []), ...(summary?.warnings ?? [])],
      fullCopyReason: reason,
      resumedFrom: 0,
      resumeFallbackReason: "",
    };
  } finally {
    await img?.close().catch(() => {});
    if (head) {
      await head.snapRemove(snap).catch((e) => {
        if (!isCephError(e, "ENOENT")) log.warn("could not remove the failback snapshot", { err: e, snapshot: snap });
      });
      await head.close().catch(() => {});
    }
    await io.close().catch(() => {});
    await backups.close().catch(() => {});
  }
}

/**
 * Why V''s own objects would not say what changed ("" when they do): V' was shrunk below its parent's
 * size at some point since the failover — librbd lowers a clone's parent overlap for good when it is
 * shrunk, so V' grown back reads zeros beyond the overlap where it wrote nothing, while V rolled back to S
 * would keep S's data there. Then every byte is sent.
 */
async function shrunkBelowParent(
  backups: IoCtx,
  loc: { baseImage: string; snapshot: string },
  overlap: number,
  size: number,
  what: string,
): Promise<string> {
  const parent = await backups.imageOpen(loc.baseImage, { snapshot: loc.snapshot });
  let parentSize: number;
  try {
    parentSize = (await parent.stat()).size;
  } finally {
    await parent.close().catch(() => {});
  }
  const reads = Math.min(parentSize, size);
  if (overlap >= reads) return "";
  return `${what} was shrunk since the failover (it reads its parent ${loc.baseImage}@${loc.snapshot} up to ${overlap} bytes, not ${reads}): its own objects do not show what beyond that reads as zeros`;
}

/** Snapshots of earlier attempts that died before removing theirs (the job locks V': none is running). */
async function removeLeftovers(img: Image, log: EngineContext["log"]): Promise<void> {
  for (const s of await img.snapList()) {
    // Only names failbackSnapshot() makes: a user's own "failback.safety" is not ours to remove.
    if (!LEFTOVER.test(s.name)) continue;
    await img.snapRemove(s.name);
    log.info("removed the snapshot of an earlier failback attempt", { snapshot: s.name });
  }
}

async function openSource(io: IoCtx, source: Ref): Promise<Image> {
  try {
    return await io.imageOpen(source.image);
  } catch (e) {
    if (isCephError(e, "ENOENT")) throw notFound(`source ${label(source)} not found`);
    throw e;
  }
}
