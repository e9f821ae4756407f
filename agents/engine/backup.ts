/**
 * Backup of an RBD volume (or a file/block device) of this agent's cluster into a pool of the
 * destination agent's cluster.
 *
 *  1. pick the chain: the newest backup snapshot present on both the volume and a base image of this
 *     volume in the destination pool → incremental from it; otherwise a full backup into a new base
 *     image "<volume>.backup.<id>" (AUTO records why);
 *  2. snapshot the volume ("backup.<id>.snap.<ts>") and stream the diff to the destination, which
 *     writes, verifies, flushes and only then creates the same snapshot on the base image;
 *  3. prune source snapshots no chain needs any more (or keep max_snapshots).
 * On failure the new source snapshot is removed (and an AUTO incremental whose diff failed is redone
 * as a full backup); the destination cleans up its side itself.
 */
import { open as openFile, readFile, stat } from "node:fs/promises";
import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  notFound,
  toAppError,
  withCleanupErrors,
} from "../../src/common/errors";
import { backupSnapName, baseImageName, isUuid, parseBackupSnap } from "../../src/common/ids";
import { BackupMode, type BackupRequest, type BackupResult } from "../../src/gen/rbdbackup/v1/agent";
import { type TransferHeader, TransferKind, type TransferSummary } from "../../src/gen/rbdbackup/v1/transfer";
import type { Image } from "../ceph";
import { isCephError } from "../ceph";
import { validName } from "../transfer/protocol";
import { fileMessages, newStats, rbdMessages, SourceReadError, type SourceStats } from "../transfer/source";
import type { EngineContext } from "./context";
import { newProgress, type Progress } from "./progress";

/** The phase that starts when the named one ends (for progress reports). */
const PHASE_AFTER: Record<string, string> = {
  open: "planning",
  listChains: "snapshot",
  snapshot: "transfer",
  transfer: "prune",
  prune: "done",
};

import { type BackupMetadataV1, encodeMetadata } from "./metadata";
import { snapshotsToPrune } from "./snapshots";

/** Features a base image may carry: layering, striping, exclusive-lock, object-map, fast-diff, deep-flatten. */
const BASE_FEATURE_MASK = 1n | 2n | 4n | 8n | 16n | 32n;

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

interface Plan {
  incremental: boolean;
  baseImage: string;
  parent: string | null;
  forcedFullReason: string;
  chainSnapshots: Set<string>;
}

export async function backup(
  ctx: EngineContext,
  req: BackupRequest,
  signal: AbortSignal,
  progress: Progress = newProgress(),
): Promise<BackupResult> {
  validateBackupRequest(req);
  const src = req.source as NonNullable<BackupRequest["source"]>;
  if (src.$case === "path") return backupPath(ctx, req, src.value, signal, progress);

  const vol = src.value;
  const volLabel = `${vol.pool}/${vol.namespace ? `${vol.namespace}/` : ""}${vol.image}`;
  const destPool = req.destinationPool || ctx.defaultBackupPool;
  const destNs = req.destinationNamespace;
  const target = ctx.target(req.destination?.address ?? "");
  const log = ctx.log.child({ op: "backup", backup: req.backupId, volume: volLabel, job: req.jobId || undefined });
  const started = Date.now();
  // Seconds spent in each phase, for the log.
  const phases: Record<string, number> = {};
  let mark = started;
  const phase = (name: string) => {
    const now = Date.now();
    phases[name] = (now - mark) / 1000;
    mark = now;
    progress.phase = PHASE_AFTER[name] ?? name;
  };

  if (!(await ctx.cluster.poolExists(vol.pool)))
    throw notFound(`pool ${vol.pool} not found on cluster ${ctx.clusterName}`);
  const io = await ctx.cluster.openIoCtx(vol.pool, { namespace: vol.namespace });
  let head: Image | null = null;
  let snapImage: Image | null = null;
  let snapName = "";
  const earlyWarnings: string[] = [];
  try {
    try {
      head = await io.imageOpen(vol.image);
    } catch (e) {
      if (isCephError(e, "ENOENT")) throw notFound(`volume ${volLabel} not found on cluster ${ctx.clusterName}`);
      throw e;
    }
    const info = await head.stat();
    if (info.size === 0) throw failedPrecondition(`volume ${volLabel} has size 0: there is nothing to back up`);
    let sourceSnaps = await head.snapList();
    phase("open");
    const chains = await target.listChains(destPool, destNs, vol.image, signal);
    phase("listChains");
    // The same backup id again: an error if that backup exists; if only a source snapshot of an
    // interrupted attempt is left (its agent died before cleaning up), remove it and go on.
    const leftovers = sourceSnaps.filter((s) => parseBackupSnap(s.name)?.backupId === req.backupId);
    if (leftovers.length > 0) {
      const done = chains.chains.find((ch) => ch.snapshots.some((s) => s.backupId === req.backupId));
      if (done && req.jobId) {
        // A job's retry finding its backup complete: an earlier attempt committed it (its snapshot
        // exists on the base image, the last step of a backup) but its agent stopped before the
        // coordinator heard. That backup is this attempt's result, not a conflict.
        log.warn("the backup was completed by an earlier attempt; reporting it", { baseImage: done.baseImage });
        return completedEarlier(req, done, started, { destPool, destNs, fsid: chains.clusterFsid });
      }
      if (done) throw alreadyExists(`backup ${req.backupId} already exists (base image ${done.baseImage})`);
      for (const s of leftovers) {
        await head.snapRemove(s.name);
        earlyWarnings.push(`removed ${s.name}, left on the volume by an interrupted attempt of this backup`);
        log.info("removed a leftover snapshot of an interrupted attempt", { snapshot: s.name });
      }
      sourceSnaps = await head.snapList();
    }
    const plan = choosePlan(
      req,
      vol.image,
      sourceSnaps.map((s) => s.name),
      chains.chains,
    );
    if (plan.forcedFullReason) log.info("forcing a full backup", { reason: plan.forcedFullReason });

    snapName = backupSnapName(req.backupId);
    await head.snapCreate(snapName);
    const imageMeta = await head.metaList();
    snapImage = await io.imageOpen(vol.image, { snapshot: snapName });
    const snapInfo = await snapImage.stat();
    phase("snapshot");

    progress.bytesTotal = snapInfo.size;
    const run = async (p: Plan) => {
      const stats = newStats();
      progress.stats = stats;
      const header = makeHeader(ctx, req, p, snapName, snapInfo, destPool, destNs, chains.clusterFsid, {
        version: 1,
        backup_id: req.backupId,
        created_at: new Date().toISOString(),
        volume: { id: req.volumeId, metadata: req.volumeMetadata },
        source: {
          kind: "rbd",
          cluster_fsid: ctx.fsid,
          pool: vol.pool,
          namespace: vol.namespace,
          image: vol.image,
          snapshot: snapName,
        },
        image: {
          size: snapInfo.size,
          features: snapInfo.features.toString(),
          order: snapInfo.order,
          stripe_unit: snapInfo.stripeUnit,
          stripe_count: snapInfo.stripeCount,
          image_meta: imageMeta,
        },
        chain: { base_image: p.baseImage, incremental: p.incremental, parent_snapshot: p.parent, snapshot: snapName },
      });
      const msgs = rbdMessages(
        snapImage as Image,
        header,
        { ...(p.parent ? { fromSnapshot: p.parent } : {}), fullCopy: false },
        { ...ctx.source, meter: ctx.meter, meterPool: vol.pool },
        stats,
      );
      const summary = await target.transfer(msgs, signal);
      return { stats, summary };
    };

    let plan2 = plan;
    let outcome: { stats: SourceStats; summary: TransferSummary };
    try {
      outcome = await run(plan);
    } catch (e) {
      // AUTO: an incremental whose diff failed on our side is redone as a full backup.
      if (!(plan.incremental && req.mode === BackupMode.BACKUP_MODE_AUTO && e instanceof SourceReadError)) throw e;
      plan2 = {
        incremental: false,
        baseImage: baseImageName(vol.image, req.backupId),
        parent: null,
        forcedFullReason: `the incremental diff from ${plan.parent} failed (${e.message})`,
        chainSnapshots: new Set(),
      };
      log.warn("incremental diff failed, forcing a full backup", { reason: plan2.forcedFullReason });
      outcome = await run(plan2);
    }

    phase("transfer");
    // Hygiene: the backup exists; failures from here on are warnings.
    const warnings = [...earlyWarnings, ...outcome.summary.warnings];
    const removed: string[] = [];
    try {
      const chainSnaps = new Set([...plan2.chainSnapshots, snapName]);
      const prune = snapshotsToPrune(
        await head.snapList(),
        snapName,
        chainSnaps,
        req.maxSnapshots,
        new Set(req.keepSnapshots),
      );
      for (const name of prune) {
        try {
          await head.snapRemove(name);
          removed.push(name);
        } catch (e) {
          warnings.push(`could not remove source snapshot ${name}: ${(e as Error).message}`);
        }
      }
    } catch (e) {
      warnings.push(`source snapshot pruning failed: ${(e as Error).message}`);
    }
    const { stats, summary } = outcome;
    phase("prune");
    log.info("backup done", {
      phases,
      incremental: plan2.incremental,
      dataBytes: stats.dataBytes,
      zeroRanges: stats.zeroRanges,
      seconds: (Date.now() - started) / 1000,
    });
    return {
      backupId: req.backupId,
      baseImage: plan2.baseImage,
      snapshot: snapName,
      incremental: plan2.incremental,
      parentSnapshot: plan2.parent ?? "",
      forcedFullReason: plan2.forcedFullReason,
      imageSize: snapInfo.size,
      ...sentFields(stats),
      seconds: (Date.now() - started) / 1000,
      sourceSnapshotsRemoved: removed,
      warnings,
      destinationPool: destPool,
      destinationNamespace: destNs,
      destinationFsid: summary.destinationFsid,
    };
  } catch (e) {
    const cleanupErrors: unknown[] = [];
    if (snapImage) {
      await snapImage.close().catch((x) => cleanupErrors.push(x));
      snapImage = null;
    }
    if (snapName && head) {
      await head.snapRemove(snapName).catch((x) => {
        if (!isCephError(x, "ENOENT")) cleanupErrors.push(toAppError(x, `removing source snapshot ${snapName}`));
      });
    }
    log.warn("backup failed", { error: toAppError(e).message });
    throw withCleanupErrors(e, cleanupErrors);
  } finally {
    await snapImage?.close().catch(() => {});
    await head?.close().catch(() => {});
    await io.close().catch(() => {});
  }
}

/** The result for a backup an earlier attempt of the same job completed (see its caller). */
function completedEarlier(
  req: BackupRequest,
  chain: { baseImage: string; snapshots: Array<{ name: string; backupId: string; size: number }> },
  started: number,
  where: { destPool: string; destNs: string; fsid: string },
): BackupResult {
  const i = chain.snapshots.findIndex((s) => s.backupId === req.backupId);
  const snap = chain.snapshots[i] as { name: string; size: number };
  return {
    backupId: req.backupId,
    baseImage: chain.baseImage,
    snapshot: snap.name,
    incremental: i > 0,
    parentSnapshot: i > 0 ? (chain.snapshots[i - 1]?.name ?? "") : "",
    forcedFullReason: "",
    imageSize: snap.size,
    ...sentFields(newStats()),
    seconds: (Date.now() - started) / 1000,
    sourceSnapshotsRemoved: [],
    warnings: [
      "completed by an earlier attempt whose result was lost (its agent stopped before reporting): the data counts are not known, and older source snapshots are pruned by the next backup",
    ],
    destinationPool: where.destPool,
    destinationNamespace: where.destNs,
    destinationFsid: where.fsid,
  };
}

/** The result fields that count what the source read and sent. */
function sentFields(s: SourceStats) {
  return {
    bytesRead: s.bytesRead,
    dataBytesSent: s.dataBytes,
    zeroBytes: s.zeroBytes,
    dataChunks: s.dataChunks,
    zeroRanges: s.zeroRanges,
    extents: s.extents,
  };
}

/** Chooses full or incremental from the volume's snapshots and the destination's chains. */
export function choosePlan(
  req: BackupRequest,
  volumeImage: string,
  sourceSnapNames: string[],
  chains: Array<{ baseImage: string; snapshots: Array<{ name: string; snapId: number }> }>,
): Plan {
  const full = (reason: string): Plan => ({
    incremental: false,
    baseImage: baseImageName(volumeImage, req.backupId),
    parent: null,
    forcedFullReason: reason,
    chainSnapshots: new Set(),
  });
  if (req.mode === BackupMode.BACKUP_MODE_FULL) return full("");
  const onSource = new Set(sourceSnapNames.filter((n) => parseBackupSnap(n)));
  // The newest (by creation order on the source) backup snapshot present on a base image too.
  let best: { chain: (typeof chains)[number]; name: string; order: number } | null = null;
  for (const chain of chains) {
    for (const s of chain.snapshots) {
      if (!onSource.has(s.name)) continue;
      const order = sourceSnapNames.indexOf(s.name);
      if (!best || order > best.order) best = { chain, name: s.name, order };
    }
  }
  if (!best) {
    const reason =
      chains.length === 0
        ? "no earlier backup of this volume exists in the destination pool"
        : onSource.size === 0
          ? `the volume has no backup snapshot left to diff from (base images: ${chains.map((c) => c.baseImage).join(", ")})`
          : "no backup snapshot exists on both the volume and a base image";
    if (req.mode === BackupMode.BACKUP_MODE_INCREMENTAL) {
      throw failedPrecondition(`an incremental backup is not possible: ${reason}`);
    }
    return full(reason);
  }
  return {
    incremental: true,
    baseImage: best.chain.baseImage,
    parent: best.name,
    forcedFullReason: "",
    chainSnapshots: new Set(best.chain.snapshots.map((s) => s.name)),
  };
}

function makeHeader(
  ctx: EngineContext,
  req: BackupRequest,
  p: Plan,
  snapName: string,
  info: { size: number; features: bigint; order: number; stripeUnit: number; stripeCount: number },
  destPool: string,
  destNs: string,
  destFsid: string,
  meta: BackupMetadataV1,
): TransferHeader {
  const striped = info.stripeCount > 1 || (info.stripeUnit !== 0 && info.stripeUnit !== 2 ** info.order);
  return {
    transferId: crypto.randomUUID(),
    jobId: req.jobId,
    kind: p.incremental ? TransferKind.BACKUP_INCREMENTAL : TransferKind.BACKUP_FULL,
    destination: { pool: destPool, namespace: destNs, image: p.baseImage },
    fromSnapshot: p.parent ?? "",
    toSnapshot: snapName,
    imageSize: info.size,
    features: Number((info.features & BASE_FEATURE_MASK & (striped ? ~0n : ~2n)) | 1n),
    order: info.order,
    stripeUnit: striped ? info.stripeUnit : 0,
    stripeCount: striped ? info.stripeCount : 0,
    imageMeta: {},
    backupId: req.backupId,
    metadataJson: encodeMetadata(meta),
    expectedFsid: req.destination?.clusterFsid || destFsid || "",
    chunkSize: ctx.source.chunkSize,
  };
}

/** Size of a regular file or a block device. */
async function sourceSize(path: string): Promise<number> {
  const st = await stat(path);
  if (st.isFile()) return st.size;
  if (st.isBlockDevice()) {
    const major = Math.floor(st.rdev / 256);
    const minor = st.rdev % 256;
    const sectors = Number((await readFile(`/sys/dev/block/${major}:${minor}/size`, "utf8")).trim());
    return sectors * 512;
  }
  throw invalidArgument(`${path} is neither a regular file nor a block device`);
}

/** A file or block device: always a full, sparse copy into a new base image "<source_name>.backup.<id>". */
async function backupPath(
  ctx: EngineContext,
  req: BackupRequest,
  path: string,
  signal: AbortSignal,
  progress: Progress,
): Promise<BackupResult> {
  const started = Date.now();
  if (req.mode === BackupMode.BACKUP_MODE_INCREMENTAL) {
    throw failedPrecondition("a file or block device source can only be backed up in full (mode AUTO or FULL)");
  }
  const destPool = req.destinationPool || ctx.defaultBackupPool;
  const target = ctx.target(req.destination?.address ?? "");
  let size: number;
  try {
    size = await sourceSize(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw notFound(`source path ${path} not found on this host`);
    throw e;
  }
  if (size === 0) throw failedPrecondition(`source ${path} has size 0: there is nothing to back up`);
  const snapName = backupSnapName(req.backupId);
  const baseImage = baseImageName(req.sourceName, req.backupId);
  const chains = await target.listChains(destPool, req.destinationNamespace, req.sourceName, signal);
  const stats = newStats();
  progress.phase = "transfer";
  progress.bytesTotal = size;
  progress.stats = stats;
  const order = 22;
  const header: TransferHeader = {
    transferId: crypto.randomUUID(),
    jobId: req.jobId,
    kind: TransferKind.BACKUP_FULL,
    destination: { pool: destPool, namespace: req.destinationNamespace, image: baseImage },
    fromSnapshot: "",
    toSnapshot: snapName,
    imageSize: size,
    features: 0,
    order,
    stripeUnit: 0,
    stripeCount: 0,
    imageMeta: {},
    backupId: req.backupId,
    metadataJson: encodeMetadata({
      version: 1,
      backup_id: req.backupId,
      created_at: new Date().toISOString(),
      volume: { id: req.volumeId, metadata: req.volumeMetadata },
      source: { kind: "path", path, name: req.sourceName },
      image: { size, features: "0", order, stripe_unit: 0, stripe_count: 0, image_meta: {} },
      chain: { base_image: baseImage, incremental: false, parent_snapshot: null, snapshot: snapName },
    }),
    expectedFsid: req.destination?.clusterFsid || chains.clusterFsid || "",
    chunkSize: ctx.source.chunkSize,
  };
  const fh = await openFile(path, "r");
  try {
    const summary = await target.transfer(
      fileMessages(fh, header, { ...ctx.source, meter: ctx.meter, meterPool: "" }, stats),
      signal,
    );
    return {
      backupId: req.backupId,
      baseImage,
      snapshot: snapName,
      incremental: false,
      parentSnapshot: "",
      forcedFullReason:
        req.mode === BackupMode.BACKUP_MODE_FULL ? "" : "a file or block device source is always backed up in full",
      imageSize: size,
      ...sentFields(stats),
      seconds: (Date.now() - started) / 1000,
      sourceSnapshotsRemoved: [],
      warnings: summary.warnings,
      destinationPool: destPool,
      destinationNamespace: req.destinationNamespace,
      destinationFsid: summary.destinationFsid,
    };
  } finally {
    await fh.close();
  }
}
