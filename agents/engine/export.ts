/**
 * An EXPORT lease: a backup (or the difference between two backups of one chain) as an
 * `rbd export-diff` stream. The base image is opened at the backup's snapshot and its diff (from the
 * older backup's snapshot, or from creation) read with the transfer source's read window; the writer
 * turns chunks and zero ranges into 'w'/'z' records, and `send` (the coordinator's ExportData stream,
 * or a file in tests) pulls the bytes — reads run only as far ahead as it makes room for. The stream's
 * 'f'/'t' records name the backups' snapshots, 's' the size at the snapshot.
 */
import { dataLoss, invalidArgument, notFound } from "../../src/common/errors";
import { isUuid } from "../../src/common/ids";
import type { ExportRequest, ExportResult } from "../../src/gen/rbdbackup/v1/agent";
import { TransferKind } from "../../src/gen/rbdbackup/v1/transfer";
import { type Image, type IoCtx, isCephError } from "../ceph";
import { validName } from "../transfer/protocol";
import { transferToDiff } from "../transfer/rbd-diff/to-diff";
import { newStats, rbdMessages } from "../transfer/source";
import type { EngineContext } from "./context";
import { newProgress, type Progress } from "./progress";

/** Bytes per message of the exported stream (well under gRPC's 4 MiB limit). */
export const EXPORT_MESSAGE_BYTES = 1024 * 1024;

/** Takes the stream's bytes; resolves once the far end has them all (with the count it acknowledged). */
export type ExportSink = (bytes: AsyncIterable<Buffer>, signal: AbortSignal) => Promise<number>;

export function validateExportRequest(req: ExportRequest): void {
  if (!isUuid(req.backupId)) throw invalidArgument("backup_id must be a lowercase UUID");
  validName(req.backupPool, "backup_pool");
  validName(req.backupNamespace, "backup_namespace", { allowEmpty: true });
  validName(req.baseImage, "base_image");
  validName(req.snapshot, "snapshot");
  validName(req.fromSnapshot, "from_snapshot", { allowEmpty: true });
  if (req.fromSnapshot === req.snapshot) throw invalidArgument("from_snapshot must differ from snapshot");
  if (req.format !== 1 && req.format !== 2) throw invalidArgument(`format ${req.format} is not 1 or 2`);
}

export async function exportBackup(
  ctx: EngineContext,
  req: ExportRequest,
  send: ExportSink,
  signal: AbortSignal,
  progress: Progress = newProgress(),
): Promise<ExportResult> {
  validateExportRequest(req);
  const started = Date.now();
  const log = ctx.log.child({ op: "export", backup: req.backupId, job: req.jobId || undefined });
  if (!(await ctx.cluster.poolExists(req.backupPool))) throw notFound(`backup pool ${req.backupPool} not found`);
  const io = await ctx.cluster.openIoCtx(req.backupPool, { namespace: req.backupNamespace });
  let img: Image | null = null;
  try {
    img = await openAt(io, req.baseImage, req.snapshot);
    const names = new Set((await img.snapList()).map((s) => s.name));
    if (req.fromSnapshot && !names.has(req.fromSnapshot)) {
      throw notFound(
        `snapshot ${req.fromSnapshot} (the export's starting point) not found on ${io.label}/${req.baseImage}`,
      );
    }
    const size = (await img.stat()).size;
    const stats = newStats();
    progress.phase = "export";
    progress.bytesTotal = size;
    progress.stats = stats;
    // The transfer source's header is only a carrier here (nothing receives it but the writer).
    const messages = rbdMessages(
      img,
      {
        transferId: "",
        resumable: false,
        allowOpen: false,
        compression: 0, // COMPRESSION_NONE; a shaped target (agents/transfer/shaping) sets it
        jobId: req.jobId,
        kind: TransferKind.BACKUP_FULL,
        destination: undefined,
        fromSnapshot: "",
        toSnapshot: "",
        imageSize: size,
        features: 0,
        order: 0,
        stripeUnit: 0,
        stripeCount: 0,
        imageMeta: {},
        backupId: req.backupId,
        metadataJson: Buffer.alloc(0),
        expectedFsid: "",
        chunkSize: ctx.source.chunkSize,
        resumeOffset: 0,
        resumePrefixDigest: new Uint8Array(0),
      },
      { ...(req.fromSnapshot ? { fromSnapshot: req.fromSnapshot } : {}), fullCopy: false },
      { ...sourceOptions(ctx), meter: ctx.meter, meterPool: req.backupPool },
      stats,
    );
    const bytes = transferToDiff(
      skipHeader(messages),
      { version: req.format as 1 | 2, fromSnapshot: req.fromSnapshot, toSnapshot: req.snapshot, size },
      EXPORT_MESSAGE_BYTES,
    );
    let streamed = 0;
    const counted = async function* () {
      for await (const b of bytes) {
        streamed += b.length;
        yield b;
      }
    };
    const acknowledged = await send(counted(), signal);
    if (acknowledged !== streamed) {
      throw dataLoss(`the coordinator acknowledged ${acknowledged} bytes of the ${streamed} exported`);
    }
    const seconds = (Date.now() - started) / 1000;
    log.info("export done", { bytes: streamed, dataBytes: stats.dataBytes, seconds });
    return { bytesStreamed: streamed, dataBytes: stats.dataBytes, zeroBytes: stats.zeroBytes, seconds };
  } finally {
    await img?.close().catch(() => {});
    await io.close().catch(() => {});
  }
}

/** The read window without the test fault that corrupts a transfer's chunk (an export has no checksum to catch it). */
function sourceOptions(ctx: EngineContext) {
  const { corruptChunk: _, ...rest } = ctx.source;
  return rest;
}

async function openAt(io: IoCtx, image: string, snapshot: string): Promise<Image> {
  try {
    return await io.imageOpen(image, { snapshot });
  } catch (e) {
    if (isCephError(e, "ENOENT")) {
      throw notFound(`backup snapshot ${io.label}/${image}@${snapshot} not found`);
    }
    throw e;
  }
}

async function* skipHeader<T extends { body?: { $case: string } | undefined }>(
  messages: AsyncIterable<T>,
): AsyncGenerator<T> {
  for await (const m of messages) if (m.body?.$case !== "header") yield m;
}
