/**
 * Backup of an RBD volume of this agent's cluster, in named phases:
 *  open      — the pool and the volume (NOT_FOUND / size 0 refused);
 *  plan      — the destination's chains; what an earlier attempt of this backup left (a job's retry
 *              that finds its backup committed reports it: the "lost outcome"); full or incremental;
 *  snapshot  — "backup.<id>.snap.<ts>" on the volume (an earlier attempt's, when one left it: a retry
 *              resumes that attempt's transfer); the volume's handle is moved to it (rbd_snap_set: no
 *              second open, no second watch for the snapshot's removal to notify) and back to the head
 *              before the prune;
 *  transfer  — the diff streamed to the destination, which writes, verifies, flushes and only then
 *              creates the same snapshot on the base image (AUTO redoes a failed incremental in full);
 *              a retry asks the destination where to resume and sends only the rest (resume.ts).
 *              A new snapshot is made while the header is already on its way (the destination prepares
 *              its image meanwhile, not after): the header carries the volume's facts as opened, and the
 *              diff starts once the snapshot is open and shows the same facts — should it not (resized
 *              or features changed in between), that stream ends before any data, the destination
 *              cleans up, and the backup is sent again with the snapshot's facts;
 *  prune     — source snapshots no chain needs any more (failures are warnings: the backup exists);
 *              a coordinator's lease (skip_source_prune) only lists them for the job's outcome: its
 *              snapshot hygiene removes them once the job has ended, off the path the caller waits on.
 * On failure the new source snapshot is removed — unless the transfer was cut short and the coordinator
 * retries (req.resumable): the retry resumes from it; the destination cleans up (or keeps) its side itself.
 */
import {
  aborted,
  alreadyExists,
  failedPrecondition,
  notFound,
  toAppError,
  withCleanupErrors,
} from "../../src/common/errors";
import { backupSnapName, baseImageName } from "../../src/common/ids";
import type { Logger } from "../../src/common/log";
import { PhaseTimer } from "../../src/common/phase-timer";
import type { BackupRequest, BackupResult } from "../../src/gen/rbdbackup/v1/agent";
import type { ImageRef } from "../../src/gen/rbdbackup/v1/common";
import type {
  BackupSnapshot,
  ListChainsResponse,
  TransferHeader,
  TransferMessage,
  TransferSummary,
} from "../../src/gen/rbdbackup/v1/transfer";
import type { Image, IoCtx } from "../ceph";
import { isCephError } from "../ceph";
import { MAX_MAPPED_IMAGE_BYTES } from "../transfer/digests";
import { newStats, rbdMessages, type SourceResume, type SourceStats } from "../transfer/source";
import type { TransferTarget } from "../transfer/target";
import { backupHeader, type Destination, type SourceImageInfo, sourceFacts, volumeMetadata } from "./backup-header";
import { choosePlan, earlierAttempt, fallbackPlan, type Plan } from "./backup-plan";
import {
  COMMITTED_WHILE_STOPPED_WARNING,
  completedEarlier,
  SOURCE_SNAPSHOTS,
  sentFields,
  type WithSourceSnapshots,
} from "./backup-result";
import type { EngineContext } from "./context";
import { OpenVolumes } from "./open-volumes";
import type { Progress } from "./progress";
import { keepsForRetry, sendResumable } from "./resume";
import { backupSnapshots, snapshotsToPrune } from "./snapshots";

/**
 * How long a stopped backup asks its destination whether it committed anyway (committedWhileStopped): the
 * destination first lets a transfer of the volume still writing there end (up to 20 s, EARLIER_TRANSFER_WAIT_MS).
 */
const COMMIT_CHECK_MS = 25_000;

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

/** The header's facts that the snapshot must show for the diff to follow it (null: it does). */
function factsChanged(header: SourceImageInfo, snap: SourceImageInfo): Record<string, unknown> | null {
  const keys = ["size", "features", "order", "stripeUnit", "stripeCount"] as const;
  const changed = keys.filter((k) => header[k] !== snap[k]);
  if (changed.length === 0) return null;
  return Object.fromEntries(changed.map((k) => [k, { opened: String(header[k]), snapshot: String(snap[k]) }]));
}

interface SnapFacts {
  info: SourceImageInfo;
  imageMeta: Record<string, string>;
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
  // The volume as the API's probe opened it moments ago, when this agent holds it (open-volumes.ts).
  const held = ctx.openVolumes?.take(OpenVolumes.key(vol.pool, vol.namespace, vol.image)) ?? null;
  if (!held && !(await ctx.cluster.poolExists(vol.pool)))
    throw notFound(`pool ${vol.pool} not found on cluster ${ctx.clusterName}`);
  const io = held?.io ?? (await ctx.cluster.openIoCtx(vol.pool, { namespace: vol.namespace }));
  const b = new VolumeBackup(ctx, req, vol, io, signal, progress, held?.image ?? null);
  try {
    return await b.run();
  } catch (e) {
    const kept = await b.committedWhileStopped(e);
    if (kept) return kept;
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
  /** The head handle once moved to this backup's snapshot (the diff reads it), until moved back. */
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
  /** The volume's facts as opened (the header's while its snapshot is made). */
  #headInfo: SourceImageInfo | null = null;
  /** The volume's image-meta, listed with its snapshots when it opened (the header's and backup.<id>.meta's). */
  #imageMeta: Record<string, string> = {};
  /** Snapshot creation and opening (ms) when made alongside the transfer's start (not a phase of its own). */
  snapshotMs: number | undefined;
  /** This attempt's snapshot exists on the volume (made now, or an earlier attempt's). */
  #snapshotMade = false;
  /** Set when the snapshot's facts differed from the header's (the stream was abandoned before data). */
  #changed: Record<string, unknown> | null = null;

  constructor(
    readonly ctx: EngineContext,
    readonly req: BackupRequest,
    readonly vol: ImageRef,
    readonly io: IoCtx,
    readonly signal: AbortSignal,
    readonly progress: Progress,
    /** The volume already open (the probe's handle), or null: open() opens it. */
    readonly opened: Image | null = null,
  ) {
    this.label = `${vol.pool}/${vol.namespace ? `${vol.namespace}/` : ""}${vol.image}`;
    this.dest = { pool: req.destinationPool || ctx.defaultBackupPool, namespace: req.destinationNamespace };
    this.target = ctx.target(req.destination?.address ?? "", req.transferOptions);
    this.log = ctx.log.child({ op: "backup", backup: req.backupId, volume: this.label, job: req.jobId || undefined });
    this.clock = new PhaseClock(progress);
  }

  async run(): Promise<BackupResult> {
    // The destination's chains are asked for while the volume opens (the answers meet at the plan).
    const listing = this.target.listChains(
      this.dest.pool,
      this.dest.namespace,
      this.vol.image,
      this.signal,
      this.req.transferCapability || undefined,
    );
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
    const dest = { ...this.dest, fsid: chains.clusterFsid };
    const { snap, sent } = this.reusedSnapshot
      ? await this.snapshotThenSend(plan, dest)
      : await this.sendWhileSnapshotting(head, plan, dest);
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
      this.head = this.opened ?? (await this.io.imageOpen(this.vol.image));
    } catch (e) {
      if (isCephError(e, "ENOENT")) throw notFound(`volume ${this.label} not found on cluster ${this.ctx.clusterName}`);
      throw e;
    }
    const info = sourceFacts(await this.head.stat());
    if (info.size === 0) throw failedPrecondition(`volume ${this.label} has size 0: there is nothing to back up`);
    if (info.size > MAX_MAPPED_IMAGE_BYTES) {
      throw failedPrecondition(
        `volume ${this.label} has ${info.size} bytes: backups of volumes over 512 TiB are not supported (their digest map)`,
      );
    }
    this.#headInfo = info;
    // Listed side by side: the image-meta goes into the header, which then waits for nothing more.
    const [snaps, imageMeta] = await Promise.all([this.head.snapList(), this.head.metaList()]);
    this.#snapNames = snaps.map((s) => s.name);
    this.#imageMeta = imageMeta;
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

  /** A retry's snapshot (it exists): opened, then the transfer (resumed where the destination can). */
  async snapshotThenSend(plan: Plan, dest: Destination): Promise<{ snap: SnapFacts; sent: Sent }> {
    this.#snapshotMade = true;
    this.clock.ended("snapCreate");
    const info = await this.openSnapshot();
    this.clock.ended("snapshot");
    const snap = { info, imageMeta: this.#imageMeta };
    return { snap, sent: await this.transfer(plan, snap, dest) };
  }

  /**
   * A new snapshot, made while the header (with the volume's facts as opened) is on its way; the diff
   * follows once the snapshot is open and shows the same facts. Otherwise that stream ends before any
   * data and the backup is sent again with the snapshot's facts. Whatever happens, the snapshot's
   * creation settles before this returns or throws (cleanup must see it).
   */
  async sendWhileSnapshotting(head: Image, plan: Plan, dest: Destination): Promise<{ snap: SnapFacts; sent: Sent }> {
    // The snapshot is part of the transfer's start now (progress shows the transfer).
    this.progress.phase = "transfer";
    const imageMeta = this.#imageMeta;
    this.snapName = backupSnapName(this.req.backupId);
    const snapshotting = this.createSnapshot(head);
    snapshotting.catch(() => {}); // awaited below, whatever the transfer does
    const early = { info: this.#headInfo as SourceImageInfo, imageMeta };
    try {
      try {
        const sent = await this.transfer(plan, early, dest, snapshotting);
        return { snap: { info: await snapshotting, imageMeta }, sent };
      } catch (e) {
        if (!this.#changed) throw e;
        const snap = { info: await snapshotting, imageMeta };
        this.log.info("the volume changed while its snapshot was made; sending again with the snapshot's facts", {
          changed: this.#changed,
        });
        this.#changed = null;
        return { snap, sent: await this.transfer(plan, snap, dest) };
      }
    } finally {
      await snapshotting.catch(() => {});
    }
  }

  /** Creates this backup's snapshot on the volume and opens the volume at it: the snapshot's facts. */
  async createSnapshot(head: Image): Promise<SourceImageInfo> {
    const t = new PhaseTimer();
    const grow = this.ctx.growBeforeSnapshotBytes;
    if (grow) await head.resize((this.#headInfo?.size ?? 0) + grow); // test fault: the header's facts go stale
    await head.snapCreate(this.snapName);
    this.#snapshotMade = true;
    const info = await this.openSnapshot();
    this.snapshotMs = t.elapsedMs();
    return info;
  }

  /** Moves the volume's handle to this backup's snapshot: its facts. */
  async openSnapshot(): Promise<SourceImageInfo> {
    const head = this.head as Image;
    await head.snapSet(this.snapName);
    this.snapImage = head;
    const info = sourceFacts(await head.stat());
    this.progress.bytesTotal = info.size;
    return info;
  }

  /** Streams the plan's diff; AUTO redoes an incremental whose diff failed on our side in full. */
  async transfer(
    plan: Plan,
    snap: SnapFacts,
    dest: Destination,
    snapshotting?: Promise<SourceImageInfo>,
  ): Promise<Sent> {
    try {
      return await this.send(plan, snap, dest, snapshotting);
    } catch (e) {
      const full = fallbackPlan(this.req, this.vol.image, plan, e);
      if (!full) throw e;
      this.log.warn("incremental diff failed, forcing a full backup", { reason: full.forcedFullReason });
      return await this.send(full, { info: (await snapshotting) ?? snap.info, imageMeta: snap.imageMeta }, dest);
    }
  }

  /** `snapshotting`: the snapshot is still being made; the diff waits for it after the header. */
  async send(plan: Plan, snap: SnapFacts, dest: Destination, snapshotting?: Promise<SourceImageInfo>): Promise<Sent> {
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
      const diff = () =>
        rbdMessages(
          this.snapImage as Image,
          h,
          { ...(plan.parent ? { fromSnapshot: plan.parent } : {}), fullCopy: false, ...(resume ? { resume } : {}) },
          { ...ctx.source, meter: ctx.meter, meterPool: vol.pool },
          stats,
        );
      return snapshotting ? this.afterSnapshot(h, snap.info, snapshotting, diff) : diff();
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
   * The header at once, then — once the snapshot is open and shows the facts the header gave — the
   * diff (its own header skipped). A snapshot that differs ends the stream before any data (#changed).
   */
  async *afterSnapshot(
    header: TransferHeader,
    facts: SourceImageInfo,
    snapshotting: Promise<SourceImageInfo>,
    diff: () => AsyncGenerator<TransferMessage>,
  ): AsyncGenerator<TransferMessage> {
    yield { body: { $case: "header", value: header } };
    const changed = factsChanged(facts, await snapshotting);
    if (changed) {
      this.#changed = changed;
      throw aborted(`volume ${this.label} changed while its snapshot was made: ${JSON.stringify(changed)}`);
    }
    const rest = diff();
    await rest.next(); // its header: sent above
    yield* rest;
  }

  /**
   * Hygiene once the backup exists: removes the source snapshots no chain needs; failures become
   * warnings. `left`: the backup snapshots still on the volume (the listing minus what was removed;
   * null when the listing failed). With req.skipSourcePrune (a coordinator's lease) nothing is removed:
   * the listing goes into the job's outcome and the coordinator's hygiene removes what may go after the
   * job has ended (the handle was refreshed when it moved to the snapshot: the listing reads no OSD).
   */
  async prune(
    head: Image,
    plan: Plan,
    warnings: string[],
  ): Promise<{ removed: string[]; left: BackupSnapshot[] | null }> {
    const removed: string[] = [];
    let left: BackupSnapshot[] | null = null;
    try {
      await this.backToHead();
      const listed = await head.snapList();
      if (this.req.skipSourcePrune) return { removed, left: backupSnapshots(listed) };
      const chainSnaps = new Set([...plan.chainSnapshots, this.snapName]);
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
      ...(this.snapshotMs !== undefined ? { snapshotMsDuringTransfer: this.snapshotMs } : {}),
      incremental: plan.incremental,
      dataBytes: stats.dataBytes,
      zeroRanges: stats.zeroRanges,
      seconds,
      ...(stats.ms ? { sourceMs: stats.ms } : {}),
      ...(stats.readWindowPeak ? { readWindowPeak: stats.readWindowPeak } : {}),
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

  /** Moves the volume's handle back from the snapshot to the head (snapshots are removed from there). */
  async backToHead(): Promise<void> {
    if (!this.snapImage) return;
    await this.snapImage.snapSet(null);
    this.snapImage = null;
  }

  /**
   * A transfer stopped (a cancel, the agent's shutdown) may have been stopped too late: the destination
   * already had every byte and committed — then the cancel did not take, and the backup exists. Asked
   * of the destination's chains (bounded: 25 s, its own deadline, for the job's signal has fired; the
   * destination answers once a commit or cleanup of the volume there has ended) before
   * anything is cleaned up; when its snapshot is there, that backup is this attempt's result and the
   * source snapshot stays (the chain's next incremental starts from it). Otherwise, or when the question
   * fails, null: the failure stands and cleanup runs as ever. (A stream cut short before its trailer is
   * never committed; a transient failure keeps its snapshot for the retry, which finds the commit itself.)
   */
  async committedWhileStopped(e: unknown): Promise<BackupResult | null> {
    if (!this.signal.aborted || !this.transferring || !this.snapName) return null;
    try {
      const chains = await this.target.listChains(
        this.dest.pool,
        this.dest.namespace,
        this.vol.image,
        AbortSignal.timeout(COMMIT_CHECK_MS),
        this.req.transferCapability || undefined,
      );
      const chain = chains.chains.find((c) =>
        c.snapshots.some((s) => s.backupId === this.req.backupId && s.name === this.snapName),
      );
      if (!chain) return null;
      await this.backToHead();
      this.log.warn("stopped after the destination committed the backup: it is kept", {
        baseImage: chain.baseImage,
        snapshot: this.snapName,
        stoppedBy: (e as Error)?.message,
      });
      return completedEarlier(
        this.req,
        chain,
        this.clock.started,
        { destPool: this.dest.pool, destNs: this.dest.namespace, fsid: chains.clusterFsid },
        COMMITTED_WHILE_STOPPED_WARNING,
      );
    } catch (x) {
      this.log.warn("could not ask the destination whether the stopped backup committed; cleaning up", {
        error: (x as Error)?.message,
      });
      return null;
    }
  }

  /** Removes this attempt's source snapshot; the error to throw names every cleanup failure too. */
  async cleanupAfterFailure(e: unknown): Promise<unknown> {
    const cleanupErrors: unknown[] = [];
    await this.backToHead().catch((x) => cleanupErrors.push(x));
    const snapName = this.snapName;
    if (snapName && this.transferring && this.#snapshotMade && keepsForRetry(this.req.resumable, this.signal, e)) {
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
    await this.head?.close().catch(() => {});
    await this.io.close().catch(() => {});
  }
}
