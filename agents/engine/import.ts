/**
 * An IMPORT lease: an `rbd export-diff` stream (v1 or v2) becomes a backup on this cluster. The
 * stream is parsed as it arrives (agents/transfer/rbd-diff: bounded memory, every record validated)
 * and turned into a transfer's messages for this agent's own sink — the same code that writes, commits
 * (flush, backup.<id>.meta, then the snapshot) and cleans up any backup. A stream without a
 * from-snapshot makes a new base image (BACKUP_FULL); one with an 'f' record is applied onto the
 * parent's base image at `from_snapshot` (BACKUP_INCREMENTAL) — only when the 'f' record names the state
 * the parent holds (its snapshot, or the to-snapshot of the stream it was imported from, kept in its
 * backup.<id>.meta `import`): a diff applied onto anything else would be a backup of no volume. A truncated or malformed stream fails
 * with INVALID_ARGUMENT naming the byte offset, and the sink leaves nothing: no image it created, no
 * snapshot, no metadata object.
 */
import { failedPrecondition, invalidArgument } from "../../src/common/errors";
import { isUuid, parseBackupSnap } from "../../src/common/ids";
import type { BackupResult, ImportRequest } from "../../src/gen/rbdbackup/v1/agent";
import { type TransferHeader, TransferKind } from "../../src/gen/rbdbackup/v1/transfer";
import { checksum as crc32c, MAX_CHUNK_BYTES, validName } from "../transfer/protocol";
import type { DiffVersion } from "../transfer/rbd-diff/format";
import { parseRbdDiff, streamError } from "../transfer/rbd-diff/parser";
import { type DiffMeta, diffToTransfer } from "../transfer/rbd-diff/to-transfer";
import { newStats } from "../transfer/source";
import type { EngineContext } from "./context";
import { type BackupMetadataV1, encodeMetadata } from "./metadata";
import { newProgress, type Progress } from "./progress";
import { readMetadata } from "./restore";

/** A name from the stream, quoted for a message: JSON escapes control characters (a terminal reads the message). */
const quoted = (name: string | null | undefined): string => JSON.stringify(name ?? "");
/** Features of a base image an import creates when the metadata names none: layering, exclusive-lock, object-map, fast-diff, deep-flatten. */
const DEFAULT_BASE_FEATURES = 1 | 4 | 8 | 16 | 32;
/** Features a base image may carry (as backup-header.ts), striping excluded (a stream carries no layout). */
const BASE_FEATURE_MASK = 1n | 4n | 8n | 16n | 32n;

export function validateImportRequest(req: ImportRequest): BackupMetadataV1 {
  if (!isUuid(req.backupId)) throw invalidArgument("backup_id must be a lowercase UUID");
  validName(req.pool, "pool");
  validName(req.namespace, "namespace", { allowEmpty: true });
  validName(req.baseImage, "base_image");
  validName(req.fromSnapshot, "from_snapshot", { allowEmpty: true });
  validName(req.toSnapshot, "to_snapshot");
  if (parseBackupSnap(req.toSnapshot)?.backupId !== req.backupId) {
    throw invalidArgument(`to_snapshot ${req.toSnapshot} is not a snapshot name of backup ${req.backupId}`);
  }
  if (req.fromSnapshot && !parseBackupSnap(req.fromSnapshot)) {
    throw invalidArgument(`from_snapshot ${req.fromSnapshot} is not a backup snapshot name (backup.<id>.snap.<time>)`);
  }
  if (req.format !== 0 && req.format !== 1 && req.format !== 2) {
    throw invalidArgument(`format ${req.format} is neither 1 (rbd diff v1) nor 2 (rbd diff v2); 0 detects it`);
  }
  let meta: BackupMetadataV1;
  try {
    meta = JSON.parse(Buffer.from(req.metadataJson).toString("utf8"));
  } catch {
    throw invalidArgument("metadata_json is not valid JSON");
  }
  if (meta?.version !== 1 || typeof meta.image !== "object" || meta.image === null) {
    throw invalidArgument("metadata_json must be a version 1 backup.<id>.meta with an image section");
  }
  return meta;
}

/** Where the stream's bytes come from (the coordinator's ImportData stream, or a file in tests). */
export type ImportSource = AsyncIterable<Uint8Array>;

export interface ImportOptions {
  /** The caller's expected format (0/undefined: from the banner). */
  version?: DiffVersion;
  /** The chunk checksum (default: the addon's CRC-32C; unit tests pass a JS one). */
  checksum?: (data: Uint8Array) => number;
}

export async function importBackup(
  ctx: EngineContext,
  req: ImportRequest,
  source: ImportSource,
  signal: AbortSignal,
  progress: Progress = newProgress(),
  opts: ImportOptions = {},
): Promise<BackupResult> {
  const meta = validateImportRequest(req);
  const started = Date.now();
  const log = ctx.log.child({ op: "import", backup: req.backupId, job: req.jobId || undefined });
  const stats = newStats();
  progress.phase = "import";
  progress.stats = stats;
  const chunk = Math.min(ctx.source.chunkSize || MAX_CHUNK_BYTES, MAX_CHUNK_BYTES);
  // The names a stream's 'f' may carry to apply onto the parent (read before a byte is parsed).
  const parentNames = req.fromSnapshot ? await parentSnapshotNames(ctx, req) : [];
  let legacyWarning = "";
  const version = opts.version ?? (req.format === 1 || req.format === 2 ? req.format : undefined);
  const records = parseRbdDiff(source, { ...(version ? { version } : {}), maxPiece: chunk });
  let size = 0;
  let streamTo: string | null = null;
  const header = (m: DiffMeta): TransferHeader => {
    if (m.fromSnapshot !== null && !req.fromSnapshot) {
      throw streamError(
        m.fromAt,
        `the stream is a diff from snapshot ${quoted(m.fromSnapshot)} ('f' record), but no parent backup was given to apply it onto`,
      );
    }
    if (m.fromSnapshot === null && req.fromSnapshot) {
      throw invalidArgument(
        `the stream has no 'f' (from-snapshot) record: it is a full image, but a parent backup (snapshot ${req.fromSnapshot}) was given`,
      );
    }
    if (m.fromSnapshot !== null && parentNames === null) {
      legacyWarning = `the stream's from-snapshot ${quoted(m.fromSnapshot)} was not checked against the parent: it was imported before the names of its stream were kept`;
    }
    if (m.fromSnapshot !== null && parentNames !== null && !parentNames.includes(m.fromSnapshot)) {
      // Applied onto anything but the state it was made from, a diff leaves an image that is neither.
      const [own, streamTo] = parentNames;
      const held = streamTo
        ? `${quoted(own)} (imported from a stream whose to-snapshot was ${quoted(streamTo)})`
        : quoted(own);
      throw streamError(
        m.fromAt,
        `the stream is a diff from snapshot ${quoted(m.fromSnapshot)} ('f' record), but the parent backup's snapshot is ${held}: ` +
          "applied onto it, the diff would not reproduce the volume. Give the backup the diff was made from as " +
          "parent_backup_id, or import a full stream to start a new chain",
      );
    }
    size = m.size;
    streamTo = m.toSnapshot;
    progress.bytesTotal = m.size;
    return importHeader(ctx, req, meta, m, chunk);
  };
  const summary = await ctx
    .target("")
    .transfer(diffToTransfer(records, header, opts.checksum ?? crc32c, stats), signal);
  const seconds = (Date.now() - started) / 1000;
  log.info("import committed", {
    image: req.baseImage,
    snapshot: req.toSnapshot,
    size,
    dataBytes: stats.dataBytes,
    seconds,
  });
  const warnings = [...summary.warnings];
  if (streamTo) warnings.push(`the stream's to-snapshot ${quoted(streamTo)} is kept as ${req.toSnapshot}`);
  if (legacyWarning) warnings.push(legacyWarning);
  return {
    backupId: req.backupId,
    baseImage: req.baseImage,
    snapshot: req.toSnapshot,
    incremental: !!req.fromSnapshot,
    parentSnapshot: req.fromSnapshot,
    forcedFullReason: "",
    imageSize: size,
    bytesRead: stats.bytesRead,
    dataBytesSent: stats.dataBytes,
    zeroBytes: stats.zeroBytes,
    dataChunks: stats.dataChunks,
    zeroRanges: stats.zeroRanges,
    extents: stats.extents,
    seconds,
    sourceSnapshotsRemoved: [],
    warnings,
    destinationPool: req.pool,
    destinationNamespace: req.namespace,
    destinationFsid: ctx.fsid,
    imageDigest: summary.imageDigest,
    digestBlockSize: summary.digestBlockSize,
    resumedFrom: 0,
    resumeFallbackReason: "",
  };
}

/**
 * What a stream's 'f' record may name to apply onto the parent (req.from_snapshot): that snapshot itself
 * (a diff made on this deployment, or from a volume whose snapshot has the same name), or — for a parent
 * that was imported — the to-snapshot of the stream it was imported from (its backup.<id>.meta `import`).
 * null: anything (with a warning) — an imported parent from before `import` was kept.
 */
async function parentSnapshotNames(ctx: EngineContext, req: ImportRequest): Promise<string[] | null> {
  const parentId = parseBackupSnap(req.fromSnapshot)?.backupId as string;
  const io = await ctx.cluster.openIoCtx(req.pool, { namespace: req.namespace });
  try {
    const meta = await readMetadata(io, parentId);
    // An imported parent without its metadata object (lost, removed): what its stream was made to is
    // unknown, and a diff applied onto another state would be committed as a good backup. Refused.
    if (req.parentImported && meta === null) {
      throw failedPrecondition(
        `the parent backup ${parentId} was imported and its metadata object (backup.${parentId}.meta) is gone: the stream's from-snapshot cannot be checked against it. Import a full stream to start a new chain`,
      );
    }
    // An imported parent whose metadata predates the `import` section: its stream's names are unknown.
    if (req.parentImported && !meta?.import) return null;
    const streamTo = meta?.import?.stream_to_snapshot;
    return streamTo && streamTo !== req.fromSnapshot ? [req.fromSnapshot, streamTo] : [req.fromSnapshot];
  } finally {
    await io.close().catch(() => {});
  }
}

/** The sink's header: the base image, snapshots, size from the stream, backup.<id>.meta with that size. */
function importHeader(
  ctx: EngineContext,
  req: ImportRequest,
  meta: BackupMetadataV1,
  m: DiffMeta,
  chunk: number,
): TransferHeader {
  let features = DEFAULT_BASE_FEATURES;
  try {
    const f = BigInt(meta.image.features || "0");
    if (f !== 0n) features = Number((f & BASE_FEATURE_MASK) | 1n);
  } catch {
    // not a number: the default
  }
  const order =
    Number.isInteger(meta.image.order) && meta.image.order >= 12 && meta.image.order <= 26 ? meta.image.order : 0;
  const stored: BackupMetadataV1 = {
    ...meta,
    image: { ...meta.image, size: m.size },
    import: { stream_from_snapshot: m.fromSnapshot, stream_to_snapshot: m.toSnapshot },
  };
  return {
    transferId: crypto.randomUUID(),
    resumable: false,
    allowOpen: false,
    compression: 0, // COMPRESSION_NONE; a shaped target (agents/transfer/shaping) sets it
    jobId: req.jobId,
    kind: req.fromSnapshot ? TransferKind.BACKUP_INCREMENTAL : TransferKind.BACKUP_FULL,
    destination: { pool: req.pool, namespace: req.namespace, image: req.baseImage },
    fromSnapshot: req.fromSnapshot,
    toSnapshot: req.toSnapshot,
    imageSize: m.size,
    features,
    order,
    stripeUnit: 0,
    stripeCount: 0,
    imageMeta: {},
    backupId: req.backupId,
    metadataJson: encodeMetadata(stored),
    expectedFsid: ctx.fsid,
    chunkSize: chunk,
    resumeOffset: 0,
    resumePrefixDigest: new Uint8Array(0),
  };
}
