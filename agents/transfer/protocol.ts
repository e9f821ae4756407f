/**
 * The transfer protocol's rules, shared by source and destination: limits, checksums, the digest
 * over the record sequence, zero detection, and the header's validation (every field comes from the
 * network).
 */
import { createHash } from "node:crypto";
import { invalidArgument } from "../../src/common/errors";
import { isUuid, parseBackupSnap } from "../../src/common/ids";
import { type TransferHeader, TransferKind } from "../../src/gen/rbdbackup/v1/transfer";
import { crc32c, crc32cPieces } from "../ceph/crc32c";
import { MAX_MAPPED_IMAGE_BYTES } from "./digests";
import { crc32cCombine, crc32cShiftOp } from "./digests/crc-combine";

export { crc32cCombine, crc32cShiftOp };

export const KiB = 1024;
export const MiB = 1024 * KiB;
/** Largest data chunk a source may send; messages stay under MAX_MESSAGE_BYTES. */
export const MAX_CHUNK_BYTES = 4 * MiB;
/** gRPC send/receive limit set on both sides (chunk + framing). */
export const MAX_MESSAGE_BYTES = MAX_CHUNK_BYTES + 64 * KiB;
/**
 * 2 MiB. Measured on the lab (README, Measured): agent to agent, 4 MiB moved 1 GiB ~7% faster than
 * 2 MiB (transfer-probe); through the coordinator (bench suite, same day) 4 MiB gave 192 MiB/s and
 * 290 MiB peak RSS against 292 MiB/s and 228 MiB for 2 MiB — the suite decides. 1 MiB was ~10% slower.
 */
export const DEFAULT_CHUNK_BYTES = 2 * MiB;
/** Zero detection granularity, and the shortest zero run worth a ZeroRange of its own. */
export const ZERO_BLOCK = 4 * KiB;
export const MIN_ZERO_RUN = 64 * KiB;
/** librbd/Cinder-compatible limit for one discard (the Python API's 32-bit length). */
export const MAX_DISCARD_BYTES = 2 * 1024 * MiB - 4 * KiB;
export const MAX_NAME_BYTES = 4096;
/** A data-plane server closes an HTTP/2 session with no stream for this long (GOAWAY): the source connects again when it needs to. */
export const IDLE_SESSION_MS = 5 * 60_000;
/**
 * A source closes its own HTTP/2 session to a peer after this long without a transfer: a minute before
 * the peer's IDLE_SESSION_MS, so a new transfer does not race the peer's GOAWAY (a stream the peer
 * refuses is an attempt lost, UNAVAILABLE).
 */
export const CLIENT_IDLE_SESSION_MS = IDLE_SESSION_MS - 60_000;

/** A chunk's checksum: CRC-32C (hardware-accelerated in the addon; zlib's CRC-32 cost ~0.45 s of a
 * main thread per GiB on each side). */
export function checksum(data: Uint8Array): number {
  return crc32c(data) >>> 0;
}

/**
 * A chunk's checksum, computed once over its bytes together with the CRC-32C of each digest-map block
 * it meets (digests/builder.ts): the chunk at `offset` is cut at absolute multiples of `blockSize`,
 * piece k's CRC goes to out[k], and the chunk's CRC is combined from the pieces'. Without `crc` the
 * addon does it in one call; with one (a test without the addon) the pieces are summed here.
 */
export function checksumPieces(
  data: Uint8Array,
  offset: number,
  blockSize: number,
  out: Uint32Array,
  crc?: (d: Uint8Array) => number,
): number {
  const first = blockSize - (offset % blockSize);
  if (!crc) return crc32cPieces(data, first, blockSize, out) >>> 0;
  const len = data.length;
  if (len === 0) return 0;
  let n = Math.min(first, len);
  let whole = crc(data.subarray(0, n)) >>> 0;
  out[0] = whole;
  let k = 1;
  let blockOp = -1;
  for (let pos = n; pos < len; pos += n, k++) {
    n = Math.min(blockSize, len - pos);
    const c = crc(data.subarray(pos, pos + n)) >>> 0;
    out[k] = c;
    if (n === blockSize && blockOp === -1) blockOp = crc32cShiftOp(blockSize);
    whole = crc32cCombine(whole, c, n === blockSize ? blockOp : crc32cShiftOp(n));
  }
  return whole;
}

/**
 * SHA-256 over the record sequence, computed identically on both sides. A resumed transfer's digest
 * starts from the earlier attempts' (transfer.proto ResumePointResponse.prefix_digest):
 * SHA-256("r" || prefix_digest || the records it sends).
 */
export class TransferDigest {
  #h = createHash("sha256");
  #rec = Buffer.alloc(17);

  constructor(prefixDigest?: Uint8Array) {
    if (prefixDigest && prefixDigest.length > 0) {
      this.#h.update("r");
      this.#h.update(prefixDigest);
    }
  }

  /** The digest of the records so far, without ending the running one (a checkpoint's prefix digest). */
  snapshot(): Buffer {
    return this.#h.copy().digest();
  }

  chunk(offset: number, length: number, crc: number): void {
    this.#rec[0] = 0x63; // "c"
    this.#rec.writeBigUInt64LE(BigInt(offset), 1);
    this.#rec.writeUInt32LE(length, 9);
    this.#rec.writeUInt32LE(crc >>> 0, 13);
    this.#h.update(this.#rec);
  }

  zero(offset: number, length: number): void {
    this.#rec[0] = 0x7a; // "z"
    this.#rec.writeBigUInt64LE(BigInt(offset), 1);
    this.#rec.writeBigUInt64LE(BigInt(length), 9);
    this.#h.update(this.#rec);
  }

  digest(): Buffer {
    return this.#h.digest();
  }
}

const zeros = Buffer.alloc(MAX_CHUNK_BYTES);

export function isAllZero(b: Uint8Array): boolean {
  for (let off = 0; off < b.length; off += zeros.length) {
    const n = Math.min(zeros.length, b.length - off);
    if (Buffer.compare(b.subarray(off, off + n), zeros.subarray(0, n)) !== 0) return false;
  }
  return true;
}

export interface Segment {
  offset: number;
  length: number;
  zero: boolean;
}

/** Whether buf[start, end) is all zeros: compared against the zero buffer, no views allocated. */
function zeroAt(buf: Buffer, start: number, end: number): boolean {
  for (let s = start; s < end; s += zeros.length) {
    const n = Math.min(zeros.length, end - s);
    if (zeros.compare(buf, s, s + n, 0, n) !== 0) return false;
  }
  return true;
}

/** provablyData looks at one block per PROBE_STRIDE bytes. */
const PROBE_STRIDE = Math.max(1, Math.floor(MIN_ZERO_RUN / ZERO_BLOCK)) * ZERO_BLOCK;

/**
 * Whether `segments` would answer "all of it is data", decided from one block per MIN_ZERO_RUN instead of
 * every block: a zero segment is a run of at least MIN_ZERO_RUN bytes of whole ZERO_BLOCKs aligned to the
 * buffer's start, so it holds a whole block starting at a multiple of PROBE_STRIDE (any PROBE_STRIDE /
 * ZERO_BLOCK consecutive block numbers include a multiple of it). When each of those blocks holds data,
 * there is no zero segment. A read of written data then costs a few byte loads per 64 KiB instead of a
 * native compare per 4 KiB block (~6 % of the source's JS thread before). False: look at every block.
 */
export function provablyData(buf: Buffer): boolean {
  if (buf.length < ZERO_BLOCK) return false; // a short buffer of zeros is a zero segment
  for (let at = 0; at + ZERO_BLOCK <= buf.length; at += PROBE_STRIDE) {
    // Three bytes first (no call into the runtime); a block they do not decide is compared whole.
    if (buf[at] !== 0 || buf[at + ZERO_BLOCK - 1] !== 0 || buf[at + ZERO_BLOCK / 2] !== 0) continue;
    if (isAllZero(buf.subarray(at, at + ZERO_BLOCK))) return false;
  }
  return true;
}

/**
 * Cuts a buffer read at `offset` into data and zero segments: runs of whole zero blocks (aligned to the
 * buffer's start) at least MIN_ZERO_RUN long become zero segments (or the whole buffer, when it is all
 * zeros); everything else stays data, so short zero runs do not fragment the stream. Offsets are
 * absolute. A zero run is extended by doubling spans (then halving at its end) instead of block by
 * block, and nothing is allocated per block: a sparse image's objects read as megabytes of zeros around
 * a little data, and block by block that cost the source ~0.3–2 CPU-s per GiB read (test/unit/source
 * checks the cuts against the block-by-block definition).
 */
export function segments(buf: Buffer, offset: number): Segment[] {
  const len = buf.length;
  if (provablyData(buf)) return [{ offset, length: len, zero: false }];
  if (zeroAt(buf, 0, len)) return [{ offset, length: len, zero: true }];
  const B = ZERO_BLOCK;
  const out: Segment[] = [];
  let dataStart = 0;
  let pos = 0;
  while (pos + B <= len) {
    if (!zeroAt(buf, pos, pos + B)) {
      pos += B;
      continue;
    }
    let end = pos + B;
    let step = B;
    while (end + B <= len) {
      const n = Math.min(step, Math.floor((len - end) / B) * B);
      if (zeroAt(buf, end, end + n)) {
        end += n;
        step = n * 2;
      } else if (n === B) break;
      else step = Math.max(B, Math.floor(n / 2 / B) * B);
    }
    if (end - pos >= MIN_ZERO_RUN) {
      if (pos > dataStart) out.push({ offset: offset + dataStart, length: pos - dataStart, zero: false });
      out.push({ offset: offset + pos, length: end - pos, zero: true });
      dataStart = end;
    }
    pos = end;
  }
  if (dataStart < len) out.push({ offset: offset + dataStart, length: len - dataStart, zero: false });
  return out;
}

/** Whether a transfer of this kind makes a backup (FULL or INCREMENTAL), not a restore. */
export const isBackupKind = (kind: TransferKind): boolean =>
  kind === TransferKind.BACKUP_FULL || kind === TransferKind.BACKUP_INCREMENTAL;

/** Whether a transfer of this kind restores a volume (over the original or into a new one). */
export const isRestoreKind = (kind: TransferKind): boolean =>
  kind === TransferKind.RESTORE_ORIGINAL || kind === TransferKind.RESTORE_NEW;

/** Whether a transfer of this kind writes an existing volume in place, which no cleanup restores. */
export const writesInPlace = (kind: TransferKind): boolean =>
  kind === TransferKind.RESTORE_ORIGINAL || kind === TransferKind.FAILBACK;

export function validName(value: string, what: string, { allowEmpty = false } = {}): string {
  if (typeof value !== "string") throw invalidArgument(`${what} must be a string`);
  if (value === "" && !allowEmpty) throw invalidArgument(`${what} must not be empty`);
  if (value.includes("\0") || value.includes("/") || value.includes("@")) {
    throw invalidArgument(`${what} "${value}" must not contain "/", "@" or NUL`);
  }
  if (Buffer.byteLength(value) > MAX_NAME_BYTES)
    throw invalidArgument(`${what} is longer than ${MAX_NAME_BYTES} bytes`);
  return value;
}

/**
 * The start of a FAILBACK destination's refusal (FAILED_PRECONDITION, nothing written) when the original
 * volume is gone or lacks the from-snapshot: the source then sends a full copy instead. The source
 * recognises the refusal by its typed reason (RefusalReason.NO_COMMON_SNAPSHOT), not by this text.
 */
export const NO_COMMON_SNAPSHOT = "no common snapshot for an incremental failback";

/**
 * Typed reasons a destination's refusal may carry beside its status, for a source that acts on them
 * (the REASON_HEADER of the response over the data plane; a property of the error in-process).
 */
export const RefusalReason = {
  /** FAILBACK: the original volume is gone or lacks the from-snapshot; a full copy will do instead. */
  NO_COMMON_SNAPSHOT: "NO_COMMON_SNAPSHOT",
} as const;
export type RefusalReason = (typeof RefusalReason)[keyof typeof RefusalReason];

/** The response header (trailers-only, beside grpc-status) that carries a refusal's typed reason. */
export const REASON_HEADER = "rbdbackup-refusal-reason";

/** `e`, marked with a typed refusal reason (kept through wrapping: reasonOf looks at the causes). */
export function withReason<E extends Error>(e: E, reason: RefusalReason): E {
  return Object.assign(e, { refusalReason: reason });
}

/** The typed refusal reason of `e` or of one of its causes; "" when none. */
export function reasonOf(e: unknown): string {
  let x: unknown = e;
  for (let depth = 0; x && depth < 8; depth++) {
    const r = (x as { refusalReason?: unknown }).refusalReason;
    if (typeof r === "string") return r;
    x = (x as { cause?: unknown }).cause;
  }
  return "";
}

/** Everything in a header, checked before the destination touches its cluster. */
/**
 * A backup's metadata object (written as the stream carries it, read by the coordinator's confirmation
 * and by a catalog rebuild) must name what the stream writes: this backup, its base image, its snapshot.
 * Else a stream allowed to write backup X could leave a metadata object describing another chain.
 */
function checkMetadataNames(h: TransferHeader): void {
  let m: { backup_id?: unknown; chain?: { base_image?: unknown; snapshot?: unknown } };
  try {
    m = JSON.parse(Buffer.from(h.metadataJson).toString("utf8"));
  } catch {
    throw invalidArgument("header.metadata_json is not valid JSON");
  }
  const want = { backup_id: h.backupId, base_image: h.destination?.image, snapshot: h.toSnapshot };
  const got = { backup_id: m?.backup_id, base_image: m?.chain?.base_image, snapshot: m?.chain?.snapshot };
  for (const k of ["backup_id", "base_image", "snapshot"] as const) {
    if (got[k] !== want[k]) {
      throw invalidArgument(`header.metadata_json names ${k} ${JSON.stringify(got[k])}, the stream writes ${want[k]}`);
    }
  }
}

export function validateHeader(h: TransferHeader | undefined): TransferHeader {
  if (!h) throw invalidArgument("the transfer must start with a header");
  if (!isUuid(h.transferId)) throw invalidArgument("header.transfer_id must be a lowercase UUID");
  // It names a failback's safety snapshot and goes into logs: a job id's characters, or none.
  if (!/^[A-Za-z0-9._:-]{0,128}$/.test(h.jobId)) {
    throw invalidArgument("header.job_id must be empty or up to 128 of A-Z a-z 0-9 . _ : -");
  }
  if (![1, 2, 3, 4, 5].includes(h.kind)) throw invalidArgument(`header.kind ${h.kind} is not a known transfer kind`);
  if (!h.destination) throw invalidArgument("header.destination is required");
  validName(h.destination.pool, "header.destination.pool");
  validName(h.destination.namespace, "header.destination.namespace", { allowEmpty: true });
  validName(h.destination.image, "header.destination.image");
  if (!Number.isSafeInteger(h.imageSize) || h.imageSize <= 0) {
    throw invalidArgument("header.image_size must be a positive integer below 2^53");
  }
  if (isBackupKind(h.kind)) {
    if (!isUuid(h.backupId)) throw invalidArgument("header.backup_id must be a lowercase UUID for a backup");
    validName(h.toSnapshot, "header.to_snapshot");
    // The snapshot names its backup (what the capability allows is a backup id, not a snapshot name):
    // else a stream allowed to write backup X could plant a snapshot of backup Y in the chain, which
    // finding and deleting Y would then take for its own.
    if (parseBackupSnap(h.toSnapshot)?.backupId !== h.backupId) {
      throw invalidArgument(
        `header.to_snapshot "${h.toSnapshot}" is not a snapshot of backup ${h.backupId} (backup.<backup_id>.snap.<time>)`,
      );
    }
    // Required: the commit creates backup.<id>.meta exclusively, which is what refuses a second commit
    // of the same backup id (a stream without one planted a snapshot of backup X in another chain).
    if (h.metadataJson.length === 0) {
      throw invalidArgument("header.metadata_json is required for a backup (its metadata object names the backup)");
    }
    checkMetadataNames(h);
    if (h.imageSize > MAX_MAPPED_IMAGE_BYTES) {
      throw invalidArgument(
        `header.image_size ${h.imageSize}: a backup's digest map describes images up to ${MAX_MAPPED_IMAGE_BYTES} bytes (512 TiB)`,
      );
    }
  } else if (h.toSnapshot !== "") {
    throw invalidArgument("header.to_snapshot must be empty for a restore");
  }
  if (h.kind === TransferKind.BACKUP_INCREMENTAL) validName(h.fromSnapshot, "header.from_snapshot");
  else if (h.kind === TransferKind.FAILBACK) {
    if (!isUuid(h.backupId)) throw invalidArgument("header.backup_id must be a lowercase UUID for a failback");
    validName(h.fromSnapshot, "header.from_snapshot", { allowEmpty: true });
  } else if (h.fromSnapshot !== "") {
    throw invalidArgument("header.from_snapshot is only for incremental backups and failbacks");
  }
  if (h.order !== 0 && (h.order < 12 || h.order > 26)) throw invalidArgument("header.order must be 0 or 12..26");
  if (!Number.isInteger(h.chunkSize) || h.chunkSize <= 0 || h.chunkSize > MAX_CHUNK_BYTES) {
    throw invalidArgument(`header.chunk_size must be between 1 and ${MAX_CHUNK_BYTES}`);
  }
  for (const [k, v] of Object.entries(h.imageMeta)) {
    // Keys are not names: tools put "/" in them (Ceph-CSI's "rbd.csi.ceph.com/thick-provisioned").
    if (k === "" || k.includes("\0")) throw invalidArgument("header.image_meta keys must be non-empty, without NUL");
    if (Buffer.byteLength(k) > MAX_NAME_BYTES) {
      throw invalidArgument(`header.image_meta key is longer than ${MAX_NAME_BYTES} bytes`);
    }
    if (v.includes("\0")) throw invalidArgument(`header.image_meta.${k} must not contain NUL`);
  }
  if (h.metadataJson.length > 1 * MiB) throw invalidArgument("header.metadata_json is larger than 1 MiB");
  return h;
}

/**
 * The Transfer call's ask to hear from a busy destination (as BulkOpen.busy_interval_ms: ms between
 * beats; absent: none). The destination answers with HTTP/2 PING frames carrying BUSY_PING_TAG and the
 * stream's id (busyPing): a PING is the connection's, so its payload says which transfer is busy.
 */
export const BUSY_HEADER = "rbdbackup-busy-interval-ms";
const BUSY_PING_TAG = Buffer.from("rbdB");

/** The 8 bytes of the PING saying stream `id` is busy. */
export function busyPing(id: number): Buffer {
  const b = Buffer.alloc(8);
  BUSY_PING_TAG.copy(b, 0);
  b.writeUInt32BE(id >>> 0, 4);
  return b;
}

/** The stream a busy PING names, or null when the payload is not one (a keepalive's). */
export function busyPingStream(payload: Buffer | undefined): number | null {
  if (payload?.length !== 8 || !payload.subarray(0, 4).equals(BUSY_PING_TAG)) return null;
  return payload.readUInt32BE(4);
}
