/**
 * The destination side of a transfer: validates the stream, prepares the target image, writes chunks
 * with many aio writes in flight (bounded by count and bytes), verifies every checksum before writing
 * and the trailer before committing, flushes, and only then commits (metadata object, snapshot).
 *
 * Failure is clean: no snapshot is created unless everything was written and flushed; an image this
 * transfer created is removed; a base image's head is rolled back to its last snapshot. When cleanup
 * itself fails, its error is part of the reported error, and the journal entry stays so that recovery
 * (at the next start) finishes it. A full pool is detected before the transfer (OSD map flags) and
 * while it runs (polled), and fails the transfer with RESOURCE_EXHAUSTED instead of waiting.
 */

import {
  AppError,
  alreadyExists,
  cancelled,
  dataLoss,
  failedPrecondition,
  invalidArgument,
  notFound,
  resourceExhausted,
  toAppError,
  withCleanupErrors,
} from "../../src/common/errors";
import { metaObjectName } from "../../src/common/ids";
import type { Logger } from "../../src/common/log";
import {
  type TransferHeader,
  TransferKind,
  type TransferMessage,
  type TransferSummary,
} from "../../src/gen/rbdbackup/v1/transfer";
import type { Cluster, Image, IoCtx } from "../ceph";
import { isCephError } from "../ceph";
import type { Journal, JournalEntry } from "./journal";
import type { TransferMeter } from "./meter";
import { checksum, MAX_DISCARD_BYTES, TransferDigest, validateHeader } from "./protocol";
import { RELEASE, type Releasable } from "./wire";

/** image-meta key marking an image a transfer created and has not committed yet. */
export const INCOMPLETE_KEY = "rbdbackup.incomplete";

export interface SinkLimits {
  /** aio writes in flight. */
  writesInFlight: number;
  /** Bytes of chunk data held (received, not yet written). */
  windowBytes: number;
  /** How often to check the pool's full flag during a transfer. */
  fullCheckIntervalMs: number;
}

export interface SinkDeps {
  cluster: Cluster;
  meter: TransferMeter;
  /** This process's Ceph client address (recorded in the journal; see recoverInterrupted). */
  clientAddr: string;
  clusterName: string;
  fsid: string;
  journal: Journal;
  log: Logger;
  limits: SinkLimits;
  /** Test-only: delay every write (to make transfers slow enough to interrupt). */
  writeDelayMs?: number;
}

const RBD_BASE_FEATURES = 1n | 4n | 8n | 16n | 32n; // layering, exclusive-lock, object-map, fast-diff, deep-flatten

/** Rejects when `signal` aborts; otherwise settles like `p`. */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Removes an image, retrying while it is busy: a watch outlives a close that could not reach the
 * OSD (a full pool) until the OSD times it out (osd_client_watch_timeout, 30 s), so keep trying ~40 s.
 */
export async function removeImageRetrying(io: IoCtx, name: string, attempts = 12): Promise<void> {
  for (let i = 1; ; i++) {
    try {
      await io.imageRemove(name);
      return;
    } catch (e) {
      if (isCephError(e, "ENOENT")) return;
      if (!isCephError(e, "EBUSY") || i >= attempts) throw e;
      await sleep(Math.min(250 * 2 ** i, 4000));
    }
  }
}

/** True when the head of `image` differs from `snapshot` (data or size). */
export async function headDiffers(image: Image, snapshot: string): Promise<boolean> {
  const snap = (await image.snapList()).find((s) => s.name === snapshot);
  if (!snap) return true;
  if ((await image.stat()).size !== snap.size) return true;
  for await (const batch of image.diff({ fromSnapshot: snapshot, batchSize: 1 })) {
    if (batch.length > 0) return true;
  }
  return false;
}

interface State {
  h: TransferHeader;
  io?: IoCtx;
  image?: Image;
  createdImage: boolean;
  /** No data was in the image before: zero ranges need no writes. */
  fresh: boolean;
  wrote: boolean;
  metaCreated: boolean;
  snapshotCreated: boolean;
  journal?: JournalEntry;
  warnings: string[];
}

export async function runSink(
  deps: SinkDeps,
  messages: AsyncIterable<TransferMessage>,
  callSignal?: AbortSignal,
): Promise<TransferSummary> {
  const started = Date.now();
  const it = messages[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done || first.value.body?.$case !== "header")
    throw invalidArgument("the transfer must start with a header");
  const h = validateHeader(first.value.body.value);
  const log = deps.log.child({ transfer: h.transferId, job: h.jobId || undefined });
  if (h.expectedFsid && h.expectedFsid !== deps.fsid) {
    throw failedPrecondition(
      `this agent serves cluster ${deps.clusterName} (fsid ${deps.fsid}), not the expected fsid ${h.expectedFsid}`,
    );
  }
  const dest = h.destination as NonNullable<TransferHeader["destination"]>;
  const where = `${dest.pool}${dest.namespace ? `/${dest.namespace}` : ""}/${dest.image}`;

  // One abort for everything: the caller went away, or the pool filled up.
  const ac = new AbortController();
  const onCallAbort = () => ac.abort(cancelled("the source cancelled the transfer"));
  callSignal?.addEventListener("abort", onCallAbort, { once: true });
  if (callSignal?.aborted) onCallAbort();

  if (!(await deps.cluster.poolExists(dest.pool))) {
    throw notFound(`pool ${dest.pool} does not exist on cluster ${deps.clusterName}`);
  }
  const poolFull = async () => {
    const f = await deps.cluster.poolFullness(dest.pool);
    return f.full || f.clusterFull;
  };
  if (await poolFull()) {
    throw resourceExhausted(`pool ${dest.pool} on cluster ${deps.clusterName} is full (no space left)`);
  }
  const fullTimer = setInterval(() => {
    poolFull().then(
      (full) => {
        if (full)
          ac.abort(resourceExhausted(`pool ${dest.pool} on cluster ${deps.clusterName} became full (no space left)`));
      },
      () => {},
    );
  }, deps.limits.fullCheckIntervalMs);

  const st: State = {
    h,
    createdImage: false,
    fresh: false,
    wrote: false,
    metaCreated: false,
    snapshotCreated: false,
    warnings: [],
  };
  let dataBytes = 0;
  let zeroBytes = 0;
  let chunks = 0;
  let zeros = 0;
  try {
    // FULL_TRY: on a full pool, writes fail with ENOSPC instead of waiting, and the image's lock
    // release, unwatch and removal (cleanup) still go through.
    st.io = await deps.cluster.openIoCtx(dest.pool, { namespace: dest.namespace, poolFullTry: true });
    // Not abortable half-way (it creates what cleanup must know about); each step is bounded by the
    // cluster's op timeout.
    await prepare(deps, st, where, log);
    if (ac.signal.aborted) throw ac.signal.reason;
    const image = st.image as Image;

    // --- the write loop --------------------------------------------------------------------------
    const inflight = new Set<Promise<void>>();
    let inflightBytes = 0;
    let writeError: unknown = null;
    const meter = deps.meter;
    const pool = dest.pool;
    const submit = async (
      bytes: number,
      kind: "write" | "zeroes",
      op: () => Promise<unknown>,
      release?: () => void,
    ) => {
      while (
        inflight.size > 0 &&
        (inflight.size >= deps.limits.writesInFlight || inflightBytes + bytes > deps.limits.windowBytes)
      ) {
        await abortable(Promise.race(inflight), ac.signal);
      }
      if (writeError) throw writeError;
      inflightBytes += bytes;
      const p: Promise<void> = (async () => {
        if (deps.writeDelayMs) await sleep(deps.writeDelayMs);
        const t0 = performance.now();
        meter.ioStarted();
        try {
          await op();
        } finally {
          meter.ioFinished();
        }
        meter.io(kind, (performance.now() - t0) / 1000);
        if (kind === "write") meter.written(pool, bytes);
      })().then(
        () => {},
        (e) => {
          writeError ??= e;
        },
      );
      const tracked = p.finally(() => {
        inflight.delete(tracked);
        inflightBytes -= bytes;
        release?.(); // the write is over: its buffer may be reused (transfer-server.ts)
      });
      inflight.add(tracked);
      st.wrote = true;
    };

    const digest = new TransferDigest();
    const size = h.imageSize;
    let trailer: Extract<TransferMessage["body"], { $case: "trailer" }>["value"] | null = null;
    for (;;) {
      const next = await abortable(it.next(), ac.signal);
      if (next.done) break;
      const body = next.value.body;
      if (trailer) throw invalidArgument("a message followed the trailer");
      if (!body) throw invalidArgument("a message without a body");
      switch (body.$case) {
        case "header":
          throw invalidArgument("a second header in the same transfer");
        case "chunk": {
          const c = body.value;
          const len = c.data.length;
          if (len === 0 || len > h.chunkSize)
            throw invalidArgument(`chunk at ${c.offset}: ${len} bytes, limit ${h.chunkSize}`);
          if (!Number.isSafeInteger(c.offset) || c.offset + len > size) {
            throw invalidArgument(`chunk at ${c.offset}+${len} lies beyond the image size ${size}`);
          }
          const crc = checksum(c.data);
          if (crc !== c.crc32) {
            meter.checksumFailure(pool);
            throw dataLoss(`checksum mismatch in the chunk at offset ${c.offset} (${len} bytes): corrupted in transit`);
          }
          digest.chunk(c.offset, len, crc);
          meter.received(pool, len);
          chunks++;
          dataBytes += len;
          const data = Buffer.from(c.data.buffer, c.data.byteOffset, c.data.byteLength);
          await submit(len, "write", () => image.write(data, c.offset), (next.value as Releasable)[RELEASE]);
          break;
        }
        case "zero": {
          const z = body.value;
          if (
            !Number.isSafeInteger(z.offset) ||
            !Number.isSafeInteger(z.length) ||
            z.length <= 0 ||
            z.offset + z.length > size
          ) {
            throw invalidArgument(`zero range ${z.offset}+${z.length} is empty or lies beyond the image size ${size}`);
          }
          digest.zero(z.offset, z.length);
          zeros++;
          if (!st.fresh) {
            for (let off = z.offset; off < z.offset + z.length; off += MAX_DISCARD_BYTES) {
              const n = Math.min(MAX_DISCARD_BYTES, z.offset + z.length - off);
              zeroBytes += n;
              await submit(0, "zeroes", () => image.writeZeroes(off, n));
            }
          }
          break;
        }
        case "trailer":
          trailer = body.value;
          break;
      }
    }
    if (!trailer)
      throw new AppError(14 /* UNAVAILABLE */, "the transfer stream ended before its trailer (source gone?)");
    await abortable(Promise.all(inflight), ac.signal);
    if (writeError) throw writeError;
    if (trailer.dataChunks !== chunks || trailer.dataBytes !== dataBytes || trailer.zeroRanges !== zeros) {
      throw dataLoss(
        `the trailer counts ${trailer.dataChunks} chunks / ${trailer.dataBytes} bytes / ${trailer.zeroRanges} zero ranges, received ${chunks} / ${dataBytes} / ${zeros}`,
      );
    }
    if (!Buffer.from(trailer.digest).equals(digest.digest())) {
      throw dataLoss(
        "the transfer digest does not match the records received (lost, duplicated or reordered messages)",
      );
    }
    await abortable(image.flush(), ac.signal);
    if (ac.signal.aborted) throw ac.signal.reason;
    await commit(deps, st, log);
    await image.close();
    st.image = undefined;
    await deps.journal.remove(h.transferId);
    log.info("transfer committed", {
      image: where,
      dataBytes,
      zeroRanges: zeros,
      seconds: (Date.now() - started) / 1000,
    });
    return {
      dataBytesWritten: dataBytes,
      zeroBytesWritten: zeroBytes,
      dataChunks: chunks,
      zeroRanges: zeros,
      snapshotCreated: st.snapshotCreated ? h.toSnapshot : "",
      imageCreated: st.createdImage,
      seconds: (Date.now() - started) / 1000,
      destinationFsid: deps.fsid,
      warnings: st.warnings,
    };
  } catch (e) {
    // A pool that filled up shows as blocked or timed-out writes: report the cause, not the symptom.
    const reason = ac.signal.aborted ? ac.signal.reason : e;
    const primary =
      isCephError(e, "ENOSPC", "EDQUOT") || (isCephError(e, "ETIMEDOUT") && (await poolFull().catch(() => false)))
        ? resourceExhausted(
            `pool ${dest.pool} on cluster ${deps.clusterName} is full (no space left): ${(e as Error).message}`,
          )
        : toAppError(reason);
    if (h.kind === TransferKind.RESTORE_ORIGINAL && st.wrote) {
      primary.message += ` (the image ${where} was partly overwritten; restore it again)`;
    }
    log.warn("transfer failed, cleaning up", { image: where, error: primary.message });
    const cleanupErrors = await cleanup(deps, st, where, log);
    throw withCleanupErrors(primary, cleanupErrors);
  } finally {
    clearInterval(fullTimer);
    callSignal?.removeEventListener("abort", onCallAbort);
    await st.image?.close().catch(() => {});
    await st.io?.close().catch(() => {});
  }
}

async function prepare(deps: SinkDeps, st: State, where: string, log: Logger): Promise<void> {
  const h = st.h;
  const io = st.io as IoCtx;
  const name = h.destination?.image as string;
  const entry: JournalEntry = {
    transferId: h.transferId,
    kind: h.kind,
    pool: h.destination?.pool as string,
    namespace: h.destination?.namespace ?? "",
    image: name,
    createdImage: false,
    clientAddr: deps.clientAddr,
    startedAt: new Date().toISOString(),
    ...(h.toSnapshot ? { toSnapshot: h.toSnapshot } : {}),
    ...(h.backupId ? { backupId: h.backupId } : {}),
  };
  switch (h.kind) {
    case TransferKind.BACKUP_FULL:
    case TransferKind.RESTORE_NEW: {
      // Journal the intent first: recovery removes the image only if it carries our marker.
      st.journal = { ...entry, createdImage: true };
      await deps.journal.write(st.journal);
      const features = h.features === 0 ? RBD_BASE_FEATURES : BigInt(h.features);
      try {
        await io.imageCreate(name, h.imageSize, {
          features,
          ...(h.order ? { order: h.order } : {}),
          ...(h.stripeUnit ? { stripeUnit: h.stripeUnit } : {}),
          ...(h.stripeCount ? { stripeCount: h.stripeCount } : {}),
        });
      } catch (e) {
        await deps.journal.remove(h.transferId);
        if (isCephError(e, "EEXIST")) {
          throw alreadyExists(
            h.kind === TransferKind.BACKUP_FULL
              ? `base image ${where} already exists (backup id reused?)`
              : `image ${where} already exists: restore to a new volume needs a free name (or restore over the original)`,
          );
        }
        throw e;
      }
      st.createdImage = true;
      st.fresh = true;
      st.image = await io.imageOpen(name);
      await st.image.metaSet(INCOMPLETE_KEY, h.transferId);
      log.debug("created image", { image: where, size: h.imageSize });
      return;
    }
    case TransferKind.BACKUP_INCREMENTAL: {
      try {
        st.image = await io.imageOpen(name);
      } catch (e) {
        if (isCephError(e, "ENOENT")) throw notFound(`base image ${where} not found`);
        throw e;
      }
      const snaps = await st.image.snapList();
      if (!snaps.some((s) => s.name === h.fromSnapshot)) {
        throw notFound(`snapshot ${h.fromSnapshot} not found on base image ${where}`);
      }
      if (snaps.some((s) => s.name === h.toSnapshot)) {
        throw alreadyExists(`snapshot ${h.toSnapshot} already exists on base image ${where}`);
      }
      if (await headDiffers(st.image, h.fromSnapshot)) {
        // A failed attempt left the head written (or newer backups exist): start from the parent's state.
        await st.image.snapRollback(h.fromSnapshot);
        st.warnings.push(`rolled the head of ${where} back to ${h.fromSnapshot} before writing`);
        log.info("rolled base image head back", { image: where, to: h.fromSnapshot });
      }
      st.journal = { ...entry, rollbackTo: h.fromSnapshot };
      await deps.journal.write(st.journal);
      if ((await st.image.stat()).size !== h.imageSize) await st.image.resize(h.imageSize);
      return;
    }
    case TransferKind.RESTORE_ORIGINAL: {
      try {
        st.image = await io.imageOpen(name);
      } catch (e) {
        if (isCephError(e, "ENOENT")) throw notFound(`image ${where} not found (restore over the original needs it)`);
        throw e;
      }
      const size = (await st.image.stat()).size;
      if (size > h.imageSize) {
        // Discard what lies beyond the backup's size, in pieces under 2 GiB, then shrink.
        for (let off = h.imageSize; off < size; off += MAX_DISCARD_BYTES) {
          await st.image.discard(off, Math.min(MAX_DISCARD_BYTES, size - off));
        }
      }
      if (size !== h.imageSize) await st.image.resize(h.imageSize);
      return;
    }
    default:
      throw invalidArgument(`unknown transfer kind ${h.kind}`);
  }
}

async function commit(deps: SinkDeps, st: State, log: Logger): Promise<void> {
  const h = st.h;
  const image = st.image as Image;
  const io = st.io as IoCtx;
  if (h.kind === TransferKind.BACKUP_FULL || h.kind === TransferKind.BACKUP_INCREMENTAL) {
    if (h.metadataJson.length > 0) {
      try {
        await io.objCreateExclusive(metaObjectName(h.backupId), Buffer.from(h.metadataJson));
      } catch (e) {
        if (isCephError(e, "EEXIST"))
          throw alreadyExists(`${metaObjectName(h.backupId)} already exists (backup id reused?)`);
        throw e;
      }
      st.metaCreated = true;
      if (st.journal) {
        st.journal = { ...st.journal, metaCreated: true };
        await deps.journal.write(st.journal);
      }
    }
    // The backup exists from here on.
    await image.snapCreate(h.toSnapshot);
    st.snapshotCreated = true;
  } else {
    for (const [k, v] of Object.entries(h.imageMeta)) await image.metaSet(k, v);
  }
  if (st.createdImage) {
    await image.metaRemove(INCOMPLETE_KEY).catch((e: Error) => {
      st.warnings.push(`could not remove the ${INCOMPLETE_KEY} marker: ${e.message}`);
      log.warn("marker removal failed", { error: e });
    });
  }
}

async function cleanup(deps: SinkDeps, st: State, where: string, log: Logger): Promise<unknown[]> {
  const h = st.h;
  const errors: unknown[] = [];
  const attempt = async (what: string, f: () => Promise<unknown>) => {
    try {
      await f();
    } catch (e) {
      log.error(`cleanup: ${what} failed`, { error: e });
      errors.push(toAppError(e, what));
    }
  };
  if (st.image) {
    // close() waits for writes still in flight (bounded by the OSD op timeout).
    await attempt(`closing ${where}`, () => (st.image as Image).close());
    st.image = undefined;
  }
  if (st.snapshotCreated) return errors; // committed: nothing to undo
  const ioTry = st.io;
  if (!ioTry) return errors;
  if (st.metaCreated)
    await attempt(`removing ${metaObjectName(h.backupId)}`, () => ioTry.objRemove(metaObjectName(h.backupId)));
  if (st.createdImage) {
    await attempt(`removing the image ${where} this transfer created`, () =>
      removeImageRetrying(ioTry, h.destination?.image as string),
    );
  } else if (h.kind === TransferKind.BACKUP_INCREMENTAL && st.wrote) {
    await attempt(`rolling ${where} back to ${h.fromSnapshot}`, async () => {
      const img = await (st.io as IoCtx).imageOpen(h.destination?.image as string);
      try {
        await img.snapRollback(h.fromSnapshot);
      } finally {
        await img.close();
      }
    });
  }
  if (errors.length === 0) await deps.journal.remove(h.transferId).catch((e) => errors.push(e));
  return errors;
}

/**
 * Undoes what transfers interrupted by a crash left behind (journal entries found at start): an
 * image created by the transfer is removed unless its snapshot shows the transfer committed; a base
 * image's head is rolled back to its parent snapshot. Safe to run twice.
 */
export async function recoverInterrupted(deps: SinkDeps): Promise<string[]> {
  const done: string[] = [];
  const entries = await deps.journal.list();
  // The process that wrote these entries died holding watches and exclusive locks on the images; its
  // Ceph client would keep them until its watch times out. Blocklist it so they go now.
  const dead = new Set(entries.map((e) => e.clientAddr).filter((a): a is string => !!a && a !== deps.clientAddr));
  for (const addr of dead) {
    try {
      await deps.cluster.blocklistAdd(addr, 3600);
      done.push(`blocklisted ${addr}, the Ceph client of a previous run that died mid-transfer`);
    } catch (err) {
      deps.log.warn("could not blocklist a dead predecessor; recovery may wait for its watches to time out", {
        addr,
        error: err,
      });
    }
  }
  for (const e of entries) {
    const where = `${e.pool}${e.namespace ? `/${e.namespace}` : ""}/${e.image}`;
    try {
      if (!(await deps.cluster.poolExists(e.pool))) {
        await deps.journal.remove(e.transferId);
        continue;
      }
      const io = await deps.cluster.openIoCtx(e.pool, { namespace: e.namespace, poolFullTry: true });
      try {
        let img: Image | null = null;
        try {
          img = await io.imageOpen(e.image);
        } catch (err) {
          if (!isCephError(err, "ENOENT")) throw err;
        }
        if (img) {
          const snaps = await img.snapList();
          const committed = e.toSnapshot ? snaps.some((s) => s.name === e.toSnapshot) : false;
          if (committed) {
            if (e.createdImage) await img.metaRemove(INCOMPLETE_KEY).catch(() => {});
            await img.close();
          } else if (e.createdImage) {
            const marker = await img.metaGet(INCOMPLETE_KEY);
            await img.close();
            if (marker === e.transferId && snaps.length === 0) {
              await removeImageRetrying(io, e.image);
              done.push(`removed ${where}, left half-written by interrupted transfer ${e.transferId}`);
            }
          } else if (e.rollbackTo) {
            if (await headDiffers(img, e.rollbackTo)) {
              await img.snapRollback(e.rollbackTo);
              done.push(`rolled ${where} back to ${e.rollbackTo} after interrupted transfer ${e.transferId}`);
            }
            await img.close();
          } else {
            await img.close();
          }
          if (!committed && e.metaCreated && e.backupId) {
            await io.objRemove(metaObjectName(e.backupId)).catch(() => {});
          }
        }
      } finally {
        await io.close();
      }
      await deps.journal.remove(e.transferId);
    } catch (err) {
      deps.log.error("recovery of an interrupted transfer failed; will retry at next start", {
        transfer: e.transferId,
        image: where,
        error: err,
      });
    }
  }
  for (const d of done) deps.log.info(d);
  return done;
}
