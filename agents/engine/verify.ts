/**
 * A VERIFY job's lease operation: does a stored backup still hold what was written?
 *
 *  - METADATA: on the backup's cluster, the snapshot, backup.<id>.meta and backup.<id>.digests exist,
 *    the map hashes to the catalog's image_digest, decodes, and describes an image of the snapshot's size.
 *  - SAMPLE: METADATA, then a random sample_percent of the map's blocks re-read at the snapshot.
 *  - FULL: METADATA, then every block at the snapshot (blocks the map leaves out must read as zeros).
 *  - SOURCE: on the source's cluster, the volume's snapshot of the backup against the map the
 *    coordinator passed (it must hash to image_digest).
 *
 * A mismatch is a result (ok = false, the first bad block's offset and length, why), never an error:
 * errors are for what stops the check itself (bad request, cluster unreachable, cancelled) — and for a
 * backup that has no map to check against (FAILED_PRECONDITION).
 */
import { failedPrecondition, invalidArgument } from "../../src/common/errors";
import { isUuid, metaObjectName } from "../../src/common/ids";
import { VerifyMode, type VerifyRequest, type VerifyResult } from "../../src/gen/rbdbackup/v1/agent";
import type { Image, IoCtx } from "../ceph";
import { isCephError } from "../ceph";
import { type DigestMap, DigestMapError, decodeDigestMap, digestsObjectName, mapDigest } from "../transfer/digests";
import { checksum, validName } from "../transfer/protocol";
import { newStats } from "../transfer/source";
import type { EngineContext } from "./context";
import { locateBackup } from "./locate";
import type { Progress } from "./progress";
import { allBlocks, blockRange, checkBlocks, sampleBlocks } from "./verify-blocks";

/** Reads in flight while re-reading blocks. */
const READS_IN_FLIGHT = 8;

/** A mismatch found before any block was read: the reason, and the result says not ok. */
class NotOk extends Error {}

function validate(req: VerifyRequest): void {
  if (!isUuid(req.backupId)) throw invalidArgument("backup_id must be a lowercase UUID");
  if (!(req.mode in VerifyMode) || req.mode === VerifyMode.VERIFY_MODE_UNSPECIFIED || req.mode < 0)
    throw invalidArgument("mode must be METADATA, SAMPLE, FULL or SOURCE");
  if (req.mode === VerifyMode.VERIFY_MODE_SAMPLE && (req.samplePercent < 1 || req.samplePercent > 100))
    throw invalidArgument("sample_percent must be 1..100");
  if (req.imageDigest && !/^[0-9a-f]{64}$/.test(req.imageDigest))
    throw invalidArgument("image_digest must be a lowercase hex SHA-256");
  if (req.mode === VerifyMode.VERIFY_MODE_SOURCE) {
    const s = req.source;
    if (!s) throw invalidArgument("source is required for SOURCE");
    validName(s.pool, "source.pool");
    validName(s.namespace, "source.namespace", { allowEmpty: true });
    validName(s.image, "source.image");
    validName(req.snapshot, "snapshot");
    if (req.digestMap.length === 0) throw invalidArgument("digest_map is required for SOURCE");
  } else {
    validName(req.backupPool, "backup_pool");
    validName(req.backupNamespace, "backup_namespace", { allowEmpty: true });
    validName(req.baseImage, "base_image", { allowEmpty: true });
    validName(req.snapshot, "snapshot", { allowEmpty: true });
  }
}

/** The map's bytes against the catalog's digest, decoded. */
function checkedMap(bytes: Uint8Array, req: VerifyRequest, warnings: string[]): DigestMap {
  if (req.imageDigest) {
    const d = mapDigest(bytes);
    if (d !== req.imageDigest)
      throw new NotOk(`${digestsObjectName(req.backupId)} hashes to ${d}, the catalog has ${req.imageDigest}`);
  } else {
    warnings.push("the catalog has no image_digest for this backup: the digest map itself was not checked");
  }
  try {
    return decodeDigestMap(bytes);
  } catch (e) {
    if (e instanceof DigestMapError) throw new NotOk(`${digestsObjectName(req.backupId)} is malformed: ${e.message}`);
    throw e;
  }
}

/**
 * METADATA on the backup's cluster: the open snapshot and the checked map (NotOk otherwise). A backup
 * without a digest map (made before digest maps, or its parent had none; the catalog has no digest
 * either) has `map` null in METADATA mode — its snapshot and metadata object are what there is to
 * check, with a warning saying so; the modes that read blocks need the map (FAILED_PRECONDITION).
 */
async function checkMetadata(
  io: IoCtx,
  req: VerifyRequest,
  warnings: string[],
): Promise<{ image: Image; map: DigestMap | null; snapshot: string }> {
  const id = req.backupId;
  let loc: Awaited<ReturnType<typeof locateBackup>>;
  try {
    loc = await locateBackup(io, id, req.baseImage || undefined);
  } catch (e) {
    if ((e as { status?: number }).status === 5 /* NOT_FOUND */) throw new NotOk((e as Error).message);
    throw e;
  }
  if (req.snapshot && loc.snapshot !== req.snapshot)
    warnings.push(`the backup's snapshot is ${loc.snapshot}, the request named ${req.snapshot}`);
  const read = async (oid: string) =>
    io.objRead(oid).catch((e) => {
      if (isCephError(e, "ENOENT")) return null;
      throw e;
    });
  if ((await read(metaObjectName(id))) === null) throw new NotOk(`${metaObjectName(id)} is missing`);
  const bytes = await read(digestsObjectName(id));
  if (bytes === null) {
    if (req.imageDigest) throw new NotOk(`${digestsObjectName(id)} is missing`);
    const why = `backup ${id} has no digest map (made before digest maps, or its parent had none)`;
    if (req.mode !== VerifyMode.VERIFY_MODE_METADATA) throw failedPrecondition(`${why}: only a restore can check it`);
    warnings.push(`${why}: its snapshot and metadata object were checked, not its data`);
    const image = await io.imageOpen(loc.baseImage, { snapshot: loc.snapshot });
    return { image, map: null, snapshot: loc.snapshot };
  }
  const map = checkedMap(bytes, req, warnings);
  if (map.imageSize !== loc.size)
    throw new NotOk(`the digest map describes ${map.imageSize} bytes, the snapshot ${loc.snapshot} has ${loc.size}`);
  const image = await io.imageOpen(loc.baseImage, { snapshot: loc.snapshot });
  return { image, map, snapshot: loc.snapshot };
}

/** SOURCE: the source volume at the backup's snapshot, and the map passed in. */
async function openSource(
  ctx: EngineContext,
  req: VerifyRequest,
  warnings: string[],
): Promise<{ io: IoCtx; image: Image; map: DigestMap }> {
  const s = req.source as NonNullable<VerifyRequest["source"]>;
  const map = checkedMap(req.digestMap, req, warnings);
  const io = await ctx.cluster.openIoCtx(s.pool, { namespace: s.namespace });
  try {
    const image = await io.imageOpen(s.image, { snapshot: req.snapshot }).catch((e) => {
      if (isCephError(e, "ENOENT"))
        throw failedPrecondition(`the source ${s.pool}/${s.image} no longer has the snapshot ${req.snapshot}`);
      throw e;
    });
    let size: number;
    try {
      size = (await image.stat()).size;
    } catch (e) {
      await image.close().catch(() => {});
      throw e;
    }
    if (size !== map.imageSize) {
      await image.close();
      throw new NotOk(`the source snapshot has ${size} bytes, the digest map describes ${map.imageSize}`);
    }
    return { io, image, map };
  } catch (e) {
    await io.close().catch(() => {});
    throw e;
  }
}

export async function verifyBackup(
  ctx: EngineContext,
  req: VerifyRequest,
  signal: AbortSignal,
  progress: Progress,
): Promise<VerifyResult> {
  validate(req);
  const started = Date.now();
  const log = ctx.log.child({ op: "verify", backup: req.backupId, job: req.jobId || undefined });
  const result: VerifyResult = {
    backupId: req.backupId,
    mode: req.mode,
    ok: true,
    blocksChecked: 0,
    bytesRead: 0,
    badBlocks: 0,
    firstBadOffset: 0,
    firstBadLength: 0,
    reason: "",
    seconds: 0,
    warnings: [],
  };
  const source = req.mode === VerifyMode.VERIFY_MODE_SOURCE;
  let io: IoCtx | null = null;
  let image: Image | null = null;
  try {
    progress.phase = "metadata";
    let map: DigestMap | null;
    if (source) {
      ({ io, image, map } = await openSource(ctx, req, result.warnings));
    } else {
      io = await ctx.cluster.openIoCtx(req.backupPool, { namespace: req.backupNamespace });
      ({ image, map } = await checkMetadata(io, req, result.warnings));
    }
    if (req.mode !== VerifyMode.VERIFY_MODE_METADATA && map) {
      const blocks = req.mode === VerifyMode.VERIFY_MODE_SAMPLE ? sampleBlocks(map, req.samplePercent) : allBlocks(map);
      const stats = newStats();
      progress.phase = "verify";
      progress.bytesTotal = map.imageSize;
      progress.stats = stats;
      const img = image;
      const c = await checkBlocks(map, blocks, (buf, off) => img.read(buf, off), {
        crc32c: checksum,
        what: source ? "the source volume" : "the backup's snapshot",
        inFlight: READS_IN_FLIGHT,
        signal,
        onRead: (n) => {
          stats.position += n;
          stats.bytesRead += n;
        },
      });
      result.blocksChecked = c.blocksChecked;
      result.bytesRead = c.bytesRead;
      result.badBlocks = c.badBlocks;
      if (c.firstBad >= 0) {
        const r = blockRange(map, c.firstBad);
        result.ok = false;
        result.firstBadOffset = r.offset;
        result.firstBadLength = r.length;
        result.reason = `${c.badBlocks} bad block(s); the first, block ${c.firstBad} at ${r.offset}+${r.length}: ${c.firstBadReason}`;
      }
    }
  } catch (e) {
    if (!(e instanceof NotOk)) throw e;
    result.ok = false;
    result.reason = e.message;
  } finally {
    await image?.close().catch(() => {});
    await io?.close().catch(() => {});
  }
  result.seconds = (Date.now() - started) / 1000;
  if (result.ok) log.info("backup verified", { mode: VerifyMode[req.mode], bytesRead: result.bytesRead });
  else log.warn("backup verification failed", { mode: VerifyMode[req.mode], reason: result.reason });
  return result;
}
