/**
 * Backup of an RBD volume of this agent's cluster, in named phases:
 *  open      — the pool and the volume (NOT_FOUND / size 0 refused);
 *  plan      — the destination's chains; what an earlier attempt of this backup left (a job's retry
 *              that finds its backup committed reports it: the "lost outcome"); full or incremental;
 *  snapshot  — "backup.<id>.snap.<ts>" on the volume (an earlier attempt's, when one left it: a retry
 *              resumes that attempt's transfer), opened read-only;
 *  transfer  — the diff streamed to the destination, which writes, verifies, flushes and only then
 *              creates the same snapshot on the base image (AUTO redoes a failed incremental in full);
 *              a retry asks the destination where to resume and sends only the rest (resume.ts);
 *  prune     — source snapshots no chain needs any more (failures are warnings: the backup exists).
 * On failure the new source snapshot is removed — unless the transfer was cut short and the coordinator
 * retries (req.resumable): the retry resumes from it; the destination cleans up (or keeps) its side itself.
 */
import { alreadyExists, failedPrecondition, notFound, toAppError, withCleanupErrors } from "../../src/common/errors";
import { backupSnapName, baseImageName } from "../../src/common/ids";
import type { Logger } from "../../src/common/log";
import { PhaseTimer } from "../../src/common/phase-timer";
import type { BackupRequest, BackupResult } from "../../src/gen/rbdbackup/v1/agent";
import type { ImageRef } from "../../src/gen/rbdbackup/v1/common";
import type {
  BackupSnapshot,
  ListChainsResponse,
  TransferHeader,
  TransferSummary,
} from "../../src/gen/rbdbackup/v1/transfer";
import type { Image, IoCtx } from "../ceph";
import { isCephError } from "../ceph";
import { newStats, rbdMessages, type SourceResume, type SourceStats } from "../transfer/source";
import type { TransferTarget } from "../transfer/target";
import { backupHeader, type Destination, type SourceImageInfo, volumeMetadata } from "./backup-header";
import { choosePlan, earlierAttempt, fallbackPlan, type Plan } from "./backup-plan";
import { completedEarlier, SOURCE_SNAPSHOTS, sentFields, type WithSourceSnapshots } from "./backup-result";
import type { EngineContext } from "./context";
import type { Progress } from "./progress";
import { keepsForRetry, sendResumable } from "./resume";
import { backupSnapshots, snapshotsToPrune } from "./snapshots";

/** The phase that starts when the named one ends (for progress reports). */
const PHASE_AFTER: Record<string, string> = {
  open: "planning",
  listChains: "snapshot",
  snapshot: "transfer",
  transfer: "prune",
  prune: "done",
};

/** Milliseconds spent in each phase (monotonic; for the log), and the phase progress reports show. */
class PhaseClock {
  readonly timer = new PhaseTimer();
  readonly started = Date.now();

  constructor(readonly progress: Progress) {}

  get ms(): Record<string, number> {
    return this.timer.ms;
  }

  /** The named phase ended. */
  ended(name: string): void {
    this.timer.mark(name);
    const next = PHASE_AFTER[name];
    if (next) this.progress.phase = next;
  }
}

interface Sent {
  plan: Plan;
  stats: SourceStats;
  summary: TransferSummary;
  resumedFrom: number;
  resumeFallbackReason: string;
}

export async function backupVolume(
  ctx: EngineContext,
  req: BackupRequest,
  vol: ImageRef,
  signal: AbortSignal,
  progress: Progress,
): Promise<BackupResult> {
  if (!(await ctx.cluster.poolExists(vol.pool)))
    throw notFound(`pool ${vol.pool} not found on cluster ${ctx.clusterName}`);
  const io = await ctx.cluster.openIoCtx(vol.pool, { namespace: vol.namespace });
  const b = new VolumeBackup(ctx, req, vol, io, signal, progress);
  try {
    return await b.run();
  } catch (e) {
    throw await b.cleanupAfterFailure(e);
  } finally {
    await b.close();
  }
}

class VolumeBackup {
  readonly label: string;
  readonly dest: Omit<Destination, "fsid">;
  readonly target: TransferTarget;
  readonly log: Logger;
  readonly clock: PhaseClock;
  head: Image | null = null;
  snapImage: Image | null = null;
  snapName = "";
  /** The snapshot is an earlier attempt's (a retry): its transfer may resume. */
  reusedSnapshot = false;
  /** The transfer started: a failure from here on may keep the snapshot for a retry. */
  transferring = false;
  /** Warnings from before the transfer (leftovers removed). */
  earlyWarnings: string[] = [];
  /** The volume's snapshot names (null: to be listed). */
  #snapNames: string[] | null = null;

  constructor(
    readonly ctx: EngineContext,
    readonly req: BackupRequest,
    readonly vol: ImageRef,
    readonly io: IoCtx,
    readonly signal: AbortSignal,
    readonly progress: Progress,
  ) {
    this.label = `${vol.pool}/${vol.namespace ? `${vol.namespace}/` : ""}${vol.image}`;
    this.dest = { pool: req.destinationPool || ctx.defaultBackupPool, namespace: req.destinationNamespace };
    this.target = ctx.target(req.destination?.address ?? "", req.transferOptions);
    this.log = ctx.log.child({ op: "backup", backup: req.backupId, volume: this.label, job: req.jobId || undefined });
    this.clock = new PhaseClock(progress);
  }

  async run(): Promise<BackupResult> {
    // The destination's chains are asked for while the volume opens (the answers meet at the plan).
    const listing = this.target.listChains(this.dest.pool, this.dest.namespace, this.vol.image, this.signal);
    // Handled at once: a listing that fails while the volume still opens must not be an unhandled rejection
    // (which ends the process); its error is thrown by the await below, or the volume's error wins.
    listing.catch(() => {});
    const head = await this.open();
    const chains = await listing;
    this.clock.ended("listChains");
    const earlier = await this.settleEarlierAttempt(head, chains);
    if (earlier) return earlier;
    // The base image an earlier attempt of this full backup left half-written is no chain yet.
    const own = baseImageName(this.vol.image, this.req.backupId);
    const others = chains.chains.filter((c) => c.baseImage !== own);
    const plan = choosePlan(this.req, this.vol.image, await this.sourceSnapNames(head), others);
    if (plan.forcedFullReason) this.log.info("forcing a full backup", { reason: plan.forcedFullReason });
    this.clock.ended("plan");
    const snap = await this.snapshot(head);
    const sent = await this.transfer(plan, snap, { ...this.dest, fsid: chains.clusterFsid });
    this.clock.ended("transfer");
    const warnings = [...this.earlyWarnings, ...sent.summary.warnings];
    const pruned = await this.prune(head, sent.plan, warnings);
    this.clock.ended("prune");
    const result: WithSourceSnapshots = this.result(sent, snap.info, pruned.removed, warnings);
    if (pruned.left) result[SOURCE_SNAPSHOTS] = pruned.left;
    return result;
  }

  /** Opens the volume; refuses a missing or empty one. */
  async open(): Promise<Image> {
    try {
      this.head = await this.io.imageOpen(this.vol.image);
    } catch (e) {
      if (isCephError(e, "ENOENT")) throw notFound(`volume ${this.label} not found on cluster ${this.ctx.clusterName}`);
      throw e;
    }
    const info = await this.head.stat();
    if (info.size === 0) throw failedPrecondition(`volume ${this.label} has size 0: there is nothing to back up`);
    this.#snapNames = (await this.head.snapList()).map((s) => s.name);
    this.clock.ended("open");
    return this.head;
  }

  /** The volume's snapshot names, as last listed (listed again after leftovers were removed). */
  async sourceSnapNames(head: Image): Promise<string[]> {
    this.#snapNames ??= (await head.snapList()).map((s) => s.name);
    return this.#snapNames;
  }

  /**
   * The same backup id again: the result of an earlier attempt that completed it (a job's retry), an
   * error if the backup exists otherwise; a source snapshot an interrupted attempt left is removed.
   */
  async settleEarlierAttempt(head: Image, chains: ListChainsResponse): Promise<BackupResult | null> {
    const found = earlierAttempt(this.req, await this.sourceSnapNames(head), chains.chains);
    switch (found.kind) {
      case "none":
        return null;
      case "completed":
        // Its snapshot exists on the base image (a backup's last step) but its agent stopped before
        // the coordinator heard: that backup is this attempt's result, not a conflict.
        this.log.warn("the backup was completed by an earlier attempt; reporting it", {
          baseImage: found.chain.baseImage,
        });
        return completedEarlier(this.req, found.chain, this.clock.started, {
          destPool: this.dest.pool,
          destNs: this.dest.namespace,
          fsid: chains.clusterFsid,
        });
      case "exists":
        throw alreadyExists(`backup ${this.req.backupId} already exists (base image ${found.baseImage})`);
      case "leftovers": {
        // A job's retry reuses the newest: the transfer cut short there may resume. The rest go.
        const reuse = this.req.jobId ? (found.snapshots[found.snapshots.length - 1] as string) : "";
        if (reuse) {
          this.snapName = reuse;
          this.reusedSnapshot = true;
          this.earlyWarnings.push(`reused ${reuse}, left on the volume by an interrupted attempt of this backup`);
          this.log.info("reusing the snapshot of an interrupted attempt", { snapshot: reuse });
        }
        for (const name of found.snapshots) {
          if (name === reuse) continue;
          await head.snapRemove(name);
          this.earlyWarnings.push(`removed ${name}, left on the volume by an interrupted attempt of this backup`);
          this.log.info("removed a leftover snapshot of an interrupted attempt", { snapshot: name });
        }
        this.#snapNames = null;
        return null;
      }
    }
  }

  /** Creates this backup's snapshot on the volume and opens the volume at it. */
  async snapshot(head: Image): Promise<{ info: SourceImageInfo; imageMeta: Record<string, string> }> {
    if (!this.reusedSnapshot) {
      this.snapName = backupSnapName(this.req.backupId);
      await head.snapCreate(this.snapName);
    }
    this.clock.ended("snapCreate");
    // The volume's image-meta is listed while the snapshot opens; both settle, so close() sees the image.
    const [listed, opened] = await Promise.allSettled([
      head.metaList(),
      this.io.imageOpen(this.vol.image, { snapshot: this.snapName }),
    ]);
    if (opened.status === "fulfilled") this.snapImage = opened.value;
    if (listed.status === "rejected") throw listed.reason;
    if (opened.status === "rejected") throw opened.reason;
    const imageMeta = listed.value;
    const info = await opened.value.stat();
    this.clock.ended("snapshot");
    this.progress.bytesTotal = info.size;
    return { info, imageMeta };
  }

  /** Streams the plan's diff; AUTO redoes an incremental whose diff failed on our side in full. */
  async transfer(
    plan: Plan,
    snap: { info: SourceImageInfo; imageMeta: Record<string, string> },
    dest: Destination,
  ): Promise<Sent> {
    try {
      return await this.send(plan, snap, dest);
    } catch (e) {
      const full = fallbackPlan(this.req, this.vol.image, plan, e);
      if (!full) throw e;
      this.log.warn("incremental diff failed, forcing a full backup", { reason: full.forcedFullReason });
      return await this.send(full, snap, dest);
    }
  }

  async send(
    plan: Plan,
    snap: { info: SourceImageInfo; imageMeta: Record<string, string> },
    dest: Destination,
  ): Promise<Sent> {
    const { ctx, req, vol } = this;
    let stats = newStats();
    const source = {
      fsid: ctx.fsid,
      clusterName: ctx.clusterName,
      pool: vol.pool,
      namespace: vol.namespace,
      image: vol.image,
      snapshot: this.snapName,
    };
    const meta = volumeMetadata(req, source, snap.info, snap.imageMeta, plan);
    const header = { ...backupHeader(ctx, req, plan, this.snapName, snap.info, dest, meta), resumable: req.resumable };
    const messages = (h: TransferHeader, resume?: SourceResume) => {
      stats = newStats();
      this.progress.stats = stats;
      return rbdMessages(
        this.snapImage as Image,
        h,
        { ...(plan.parent ? { fromSnapshot: plan.parent } : {}), fullCopy: false, ...(resume ? { resume } : {}) },
        { ...ctx.source, meter: ctx.meter, meterPool: vol.pool },
        stats,
      );
    };
    this.transferring = true;
    const cap = req.transferCapability || undefined;
    const sent = await sendResumable(this.target, header, messages, this.signal, cap, this.reusedSnapshot, this.log);
    return {
      plan,
      stats,
      summary: sent.summary,
      resumedFrom: sent.resumedFrom,
      resumeFallbackReason: sent.fallbackReason,
    };
  }

  /**
   * Hygiene once the backup exists: removes the source snapshots no chain needs; failures become
   * warnings. `left`: the backup snapshots still on the volume (the listing minus what was removed;
   * null when the listing failed).
   */
  async prune(
    head: Image,
    plan: Plan,
    warnings: string[],
  ): Promise<{ removed: string[]; left: BackupSnapshot[] | null }> {
    const removed: string[] = [];
    let left: BackupSnapshot[] | null = null;
    try {
      const chainSnaps = new Set([...plan.chainSnapshots, this.snapName]);
      const listed = await head.snapList();
      const prune = snapshotsToPrune(
        listed,
        this.snapName,
        chainSnaps,
        this.req.maxSnapshots,
        new Set(this.req.keepSnapshots),
      );
      for (const name of prune) {
        try {
          await head.snapRemove(name);
          removed.push(name);
        } catch (e) {
          warnings.push(`could not remove source snapshot ${name}: ${(e as Error).message}`);
        }
      }
      const gone = new Set(removed);
      left = backupSnapshots(listed.filter((s) => !gone.has(s.name)));
    } catch (e) {
      warnings.push(`source snapshot pruning failed: ${(e as Error).message}`);
    }
    return { removed, left };
  }

  result(sent: Sent, info: SourceImageInfo, removed: string[], warnings: string[]): BackupResult {
    const { plan, stats, summary } = sent;
    const seconds = (Date.now() - this.clock.started) / 1000;
    this.log.info("backup done", {
      phases: this.clock.ms,
      incremental: plan.incremental,
      dataBytes: stats.dataBytes,
      zeroRanges: stats.zeroRanges,
      seconds,
      ...(stats.ms ? { sourceMs: stats.ms } : {}),
    });
    return {
      backupId: this.req.backupId,
      baseImage: plan.baseImage,
      snapshot: this.snapName,
      incremental: plan.incremental,
      parentSnapshot: plan.parent ?? "",
      forcedFullReason: plan.forcedFullReason,
      imageSize: info.size,
      ...sentFields(stats),
      seconds,
      sourceSnapshotsRemoved: removed,
      warnings,
      destinationPool: this.dest.pool,
      destinationNamespace: this.dest.namespace,
      destinationFsid: summary.destinationFsid,
      imageDigest: summary.imageDigest,
      digestBlockSize: summary.digestBlockSize,
      resumedFrom: sent.resumedFrom,
      resumeFallbackReason: sent.resumeFallbackReason,
    };
  }

  /** Removes this attempt's source snapshot; the error to throw names every cleanup failure too. */
  async cleanupAfterFailure(e: unknown): Promise<unknown> {
    const cleanupErrors: unknown[] = [];
    if (this.snapImage) {
      await this.snapImage.close().catch((x) => cleanupErrors.push(x));
      this.snapImage = null;
    }
    const snapName = this.snapName;
    if (snapName && this.transferring && keepsForRetry(this.req.resumable, this.signal, e)) {
      this.log.warn("transfer cut short: the source snapshot stays for the retry to resume", { snapshot: snapName });
    } else if (snapName && this.head) {
      await this.head.snapRemove(snapName).catch((x) => {
        if (!isCephError(x, "ENOENT")) cleanupErrors.push(toAppError(x, `removing source snapshot ${snapName}`));
      });
    }
    this.log.warn("backup failed", { error: toAppError(e).message });
    return withCleanupErrors(e, cleanupErrors);
  }

  async close(): Promise<void> {
    await this.snapImage?.close().catch(() => {});
    await this.head?.close().catch(() => {});
    await this.io.close().catch(() => {});
  }
}
