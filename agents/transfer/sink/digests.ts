/**
 * The backup's digest map, as the sink builds and commits it (format: ../digests/README.md). A full
 * backup starts from nothing with the block size of its image size; an incremental from its parent's
 * map (one object read; the parent is the backup of the from-snapshot) and keeps its block size — unless
 * the image grew past 2^18 of them: then coarser blocks (DigestMapBuilder.overlay), so that no header's
 * image size makes the map as large as it likes. Every
 * record checked is fed to the builder before it is written (hot path: no I/O, and the CRCs of whole
 * blocks come from the chunk check's single pass over the bytes: StreamChecks.blockSize);
 * after the flush, blocks written only in part over older data are read back from the head; at
 * commit, `backup.<id>.digests` is written before `backup.<id>.meta`.
 *
 * No map (a warning, `image_digest` left empty) when the parent has none or an unreadable one: the
 * chain gets maps again at its next full backup. Restores and failbacks build none.
 */
import { parseBackupSnap } from "../../../src/common/ids";
import type { Logger } from "../../../src/common/log";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { isCephError } from "../../ceph";
import {
  blockSizeFor,
  DigestMapBuilder,
  DigestMapError,
  decodeDigestMap,
  digestsObjectName,
  encodeDigestMap,
  mapDigest,
} from "../digests";
import { checksum } from "../protocol";
import type { Footprint } from "./footprint";
import type { SinkImage, SinkIoCtx } from "./ports";
import type { Checked } from "./stream-checks";

/** Reads in flight while reading blocks back. */
const READ_BACK_IN_FLIGHT = 4;

export interface SinkDigests {
  /** Fed as records arrive; h3's resume marks the prefix it did not receive with `readBackRange`. */
  builder: DigestMapBuilder;
  /** Set by `finishDigests`: the object to write and its SHA-256 hex. */
  encoded?: Buffer;
  digest?: string;
  /** Blocks read back from the image. */
  readBack?: number;
}

/** After prepare: the builder of a backup's map (on fp.digests), or none with a warning. */
export async function startDigests(
  fp: Footprint,
  crc: ((d: Uint8Array) => number) | undefined,
  log: Logger,
): Promise<void> {
  const h = fp.h;
  const crc32c = crc ?? checksum;
  if (h.kind === TransferKind.BACKUP_FULL) {
    fp.digests = { builder: DigestMapBuilder.fresh(blockSizeFor(h.imageSize), h.imageSize, crc32c) };
    return;
  }
  if (h.kind !== TransferKind.BACKUP_INCREMENTAL) return;
  const parentId = parseBackupSnap(h.fromSnapshot)?.backupId;
  const noMap = (why: string) => {
    fp.warnings.push(`no digest map for this backup: ${why} (the next full backup starts one)`);
    log.warn("no digest map", { why });
  };
  if (!parentId) return noMap(`the parent snapshot ${h.fromSnapshot} is not a backup snapshot`);
  const oid = digestsObjectName(parentId);
  let parent: Buffer;
  try {
    parent = await (fp.io as SinkIoCtx).objRead(oid);
  } catch (e) {
    if (isCephError(e, "ENOENT")) return noMap(`the parent backup has no ${oid}`);
    throw e;
  }
  try {
    fp.digests = { builder: DigestMapBuilder.overlay(decodeDigestMap(parent), h.imageSize, crc32c) };
  } catch (e) {
    if (e instanceof DigestMapError) return noMap(`the parent's ${oid} is malformed: ${e.message}`);
    throw e;
  }
}

/** The hot path: a checked record, before it is written (the chunk's buffer is still ours). */
export function digestRecord(fp: Footprint, m: Checked): void {
  const b = fp.digests?.builder;
  if (!b) return;
  if (m.$case === "chunk") b.data(m.offset, m.data, m.pieces);
  else if (m.$case === "zero") b.zero(m.offset, m.length);
}

/** After the flush: the blocks only the image knows are read back, and the map encoded. */
export async function finishDigests(fp: Footprint, signal: AbortSignal): Promise<void> {
  const d = fp.digests;
  if (!d) return;
  const image = fp.image as SinkImage;
  d.readBack = await d.builder.readBack((buf, off) => image.read(buf, off), {
    inFlight: READ_BACK_IN_FLIGHT,
    signal,
  });
  d.encoded = encodeDigestMap(d.builder.finish());
  d.digest = mapDigest(d.encoded);
}

/**
 * At commit, beside the metadata object: creates backup.<id>.digests exclusively — a map already there may
 * be another backup's (a reused id), never to be overwritten or removed by this transfer: `digestsCreated`
 * only once this create made it. With `overwrite` (the backup id is known to be this transfer's: its
 * metadata object was created exclusively), writes over one an earlier attempt of this backup left.
 */
export async function writeDigests(fp: Footprint, { overwrite = false } = {}): Promise<void> {
  const d = fp.digests;
  if (!d?.encoded) return;
  const io = fp.io as SinkIoCtx;
  const name = digestsObjectName(fp.h.backupId);
  if (overwrite) {
    fp.digestsCreated = true; // before the write: a write that fails half-way is removed too
    await io.objWriteFull(name, d.encoded);
    return;
  }
  await io.objCreateExclusive(name, d.encoded);
  fp.digestsCreated = true;
}

/** The summary's fields. */
export function digestFields(fp: Footprint): { imageDigest: string; digestBlockSize: number } {
  const d = fp.digests;
  return d?.digest
    ? { imageDigest: d.digest, digestBlockSize: d.builder.blockSize }
    : { imageDigest: "", digestBlockSize: 0 };
}
