/**
 * The operations an agent runs on its own cluster, whoever asks: the AgentService gRPC handlers
 * (services.ts) and the coordinator's leases and calls (session.ts) share them. Each validates its
 * input, is counted in the metrics, tracked in `running` (the daemon waits for cleanup on shutdown) and
 * maps its failure to a gRPC status (ServerError).
 */
import { ServerError, Status } from "nice-grpc-common";
import { failedPrecondition, invalidArgument, notFound, statusOf, toServerError } from "../../src/common/errors";
import { isBaseImage, isUuid } from "../../src/common/ids";
import type { Logger } from "../../src/common/log";
import { SESSION_MAX_MESSAGE_BYTES } from "../../src/common/session-limits";
import type {
  BackupRequest,
  BackupResult,
  ClusterCheckRequest,
  ClusterCheckResponse,
  DeleteBackupDataRequest,
  DeleteBackupDataResult,
  ExportRequest,
  ExportResult,
  FlattenRequest,
  FlattenResult,
  GetBackupMetadataRequest,
  GetBackupMetadataResponse,
  ImportRequest,
  ListBackupSnapshotsResponse,
  ListImageSnapshotsRequest,
  RestoreRequest,
  RestoreResult,
  VerifyRequest,
  VerifyResult,
} from "../../src/gen/rbdbackup/v1/agent";
import type { ImageRef } from "../../src/gen/rbdbackup/v1/common";
import type {
  ConfirmBackupResponse,
  DigestMapRequest,
  DigestMapResponse,
  DiscardHeldRequest,
  DiscardHeldResponse,
  EndJobRequest,
  EndJobResponse,
  ListImagesRequest,
  ListImagesResponse,
  ProbeRequest,
  ProbeResponse,
  PruneBackupSnapshotsRequest,
  PruneBackupSnapshotsResponse,
  ScanBackupsRequest,
  ScanBackupsResponse,
} from "../../src/gen/rbdbackup/v1/session";
import { isCephError } from "../ceph";
import { backup } from "../engine/backup";
import { clusterChecks } from "../engine/checks";
import { flattenClone } from "../engine/clone";
import type { EngineContext } from "../engine/context";
import { deleteBackup } from "../engine/delete";
import { type ExportSink, exportBackup } from "../engine/export";
import { type ImportSource, importBackup } from "../engine/import";
import { decodeMetadata } from "../engine/metadata";
import { OpenVolumes } from "../engine/open-volumes";
import { newProgress, type Progress } from "../engine/progress";
import { readMetadata, restore } from "../engine/restore";
import { scanBackups } from "../engine/scan-backups";
import { backupSnapshots, listImageBackupSnapshots } from "../engine/snapshots";
import { pruneBackupSnapshots } from "../engine/source-prune";
import { verifyBackup } from "../engine/verify";
import { digestsObjectName } from "../transfer/digests";
import { validName } from "../transfer/protocol";
import type { RecentCommits } from "../transfer/sink";
import type { FencingCluster } from "./fencing";
import { AgentMetrics } from "./metrics";

/**
 * Work still running, including cleanup after a cancelled call: the daemon waits for it on shutdown
 * (a call cancelled by the server's shutdown must still remove its snapshot before the process exits).
 */
export const running = new Set<Promise<unknown>>();

/** How long a delete waits for a backup committed moments ago to close its handle (ms; it takes milliseconds). */
const COMMIT_SETTLE_WAIT_MS = 5_000;

/** Runs an operation; maps its failure to a status, logging the ones that are ours to fix. */
export async function handle<T>(log: Logger, method: string, f: () => Promise<T>): Promise<T> {
  const work = f();
  running.add(work);
  work.then(
    () => running.delete(work),
    () => running.delete(work),
  );
  try {
    return await work;
  } catch (e) {
    const status = statusOf(e);
    if (status === Status.INTERNAL || status === Status.UNKNOWN)
      log.error(`${method} failed`, { error: e, stack: (e as Error)?.stack });
    throw toServerError(e);
  }
}

function validImage(
  im: { pool: string; namespace: string; image: string } | undefined,
  what = "image",
  { allowAnyImage = false } = {},
) {
  if (!im) throw invalidArgument(`${what} is required`);
  validName(im.pool, `${what}.pool`);
  validName(im.namespace, `${what}.namespace`, { allowEmpty: true });
  validName(im.image, `${what}.image`, { allowEmpty: allowAnyImage });
  return im;
}

/**
 * What the coordinator session needs of the operations (AgentOperations in the daemon; a fake in the
 * session's unit tests): the leased operations, the calls, and the cluster connection for fencing.
 */
export type SessionOperations = Pick<
  AgentOperations,
  | "backup"
  | "restore"
  | "deleteBackup"
  | "flatten"
  | "verify"
  | "checkCluster"
  | "listBackupSnapshots"
  | "getBackupMetadata"
  | "probe"
  | "listImages"
  | "digestMap"
  | "pruneBackupSnapshots"
  | "scanBackups"
> &
  Partial<Pick<AgentOperations, "exportBackup" | "importBackup" | "recentCommit" | "discardHeld" | "endJob">> & {
    ctx: { cluster: FencingCluster };
  };

export class AgentOperations {
  constructor(
    readonly ctx: EngineContext,
    readonly accepting: () => boolean,
    readonly metrics?: AgentMetrics,
    /** Backups this agent's sink committed moments ago (confirmations answered from them). */
    readonly commits?: RecentCommits,
    /** Undoes the transfers this agent's sink holds into an image for a backup (sink/abandon.ts). */
    readonly held?: (where: { pool: string; namespace: string; image: string }, backupId: string) => Promise<string[]>,
    /** The coordinator ended a job: its transfer capabilities are refused here from now on. */
    readonly jobEnded?: (jobId: string) => void,
  ) {}

  get log(): Logger {
    return this.ctx.log;
  }

  /** Counts and times an operation by its result. */
  async #observe<T>(operation: string, f: () => Promise<T>): Promise<T> {
    const end = this.metrics?.operationSeconds.startTimer({ operation });
    try {
      const r = await f();
      this.metrics?.operations.inc({ operation, result: "ok" });
      return r;
    } catch (e) {
      this.metrics?.operations.inc({ operation, result: Status[statusOf(e)] ?? "UNKNOWN" });
      throw e;
    } finally {
      end?.();
    }
  }

  #gate(): void {
    if (!this.accepting()) throw new ServerError(Status.UNAVAILABLE, "this agent is shutting down");
  }

  async checkCluster(req: ClusterCheckRequest): Promise<ClusterCheckResponse> {
    return handle(this.log, "CheckCluster", async () => {
      const pool = req.backupPool || this.ctx.defaultBackupPool;
      validName(pool, "backup_pool");
      const checks = await clusterChecks(this.ctx.cluster, pool);
      return { ok: checks.every((c) => c.ok), checks, clusterFsid: this.ctx.fsid };
    });
  }

  async backup(req: BackupRequest, signal: AbortSignal, progress: Progress = newProgress()): Promise<BackupResult> {
    this.#gate();
    return handle(this.log, "Backup", () =>
      this.#observe("backup", async () => {
        const r = await backup(this.ctx, req, signal, progress);
        if (r.forcedFullReason) this.metrics?.forcedFull.inc({ reason: AgentMetrics.reasonLabel(r.forcedFullReason) });
        return r;
      }),
    );
  }

  async restore(req: RestoreRequest, signal: AbortSignal, progress: Progress = newProgress()): Promise<RestoreResult> {
    this.#gate();
    return handle(this.log, "Restore", () => this.#observe("restore", () => restore(this.ctx, req, signal, progress)));
  }

  async deleteBackup(req: DeleteBackupDataRequest): Promise<DeleteBackupDataResult> {
    this.#gate();
    // A backup committed moments ago may still be closing its handle (run-sink.ts settleCommitted).
    await this.commits?.settled(req.backupId, COMMIT_SETTLE_WAIT_MS);
    // From here its confirmation, should one still be asked, reads Ceph.
    this.commits?.forget(req.backupId);
    return handle(this.log, "DeleteBackup", () => this.#observe("delete", () => deleteBackup(this.ctx, req)));
  }

  async flatten(req: FlattenRequest, signal: AbortSignal, progress: Progress = newProgress()): Promise<FlattenResult> {
    this.#gate();
    return handle(this.log, "Flatten", () =>
      this.#observe("flatten", () => flattenClone(this.ctx, req, signal, progress)),
    );
  }

  async verify(req: VerifyRequest, signal: AbortSignal, progress: Progress = newProgress()): Promise<VerifyResult> {
    this.#gate();
    return handle(this.log, "Verify", () =>
      this.#observe("verify", () => verifyBackup(this.ctx, req, signal, progress)),
    );
  }

  /** backup.<id>.digests as stored (SOURCE verification fetches it from the backup's cluster). */
  async digestMap(req: DigestMapRequest): Promise<DigestMapResponse> {
    return handle(this.log, "DigestMap", async () => {
      validName(req.pool, "pool");
      validName(req.namespace, "namespace", { allowEmpty: true });
      if (!isUuid(req.backupId)) throw invalidArgument("backup_id must be a lowercase UUID");
      if (!(await this.ctx.cluster.poolExists(req.pool))) throw notFound(`pool ${req.pool} not found`);
      const io = await this.ctx.cluster.openIoCtx(req.pool, { namespace: req.namespace });
      try {
        const map = await io.objRead(digestsObjectName(req.backupId));
        // Answered on the coordinator session, and carried on in a SOURCE verification's lease: a message
        // over the session's limit would end the whole session (and the coordinator ask again).
        if (map.length > SESSION_MAX_MESSAGE_BYTES - 64 * 1024) {
          throw failedPrecondition(
            `the digest map of backup ${req.backupId} is ${map.length} bytes, over what the coordinator session carries: SOURCE verification cannot use it (its volume outgrew its chain's map; the chain's next backup starts a new one)`,
          );
        }
        return { found: true, map };
      } catch (e) {
        if (isCephError(e, "ENOENT")) return { found: false, map: Buffer.alloc(0) };
        throw e;
      } finally {
        await io.close();
      }
    });
  }

  /** An EXPORT lease: the backup as an rbd-diff stream, through `send` (the coordinator's ExportData). */
  async exportBackup(
    req: ExportRequest,
    send: ExportSink,
    signal: AbortSignal,
    progress: Progress = newProgress(),
  ): Promise<ExportResult> {
    this.#gate();
    return handle(this.log, "Export", () =>
      this.#observe("export", () => exportBackup(this.ctx, req, send, signal, progress)),
    );
  }

  /** An IMPORT lease: an rbd-diff stream (the coordinator's ImportData) becomes a backup. */
  async importBackup(
    req: ImportRequest,
    source: ImportSource,
    signal: AbortSignal,
    progress: Progress = newProgress(),
  ): Promise<BackupResult> {
    this.#gate();
    return handle(this.log, "Import", () =>
      this.#observe("import", () => importBackup(this.ctx, req, source, signal, progress)),
    );
  }

  /**
   * confirm_backup's answer from the commit of backup `backupId` onto exactly that image and snapshot,
   * if this agent made it moments ago and listed the snapshot after it (undefined: read Ceph); the
   * metadata decoded as `getBackupMetadata` decodes what it reads.
   */
  async recentCommit(backupId: string, image: ImageRef, snapshot: string): Promise<ConfirmBackupResponse | undefined> {
    const c = this.commits?.find(backupId, image, snapshot);
    const listed = await c?.snapshot;
    if (!c || !listed || listed.backupId !== backupId) return undefined;
    try {
      const json = JSON.stringify(decodeMetadata(Buffer.from(c.committed.metadata), backupId));
      return { snapshot: listed, metadata: { found: true, json } };
    } catch {
      return undefined; // read back from Ceph, which says what is wrong with it
    }
  }

  async listBackupSnapshots(req: ListImageSnapshotsRequest): Promise<ListBackupSnapshotsResponse> {
    return handle(this.log, "ListBackupSnapshots", async () => {
      const im = validImage(req.image);
      return {
        snapshots: await listImageBackupSnapshots(this.ctx.cluster, im.pool, im.namespace, im.image),
      };
    });
  }

  /** The coordinator's source snapshot hygiene: only backup snapshots of the named ids (engine/source-prune.ts). */
  async pruneBackupSnapshots(req: PruneBackupSnapshotsRequest): Promise<PruneBackupSnapshotsResponse> {
    return handle(this.log, "PruneBackupSnapshots", async () => {
      const r = await pruneBackupSnapshots(this.ctx.cluster, req);
      if (r.removed.length) this.log.info("removed source snapshots", { image: req.image, removed: r.removed });
      for (const w of r.warnings) this.log.warn(w);
      return r;
    });
  }

  /** discard_held: an ended job's transfer held here for a resume, undone now (session.proto). */
  async discardHeld(req: DiscardHeldRequest): Promise<DiscardHeldResponse> {
    return handle(this.log, "DiscardHeld", async () => {
      // image "" (a backup: its agent chose the image): any image of the pool held for the backup.
      const im = validImage(req.image, "image", { allowAnyImage: true });
      if (!isUuid(req.backupId)) throw invalidArgument("discard_held: backup_id must be a lowercase UUID");
      if (req.jobId && !isUuid(req.jobId))
        throw invalidArgument("discard_held: job_id must be a lowercase UUID or empty");
      // The job ended without a result here: none of its transfer capabilities may write from now on.
      if (req.jobId) this.jobEnded?.(req.jobId);
      const done = (await this.held?.(im, req.backupId)) ?? [];
      for (const d of done) this.log.info(d);
      return { done };
    });
  }

  /** end_job: a job that succeeded after a retry; its transfer capabilities are refused here from now on. */
  async endJob(req: EndJobRequest): Promise<EndJobResponse> {
    return handle(this.log, "EndJob", async () => {
      if (!isUuid(req.jobId)) throw invalidArgument("end_job: job_id must be a lowercase UUID");
      this.jobEnded?.(req.jobId);
      return {};
    });
  }

  /** One page of the catalog rebuild's scan of backup.<id>.meta objects (engine/scan-backups.ts); read-only. */
  async scanBackups(req: ScanBackupsRequest): Promise<ScanBackupsResponse> {
    return handle(this.log, "ScanBackups", () => scanBackups(this.ctx.cluster, this.ctx.fsid, req));
  }

  async getBackupMetadata(req: GetBackupMetadataRequest): Promise<GetBackupMetadataResponse> {
    return handle(this.log, "GetBackupMetadata", async () => {
      validName(req.pool, "pool");
      validName(req.namespace, "namespace", { allowEmpty: true });
      if (!isUuid(req.backupId)) throw invalidArgument("backup_id must be a lowercase UUID");
      const io = await this.ctx.cluster.openIoCtx(req.pool, { namespace: req.namespace });
      try {
        const m = await readMetadata(io, req.backupId);
        return m ? { found: true, json: JSON.stringify(m) } : { found: false, json: "" };
      } finally {
        await io.close();
      }
    });
  }

  /** The images of a pool (and namespace), sorted, without backup base images: policy discovery. */
  async listImages(req: ListImagesRequest): Promise<ListImagesResponse> {
    return handle(this.log, "ListImages", async () => {
      validName(req.pool, "pool");
      validName(req.namespace, "namespace", { allowEmpty: true });
      if (!(await this.ctx.cluster.poolExists(req.pool))) throw notFound(`pool ${req.pool} not found`);
      const io = await this.ctx.cluster.openIoCtx(req.pool, { namespace: req.namespace });
      try {
        const images = (await io.imageList()).filter((n) => !isBaseImage(n)).sort();
        return { images };
      } finally {
        await io.close();
      }
    });
  }

  /** Which of the pools and namespaces exist; whether the image exists, its size and backup snapshots. */
  async probe(req: ProbeRequest): Promise<ProbeResponse> {
    return handle(this.log, "Probe", async () => {
      const cluster = this.ctx.cluster;
      const r: ProbeResponse = {
        missingPools: [],
        missingNamespaces: [],
        imageExists: false,
        imageSize: 0,
        imageSnapshots: [],
      };
      const poolOk = async (pool: string) => {
        validName(pool, "pool");
        if (await cluster.poolExists(pool)) return true;
        if (!r.missingPools.includes(pool)) r.missingPools.push(pool);
        return false;
      };
      const namespaceOk = async (pool: string, ns: string) => {
        if (!ns) return true;
        validName(ns, "namespace");
        const io = await cluster.openIoCtx(pool);
        try {
          if (await io.namespaceExists(ns)) return true;
        } finally {
          await io.close();
        }
        r.missingNamespaces.push(`${pool}/${ns}`);
        return false;
      };
      for (const p of req.pools) await poolOk(p);
      for (const n of req.namespaces) if (await poolOk(n.pool)) await namespaceOk(n.pool, n.namespace);
      if (!req.image) return r;
      const im = validImage(req.image);
      if (!(await poolOk(im.pool))) return r;
      if (!(await namespaceOk(im.pool, im.namespace))) {
        // A namespace is removed only once its images and trash are empty — but a failed `rbd namespace rm`
        // can leave it unlisted with its trash still there (RADOS namespaces need no creating: it can be read).
        if (req.checkTrash) r.imageInTrash = await this.#inTrash(im.pool, im.namespace, im.image);
        return r;
      }
      // One open for the size and the backup snapshots (the API waits on this probe before it queues a job).
      // For a backup about to be queued (keep_open) it is read-write, as the backup's own, and the handle
      // is held for that backup (engine/open-volumes.ts) instead of closed — not an empty volume's: the
      // API refuses that backup.
      const held = req.keepOpen ? this.ctx.openVolumes : undefined;
      const io = await cluster.openIoCtx(im.pool, { namespace: im.namespace });
      let kept = false;
      try {
        const img = await io.imageOpen(im.image, { readOnly: !held });
        try {
          r.imageSize = (await img.stat()).size;
          r.imageSnapshots = backupSnapshots(await img.snapList());
          r.imageExists = true;
          if (held && r.imageSize > 0) {
            held.put(OpenVolumes.key(im.pool, im.namespace, im.image), { io, image: img });
            kept = true;
          }
        } finally {
          if (!kept) await img.close();
        }
      } catch (e) {
        if (!isCephError(e, "ENOENT")) throw e;
        r.imageSize = 0;
        r.imageSnapshots = [];
        // In the trash, the image keeps its snapshots (and may come back): the coordinator's catalog
        // history must not take it for gone. Only when asked (the whole trash is read).
        if (req.checkTrash) r.imageInTrash = await this.#inTrash(im.pool, im.namespace, im.image);
        return r;
      } finally {
        if (!kept) await io.close();
      }
      return r;
    });
  }

  /** Whether an image of this name is in the pool's (namespace's) trash; undefined when it cannot be listed. */
  async #inTrash(pool: string, namespace: string, image: string): Promise<boolean | undefined> {
    try {
      const io = await this.ctx.cluster.openIoCtx(pool, { namespace });
      try {
        return (await io.trashList()).includes(image);
      } finally {
        await io.close();
      }
    } catch (err) {
      this.log.warn("probe: the trash could not be listed; whether the image is there is unknown", {
        pool,
        namespace,
        err,
      });
      return undefined;
    }
  }
}
