/**
 * The destination side of one transfer, as named phases: read the header → check the pool (and keep
 * watching it) and that the transfer fits with a free-space margin → prepare the target image → receive (every message checked, chunks written through
 * the aio window) → writes done (trailer verified, all writes finished, flushed) → commit (metadata
 * object, then the snapshot) → the summary (a backup recorded for its confirmation: before its handle
 * closes, settleCommitted).
 *
 * Failure is clean: no snapshot unless everything was written and flushed; writes not yet started
 * never start; then cleanup undoes what the footprint records. `runSink` settles only once that
 * cleanup is over — so a caller that waits for it (the transfer server before it answers, the
 * in-process shortcut) knows the destination is clean. When cleanup itself fails, its error is part of
 * the reported error and the journal entry stays for recovery at the next start.
 */
import { resourceExhausted, toAppError, unavailable, withCleanupErrors } from "../../../src/common/errors";
import type { Logger } from "../../../src/common/log";
import { PARTLY_OVERWRITTEN } from "../../../src/common/outcome-words";
import { PhaseTimer } from "../../../src/common/phase-timer";
import {
  type BackupSnapshot,
  type TransferHeader,
  TransferKind,
  type TransferMessage,
  type TransferSummary,
} from "../../../src/gen/rbdbackup/v1/transfer";
import { isCephError } from "../../ceph";
import { backupSnapshotOf } from "../backup-snapshots";
import { MAX_DISCARD_BYTES, writesInPlace } from "../protocol";
import { RELEASE, type Releasable } from "../wire";
import { abortable, transferAbort } from "./abort";
import type { Checkpointer, CheckpointRecord } from "./checkpoint";
import { cleanup } from "./cleanup";
import { commit, removeMarker } from "./commit";
import { inflated } from "./decompress";
import { digestFields, digestRecord, finishDigests, startDigests } from "./digests";
import { type Footprint, imageWhere, newFootprint } from "./footprint";
import { holdForResume } from "./keep";
import { checkPool, type PoolWatch, watchPool } from "./pool-watch";
import type { SinkCluster, SinkDeps, SinkImage } from "./ports";
import { checkpointer, dropCheckpoint, prepareTarget } from "./resume";
import { checkRoom } from "./room";
import { claimImageAlone, EARLIER_TRANSFER_WAIT_MS } from "./running";
import { type Checked, readHeader, StreamChecks } from "./stream-checks";
import { WriteWindow } from "./write-window";

type Deps = SinkDeps<SinkCluster>;

export async function runSink(
  deps: Deps,
  messages: AsyncIterable<TransferMessage>,
  callSignal?: AbortSignal,
  opts: SinkOptions = {},
): Promise<TransferSummary> {
  const it = messages[Symbol.asyncIterator]();
  try {
    return await sinkFrom(deps, it, callSignal, opts);
  } catch (e) {
    if (opts.from === "local") await it.return?.(undefined).catch(() => {});
    throw e;
  }
}

export interface SinkOptions {
  /**
   * Where the messages come from. "network": a call from another agent, whose abort means the stream
   * was cut short, not cancelled (resume.ts). "local": the source's own generator (a same-cluster
   * transfer, rbdMessages): a failure returns it before runSink settles, so that it closes its diff (the
   * native iterator parked in rbd_diff_iterate2 holds the volume's image open) before the caller removes
   * the snapshot — after the message it is producing, if any (its reads are bounded by the op timeout).
   * Unset (tests): neither.
   */
  from?: "network" | "local";
}

async function sinkFrom(
  deps: Deps,
  it: AsyncIterator<TransferMessage>,
  callSignal: AbortSignal | undefined,
  opts: SinkOptions,
): Promise<TransferSummary> {
  const started = Date.now();
  const t = new PhaseTimer();
  const h = await readHeader(it, deps);
  t.mark("header");
  const log = deps.log.child({ transfer: h.transferId, job: h.jobId || undefined });
  const dest = h.destination as NonNullable<TransferHeader["destination"]>;
  const unclaim = await claimImageAlone(h, deps.limits.earlierTransferWaitMs ?? EARLIER_TRANSFER_WAIT_MS, callSignal);
  if (!unclaim) {
    await it.return?.(undefined).catch(() => {});
    throw unavailable(
      `image ${imageWhere(dest)} is still being written by an earlier transfer on this agent (winding down); retry shortly`,
    );
  }
  const { ac, unlink } = transferAbort(callSignal);
  try {
    await checkPool(deps.cluster, dest.pool, deps.clusterName);
    await checkRoom(deps.cluster, h, deps.clusterName);
    t.mark("poolChecks");
    const watch = watchPool(deps.cluster, dest.pool, deps.clusterName, deps.limits.fullCheckIntervalMs, ac);
    const fp = newFootprint(h);
    fp.signal = ac.signal;
    const window = new WriteWindow(
      {
        writesInFlight: deps.limits.writesInFlight,
        windowBytes: deps.limits.windowBytes,
        ...(deps.limits.maxWindowBytes ? { maxWindowBytes: deps.limits.maxWindowBytes } : {}),
        meter: deps.meter,
        pool: dest.pool,
        ...(deps.writeDelayMs ? { writeDelayMs: deps.writeDelayMs } : {}),
      },
      ac.signal,
    );
    const checks = new StreamChecks(h, deps.meter, dest.pool, deps.checksum);
    let cp: Checkpointer | null = null;
    let resumedFrom: CheckpointRecord | null = null;
    try {
      // FULL_TRY: on a full pool, writes fail with ENOSPC instead of waiting, and the image's lock
      // release, unwatch and removal (cleanup) still go through.
      fp.io = await deps.cluster.openIoCtx(dest.pool, { namespace: dest.namespace, poolFullTry: true });
      // The parent's digest map is read while the image is prepared; both settle before either's failure
      // is thrown, so cleanup sees what prepare made.
      const [prepared, mapRead] = await Promise.allSettled([
        prepareTarget(deps, fp, checks, log),
        startDigests(fp, deps.checksum, log),
      ]);
      if (prepared.status === "rejected") throw prepared.reason;
      if (mapRead.status === "rejected") throw mapRead.reason;
      resumedFrom = prepared.value;
      // A backup's map: the chunk check computes its blocks' CRCs (the pieces of the chunk cut at block
      // boundaries) in the same pass as the chunk's; the builder combines them, whatever the block size.
      checks.blockSize = fp.digests?.builder.blockSize ?? 0;
      t.mark("prepare");
      // A resumed backup never sees the records below the offset: its map reads those blocks back.
      if (resumedFrom) fp.digests?.builder.readBackRange(0, resumedFrom.offset);
      cp = checkpointer(deps, fp, checks, window, log, resumedFrom);
      if (cp && resumedFrom) await cp.write(resumedFrom);
      ac.signal.throwIfAborted();
      const chunks = inflated(it, h, {
        meter: deps.meter,
        meterPool: dest.pool,
        ...(deps.codec ? { codec: deps.codec } : {}),
      });
      const waits = { data: 0, room: 0 };
      const zeroBytes = await receive(chunks, fp, checks, window, ac.signal, cp, waits);
      t.mark("receive");
      await writesDone(fp, checks, window, ac.signal);
      await cp?.idle();
      t.mark("drainFlush");
      await finishDigests(fp, ac.signal);
      t.mark("digestsWrite");
      await commit(deps, fp, log);
      t.mark("commit");
      const settling = settleCommitted(deps, fp, cp, log);
      if (!settling.afterSummary) fp.warnings.push(...(await settling.done));
      t.mark("close");
      const seconds = (Date.now() - started) / 1000;
      log.info("transfer committed", {
        image: fp.where,
        dataBytes: checks.dataBytes,
        zeroRanges: checks.zeroRanges,
        seconds,
        phases: t.ms,
        // Of receive: waiting for the next message, waiting for room in the write window (ms).
        receiveWaits: { data: Math.round(waits.data), room: Math.round(waits.room) },
        writes: window.latency,
      });
      return {
        dataBytesWritten: checks.dataBytes,
        zeroBytesWritten: zeroBytes,
        dataChunks: checks.chunks,
        zeroRanges: checks.zeroRanges,
        snapshotCreated: fp.snapshotCreated ? h.toSnapshot : "",
        imageCreated: fp.createdImage,
        seconds,
        destinationFsid: deps.fsid,
        warnings: fp.warnings,
        ...digestFields(fp),
        resumedFrom: resumedFrom?.offset ?? 0,
      };
    } catch (e) {
      // Nothing after the commit throws (settleCommitted only warns); kept so that a failure there, were
      // it ever to come, makes the confirmation read Ceph.
      deps.commits?.forget(h.backupId);
      await window.settle();
      await cp?.idle();
      // Cut short (the network call aborted before its stream ended), with a checkpoint: kept for a retry.
      const cut = opts.from === "network" && callSignal?.aborted === true;
      if (cut && !(await watch.isFull()) && (await holdForResume(deps, fp, cp, log)))
        throw markOverwrote(fp, toAppError(ac.signal.reason));
      if (!fp.createdImage) await dropCheckpoint(fp.image, cp, fp.warnings, log);
      throw markOverwrote(fp, await failed(deps, fp, e, ac.signal, watch, log));
    } finally {
      watch.stop();
      await fp.image?.close().catch(() => {});
      await fp.io?.close().catch(() => {});
    }
  } finally {
    unclaim();
    unlink();
  }
}

/**
 * Every message after the header until the stream ends: checked, then written through the window
 * (zero ranges only where the image had data before). Returns the bytes zeroed.
 */
async function receive(
  it: AsyncIterator<TransferMessage>,
  fp: Footprint,
  checks: StreamChecks,
  window: WriteWindow,
  signal: AbortSignal,
  cp: Checkpointer | null,
  waits: { data: number; room: number },
): Promise<number> {
  const image = fp.image as SinkImage;
  let zeroBytes = 0;
  for (;;) {
    const t0 = performance.now();
    const next = await abortable(it.next(), signal);
    waits.data += performance.now() - t0;
    if (next.done) return zeroBytes;
    // The buffer a received chunk lives in goes back to its pool once written (transfer-server.ts).
    const release = (next.value as Releasable)[RELEASE];
    let m: Checked;
    try {
      m = checks.next(next.value);
      digestRecord(fp, m);
    } catch (e) {
      release?.();
      throw e;
    }
    if (m.$case === "chunk") {
      const { data, offset } = m;
      const t1 = performance.now();
      await window.submit(data.length, "write", () => image.write(data, offset), release);
      waits.room += performance.now() - t1;
      fp.wrote = true;
      cp?.after(offset + data.length);
      continue;
    }
    release?.();
    if (m.$case === "zero" && !fp.fresh) {
      const end = m.offset + m.length;
      for (let off = m.offset; off < end; off += MAX_DISCARD_BYTES) {
        const n = Math.min(MAX_DISCARD_BYTES, end - off);
        zeroBytes += n;
        await window.submit(0, "zeroes", () => image.writeZeroes(off, n));
        fp.wrote = true;
      }
    }
    if (m.$case === "zero") cp?.after(m.offset + m.length);
  }
}

/**
 * What follows a commit — an image this transfer created loses its incomplete marker (commit.ts), the
 * checkpoint is dropped, the snapshot listed, the handle and the pool closed, the journal entry removed —
 * and when. A backup this agent keeps for its confirmation (recent-commits.ts: the metadata bytes written, and the snapshot as the committing handle lists it —
 * one refresh, no second open) settles AFTER the summary is returned: the backup exists from the
 * commit, the source reports meanwhile, and the confirmation waits for the listing only; this agent's
 * delete of that backup and its stop wait for all of it. Anything else (a restore: the image is the
 * caller's once answered; no record kept) settles before. Never rejects: a failure here is a warning —
 * the snapshot already counts, and a journal entry left behind is recovery's at the next start, which
 * finds the snapshot and undoes nothing.
 */
function settleCommitted(
  deps: SinkDeps<SinkCluster>,
  fp: Footprint,
  cp: Checkpointer | null,
  log: Logger,
): { afterSummary: boolean; done: Promise<string[]> } {
  const h = fp.h;
  const image = fp.image as SinkImage;
  const io = fp.io;
  // From here the handle and the pool are this function's (the sink's own cleanup no longer closes them).
  fp.image = undefined;
  fp.io = undefined;
  const warnings: string[] = [];
  const settle = async (what: string, f: () => Promise<unknown>) => {
    try {
      await f();
    } catch (e) {
      warnings.push(`could not ${what}: ${(e as Error).message}`);
      log.warn(`could not ${what} after the commit`, { err: e });
    }
  };
  const record = deps.commits && fp.snapshotCreated && fp.metaCreated ? deps.commits : null;
  const listed = record ? listCommitted(image, h.toSnapshot, log) : Promise.resolve(null);
  const t0 = performance.now();
  const done = (async () => {
    await removeMarker(deps, image, fp, warnings, log); // warns by itself
    await dropCheckpoint(image, cp, warnings, log); // warns by itself
    await listed;
    await settle("close the image", () => image.close());
    if (io) await settle("close the pool", () => io.close());
    await settle("remove the journal entry", () => deps.journal.remove(h.transferId));
    if (record) log.debug("closed after the summary", { ms: Math.round(performance.now() - t0) });
    return warnings;
  })();
  if (!record) return { afterSummary: false, done };
  const d = h.destination as NonNullable<TransferHeader["destination"]>;
  record.record(
    h.backupId,
    { pool: d.pool, namespace: d.namespace, baseImage: d.image, snapshotName: h.toSnapshot, metadata: h.metadataJson },
    listed,
    done,
  );
  return { afterSummary: true, done };
}

/** The snapshot just made, as the committing handle lists it (null when that fails: the confirmation reads Ceph). */
async function listCommitted(image: SinkImage, name: string, log: Logger): Promise<BackupSnapshot | null> {
  try {
    const s = (await image.snapList()).find((x) => x.name === name);
    return s ? backupSnapshotOf(s) : null;
  } catch (e) {
    log.warn("could not list the snapshot just made (its confirmation will read it back)", { err: e });
    return null;
  }
}

/** The stream is complete and verified, every write finished, the image flushed. */
async function writesDone(fp: Footprint, checks: StreamChecks, window: WriteWindow, signal: AbortSignal) {
  checks.requireTrailer();
  await window.drain();
  checks.verifyTrailer();
  await abortable((fp.image as SinkImage).flush(), signal);
  signal.throwIfAborted();
}

/** Failures of transfers that wrote into a volume no cleanup restores (overwroteTarget). */
const overwrote = new WeakSet<object>();

/**
 * Whether the transfer that failed with `e` had written into an existing volume, which cleanup does not
 * undo (a restore over the original, a failback): its capability is spent even so (transfer-authz.ts
 * SpentCapabilities), so that no replay of it writes the volume again.
 */
export function overwroteTarget(e: unknown): boolean {
  return typeof e === "object" && e !== null && overwrote.has(e);
}

function markOverwrote<E>(fp: Footprint, e: E): E {
  if (fp.h && writesInPlace(fp.h.kind) && fp.wrote && typeof e === "object" && e !== null) overwrote.add(e);
  return e;
}

/** The error to report, once cleanup is done: the cause (a full pool, not its symptom), plus cleanup's failures. */
async function failed(
  deps: Deps,
  fp: Footprint,
  e: unknown,
  signal: AbortSignal,
  watch: PoolWatch,
  log: Logger,
): Promise<unknown> {
  const dest = fp.h.destination as NonNullable<TransferHeader["destination"]>;
  // A pool that filled up shows as blocked or timed-out writes: report the cause, not the symptom.
  const full = isCephError(e, "ENOSPC", "EDQUOT") || (isCephError(e, "ETIMEDOUT") && (await watch.isFull()));
  const primary = full
    ? resourceExhausted(
        `pool ${dest.pool} on cluster ${deps.clusterName} is full (no space left): ${(e as Error).message}`,
      )
    : toAppError(signal.aborted ? signal.reason : e);
  if (writesInPlace(fp.h.kind) && fp.wrote) {
    primary.message += ` (the image ${fp.where} ${PARTLY_OVERWRITTEN}; ${fp.h.kind === TransferKind.FAILBACK ? "fail back" : "restore it"} again)`;
  }
  // A failed job keeps no warnings: what the failback kept of the volume before writing is said here.
  if (fp.kept) primary.message += ` — ${fp.kept}`;
  log.warn("transfer failed, cleaning up", { image: fp.where, error: primary.message });
  return withCleanupErrors(primary, await cleanup(deps, fp, log));
}
