/**
 * Backup of a file or block device of this host: always a full, sparse copy into a new base image
 * "<source_name>.backup.<id>" (there is no snapshot to diff from). The destination writes, verifies
 * and commits it exactly as a volume's full backup.
 */
import { open as openFile, readFile, stat } from "node:fs/promises";
import { failedPrecondition, invalidArgument, notFound } from "../../src/common/errors";
import { backupSnapName, baseImageName } from "../../src/common/ids";
import { BackupMode, type BackupRequest, type BackupResult } from "../../src/gen/rbdbackup/v1/agent";
import { type TransferHeader, TransferKind } from "../../src/gen/rbdbackup/v1/transfer";
import { fileMessages, newStats } from "../transfer/source";
import { sentFields } from "./backup-result";
import type { EngineContext } from "./context";
import { encodeMetadata } from "./metadata";
import type { Progress } from "./progress";

/**
 * A device number's major and minor as Linux encodes them (glibc's gnu_dev_major/minor): the minor's low
 * 8 bits, the major's 12, then the minor's upper bits — /dev/rbd16 is 252:256, not 253:0.
 */
export function deviceNumbers(rdev: bigint): { major: bigint; minor: bigint } {
  return {
    major: ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n),
    minor: (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n),
  };
}

/** Size of a regular file or a block device. */
async function sourceSize(path: string): Promise<number> {
  const st = await stat(path, { bigint: true });
  if (st.isFile()) return Number(st.size);
  if (st.isBlockDevice()) {
    const { major, minor } = deviceNumbers(st.rdev);
    const sectors = Number((await readFile(`/sys/dev/block/${major}:${minor}/size`, "utf8")).trim());
    return sectors * 512;
  }
  throw invalidArgument(`${path} is neither a regular file nor a block device`);
}

/** A file or block device: always a full, sparse copy into a new base image "<source_name>.backup.<id>". */
export async function backupPath(
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
  const target = ctx.target(req.destination?.address ?? "", req.transferOptions);
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
  const chains = await target.listChains(
    destPool,
    req.destinationNamespace,
    req.sourceName,
    signal,
    req.transferCapability || undefined,
  );
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
    resumeOffset: 0,
    resumePrefixDigest: new Uint8Array(0),
    resumable: false,
    allowOpen: false,
    compression: 0, // COMPRESSION_NONE; a shaped target (agents/transfer/shaping) sets it
  };
  const fh = await openFile(path, "r");
  try {
    const summary = await target.transfer(
      fileMessages(fh, header, { ...ctx.source, meter: ctx.meter, meterPool: "" }, stats),
      signal,
      req.transferCapability || undefined,
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
      imageDigest: summary.imageDigest,
      digestBlockSize: summary.digestBlockSize,
      resumedFrom: 0,
      resumeFallbackReason: "",
    };
  } finally {
    await fh.close();
  }
}
