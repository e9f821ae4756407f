/**
 * BackupService: the public API. It validates every request, answers reads from the catalog (and from
 * agents, for live cluster state), and turns mutations into jobs for the scheduler. Checks that need a
 * cluster (does the volume exist? the pool?) are asked of a connected agent before a job is queued, so
 * a bad request fails at once with its own status and never reaches the queue.
 */
import { createHash, randomUUID } from "node:crypto";
import { type CallContext, Status } from "nice-grpc-common";
import {
  AppError,
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  notFound,
  statusOf,
  toServerError,
} from "../common/errors";
import { parseBackupSnap } from "../common/ids";
import type { Logger } from "../common/log";
import { BackupMode, RestoreMode } from "../gen/rbdbackup/v1/agent";
import {
  type Backup,
  type BackupServiceImplementation,
  BackupStatus,
  CreateBackupRequest,
  type Job,
  type JobEvent,
  JobKind,
  JobState,
  RestoreBackupRequest,
  type VolumeRef,
} from "../gen/rbdbackup/v1/backup_service";
import type { ProbeResponse } from "../gen/rbdbackup/v1/session";
import type { Catalog } from "./catalog/catalog";
import { type JobOperation, type JobRecord, volumeKey, volumeLabel } from "./model";
import { isFinal, lockOfBackup, lockOfVolume, type Scheduler } from "./scheduler";
import type { Sessions } from "./sessions";
import * as v from "./validate";
import { jobView } from "./views";

/** How long a synchronous question to an agent may take (less when the caller's deadline is nearer). */
const CALL_TIMEOUT_MS = 15_000;
/** WatchJob sends progress at most this often. */
const WATCH_MIN_INTERVAL_MS = 250;

export interface ApiDeps {
  catalog: Catalog;
  sessions: Sessions;
  scheduler: Scheduler;
  log: Logger;
  maxAttempts: number;
}

function fingerprint(kind: string, msg: unknown): string {
  return createHash("sha256").update(kind).update(JSON.stringify(msg)).digest("hex");
}

function sortedMeta(m: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(m).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

const isUniqueViolation = (e: unknown): boolean =>
  typeof (e as { code?: string })?.code === "string" && (e as { code: string }).code.startsWith("SQLITE_CONSTRAINT");

export function backupService(deps: ApiDeps): BackupServiceImplementation {
  const { catalog, sessions, scheduler, log } = deps;

  /** Runs a handler; every failure leaves as a status with an actionable message, internals only in the log. */
  async function handle<T>(method: string, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      const s = statusOf(e);
      if (s === Status.INTERNAL || s === Status.UNKNOWN)
        log.error(`${method} failed`, { error: (e as Error)?.message, stack: (e as Error)?.stack });
      throw toServerError(e);
    }
  }

  const view = (j: JobRecord): Job => jobView(j, catalog, scheduler.progress.get(j.id));

  function knownCluster(name: string, field: string): void {
    if (!catalog.listAgents().some((a) => a.clusterName === name)) {
      throw notFound(`${field}: cluster ${name} is unknown (no agent of it has ever registered with this coordinator)`);
    }
  }

  /** Asks an agent of the cluster whether pools, namespaces and an image exist; NOT_FOUND for what is missing. */
  async function probe(
    cluster: string,
    req: { pools: string[]; namespaces?: Array<{ pool: string; namespace: string }>; image?: VolumeRef },
    ctx: CallContext,
    field: string,
  ): Promise<ProbeResponse> {
    const image = req.image
      ? { pool: req.image.pool, namespace: req.image.namespace, image: req.image.image }
      : undefined;
    const namespaces = (req.namespaces ?? []).filter((n) => n.namespace).map((n) => ({ ...n, image: "" }));
    const r = await sessions
      .any(cluster)
      .call({ $case: "probe", value: { pools: req.pools, image, namespaces } }, "probe", CALL_TIMEOUT_MS, ctx.signal);
    if (r.missingPools.length)
      throw notFound(`${field}.pool: pool ${r.missingPools.join(", ")} not found on cluster ${cluster}`);
    if (r.missingNamespaces.length) {
      throw notFound(
        `${field}.namespace: RBD namespace ${r.missingNamespaces.join(", ")} not found on cluster ${cluster} (create it with "rbd namespace create")`,
      );
    }
    return r;
  }

  /** The job an idempotency key already names, or an error when the key was used for another request. */
  function replay(key: string, fp: string): JobRecord | undefined {
    if (!key) return undefined;
    const j = catalog.jobByIdempotencyKey(key);
    if (j && j.fingerprint !== fp) {
      throw alreadyExists(`idempotency_key "${key}" was used for a different request (job ${j.id})`);
    }
    return j;
  }

  /** Jobs not yet finished that hold one of these locks. */
  function activeHolder(locks: string[]): JobRecord | undefined {
    return catalog.activeJobs().find((j) => j.locks.some((k) => locks.includes(k)));
  }

  function newJob(
    kind: JobKind,
    backupId: string,
    volume: JobRecord["volume"],
    operation: JobOperation,
    key: string,
    fp: string,
    locks: string[],
    execCluster: string,
    peerCluster: string,
  ): JobRecord {
    return {
      id: randomUUID(),
      kind,
      state: JobState.JOB_STATE_QUEUED,
      backupId,
      volume,
      idempotencyKey: key,
      fingerprint: fp,
      operation,
      attempts: 0,
      maxAttempts: deps.maxAttempts,
      errorCode: "",
      errorMessage: "",
      agentId: "",
      waitingReason: "queued",
      createdAt: Date.now(),
      startedAt: 0,
      finishedAt: 0,
      nextAttemptAt: 0,
      lease: null,
      cancelRequested: false,
      locks,
      execCluster,
      peerCluster,
      result: null,
      warnings: [],
      fence: [],
    };
  }

  /** Inserts in one transaction; a concurrent request with the same idempotency key wins the race. */
  function submit(job: JobRecord, write: () => void): Job {
    try {
      catalog.transaction(() => {
        write();
        catalog.insertJob(job);
      });
    } catch (e) {
      if (job.idempotencyKey && isUniqueViolation(e)) {
        const other = replay(job.idempotencyKey, job.fingerprint);
        if (other) return view(other);
      }
      throw e;
    }
    log.info("job queued", {
      job: job.id,
      kind: JobKind[job.kind],
      backup: job.backupId,
      volume: volumeLabel(job.volume),
    });
    scheduler.kick();
    return view(job);
  }

  return {
    createBackup: (req, ctx) =>
      handle("CreateBackup", async () => {
        const vol = v.volumeRef(req.volume, "volume");
        const loc = v.location(req.location, "location");
        v.backupMode(req.mode);
        v.volumeMetadata(req.volumeId, req.volumeMetadata);
        v.idempotencyKey(req.idempotencyKey);
        v.maxSnapshots(req.maxSnapshots);
        const fp = fingerprint(
          "backup",
          CreateBackupRequest.toJSON({ ...req, idempotencyKey: "", volumeMetadata: sortedMeta(req.volumeMetadata) }),
        );
        const again = replay(req.idempotencyKey, fp);
        if (again) return view(again);
        knownCluster(vol.cluster, "volume.cluster");
        knownCluster(loc.cluster, "location.cluster");
        const dst = sessions.any(loc.cluster);
        const destPool = loc.pool || dst.info.defaultBackupPool;
        const [src] = await Promise.all([
          probe(vol.cluster, { pools: [], image: vol }, ctx, "volume"),
          probe(
            loc.cluster,
            { pools: [destPool], namespaces: [{ pool: destPool, namespace: loc.namespace }] },
            ctx,
            "location",
          ),
        ]);
        if (!src.imageExists) throw notFound(`volume ${volumeLabel(vol)} not found`);
        if (src.imageSize === 0) throw failedPrecondition(`volume ${volumeLabel(vol)} has size 0: nothing to back up`);
        if (req.mode === BackupMode.BACKUP_MODE_INCREMENTAL) {
          const onVolume = new Set(src.imageSnapshots.map((s) => s.name));
          const parent = catalog
            .backupsOfVolume(vol.cluster, vol.pool, vol.namespace, vol.image)
            .some(
              (b) =>
                b.status === BackupStatus.BACKUP_STATUS_AVAILABLE &&
                b.location?.cluster === loc.cluster &&
                b.location.pool === destPool &&
                b.location.namespace === loc.namespace &&
                onVolume.has(b.snapshot),
            );
          if (!parent) {
            throw failedPrecondition(
              `mode INCREMENTAL: no available backup of ${volumeLabel(vol)} in ${loc.cluster}/${destPool} whose snapshot is still on the volume; use AUTO or FULL`,
            );
          }
        }
        const backupId = randomUUID();
        const backup: Backup = {
          id: backupId,
          volume: vol,
          volumeId: req.volumeId,
          volumeMetadata: req.volumeMetadata,
          location: { cluster: loc.cluster, pool: destPool, namespace: loc.namespace },
          locationFsid: dst.info.clusterFsid,
          status: BackupStatus.BACKUP_STATUS_CREATING,
          baseImage: "",
          snapshot: "",
          incremental: false,
          parentSnapshot: "",
          forcedFullReason: "",
          sizeBytes: src.imageSize,
          dataBytesSent: 0,
          zeroBytes: 0,
          transferSeconds: 0,
          jobId: "",
          createdAt: new Date(),
          completedAt: undefined,
          error: "",
          warnings: [],
        };
        const job = newJob(
          JobKind.JOB_KIND_BACKUP,
          backupId,
          vol,
          { kind: "backup", mode: req.mode, maxSnapshots: req.maxSnapshots },
          req.idempotencyKey,
          fp,
          [lockOfVolume(vol)],
          vol.cluster,
          loc.cluster,
        );
        backup.jobId = job.id;
        return submit(job, () => catalog.insertBackup(backup));
      }),

    restoreBackup: (req, ctx) =>
      handle("RestoreBackup", async () => {
        v.uuid(req.backupId, "backup_id");
        const target = v.volumeRef(req.target, "target");
        v.restoreMode(req.mode);
        v.idempotencyKey(req.idempotencyKey);
        const fp = fingerprint("restore", RestoreBackupRequest.toJSON({ ...req, idempotencyKey: "" }));
        const again = replay(req.idempotencyKey, fp);
        if (again) return view(again);
        const b = catalog.getBackup(req.backupId);
        if (!b?.location) throw notFound(`backup ${req.backupId} not found`);
        if (b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE) {
          throw failedPrecondition(
            `backup ${b.id} is ${BackupStatus[b.status]}; only an available backup can be restored`,
          );
        }
        knownCluster(target.cluster, "target.cluster");
        sessions.any(b.location.cluster);
        const locks = [lockOfVolume(target), lockOfBackup(b.id)];
        const busy = catalog.activeJobs().find((j) => j.locks.includes(lockOfVolume(target)));
        if (busy) {
          throw failedPrecondition(
            `target ${volumeLabel(target)} is in use by job ${busy.id} (${JobKind[busy.kind]}, ${JobState[busy.state]}); retry when it has finished`,
          );
        }
        const p = await probe(target.cluster, { pools: [], image: target }, ctx, "target");
        if (req.mode === RestoreMode.RESTORE_MODE_NEW && p.imageExists) {
          throw alreadyExists(
            `target ${volumeLabel(target)} exists; restore to a new name, or over it with mode ORIGINAL`,
          );
        }
        if (req.mode === RestoreMode.RESTORE_MODE_ORIGINAL && !p.imageExists) {
          throw notFound(`target ${volumeLabel(target)} not found (mode ORIGINAL restores over an existing volume)`);
        }
        const job = newJob(
          JobKind.JOB_KIND_RESTORE,
          b.id,
          target,
          { kind: "restore", target, mode: req.mode },
          req.idempotencyKey,
          fp,
          locks,
          b.location.cluster,
          target.cluster,
        );
        return submit(job, () => {});
      }),

    deleteBackup: (req) =>
      handle("DeleteBackup", async () => {
        v.uuid(req.backupId, "backup_id");
        v.idempotencyKey(req.idempotencyKey);
        const fp = fingerprint("delete", { backupId: req.backupId });
        const again = replay(req.idempotencyKey, fp);
        if (again) return view(again);
        const b = catalog.getBackup(req.backupId);
        if (!b?.volume || !b.location) throw notFound(`backup ${req.backupId} not found`);
        const holder = activeHolder([lockOfBackup(b.id)]) ?? catalog.activeJobs().find((j) => j.backupId === b.id);
        if (holder) {
          throw failedPrecondition(
            `backup ${b.id} has a ${JobState[holder.state]} ${JobKind[holder.kind]} job ${holder.id}; cancel it or wait for it`,
          );
        }
        if (b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE) {
          throw failedPrecondition(
            `backup ${b.id} is ${BackupStatus[b.status]}; only an available backup can be deleted`,
          );
        }
        const vol = b.volume;
        const job = newJob(
          JobKind.JOB_KIND_DELETE,
          b.id,
          vol,
          { kind: "delete" },
          req.idempotencyKey,
          fp,
          [lockOfVolume(vol), lockOfBackup(b.id)],
          b.location.cluster,
          "",
        );
        return submit(job, () => {
          b.status = BackupStatus.BACKUP_STATUS_DELETING;
          catalog.updateBackup(b);
        });
      }),

    getBackup: (req) =>
      handle("GetBackup", async () => {
        v.uuid(req.backupId, "backup_id");
        const b = catalog.getBackup(req.backupId);
        if (!b) throw notFound(`backup ${req.backupId} not found`);
        return b;
      }),

    listBackups: (req) =>
      handle("ListBackups", async () => {
        if (req.cluster) v.clusterName(req.cluster, "cluster");
        if (req.locationCluster) v.clusterName(req.locationCluster, "location_cluster");
        if (req.pool) v.rbdName(req.pool, "pool");
        if (req.image) v.rbdName(req.image, "image");
        v.backupStatus(req.status);
        const size = v.pageSize(req.pageSize);
        const p = pageOr400(() =>
          catalog.listBackups(
            {
              cluster: req.cluster,
              pool: req.pool,
              image: req.image,
              volumeId: req.volumeId,
              locationCluster: req.locationCluster,
              ...(req.status ? { statuses: [req.status] } : { excludeDeleted: true }),
            },
            size,
            req.pageToken,
          ),
        );
        return { backups: p.items, nextPageToken: p.next };
      }),

    listBackupSnapshots: (req, ctx) =>
      handle("ListBackupSnapshots", async () => {
        const vol = v.volumeRef(req.volume, "volume");
        knownCluster(vol.cluster, "volume.cluster");
        return sessions
          .any(vol.cluster)
          .call(
            { $case: "snapshots", value: { image: { pool: vol.pool, namespace: vol.namespace, image: vol.image } } },
            "snapshots",
            CALL_TIMEOUT_MS,
            ctx.signal,
          );
      }),

    getJob: (req) =>
      handle("GetJob", async () => {
        v.uuid(req.jobId, "job_id");
        const j = catalog.getJob(req.jobId);
        if (!j) throw notFound(`job ${req.jobId} not found`);
        return view(j);
      }),

    listJobs: (req) =>
      handle("ListJobs", async () => {
        v.jobState(req.state);
        v.jobKind(req.kind);
        if (req.backupId) v.uuid(req.backupId, "backup_id");
        const size = v.pageSize(req.pageSize);
        const p = pageOr400(() =>
          catalog.listJobs({ state: req.state, kind: req.kind, backupId: req.backupId }, size, req.pageToken),
        );
        return { jobs: p.items.map(view), nextPageToken: p.next };
      }),

    async *watchJob(req, ctx): AsyncGenerator<JobEvent> {
      try {
        v.uuid(req.jobId, "job_id");
      } catch (e) {
        throw toServerError(e);
      }
      let j = catalog.getJob(req.jobId);
      if (!j) throw toServerError(notFound(`job ${req.jobId} not found`));
      // A change of state is sent at once; progress at most every WATCH_MIN_INTERVAL_MS; and an event
      // every 10 s in any case, so a client can tell a quiet job from a dead stream.
      let dirty = true;
      let lastSent = 0;
      let wake: (() => void) | null = null;
      const onJob = (id: string) => {
        if (id !== req.jobId) return;
        dirty = true;
        wake?.();
      };
      const onProgress = (id: string) => {
        if (id !== req.jobId) return;
        dirty = true;
        const due = lastSent + WATCH_MIN_INTERVAL_MS - Date.now();
        if (due <= 0) wake?.();
        else setTimeout(() => wake?.(), due);
      };
      const onAbort = () => wake?.();
      scheduler.on("job", onJob);
      scheduler.on("progress", onProgress);
      ctx.signal.addEventListener("abort", onAbort);
      try {
        for (;;) {
          if (ctx.signal.aborted) return;
          if (dirty) {
            dirty = false;
            lastSent = Date.now();
            j = catalog.getJob(req.jobId) ?? j;
            yield { job: view(j) };
            if (isFinal(j.state)) return;
          }
          if (dirty) continue;
          await new Promise<void>((resolve) => {
            const t = setTimeout(() => {
              dirty = true;
              resolve();
            }, 10_000);
            wake = () => {
              clearTimeout(t);
              resolve();
            };
          });
          wake = null;
        }
      } finally {
        scheduler.off("job", onJob);
        scheduler.off("progress", onProgress);
        ctx.signal.removeEventListener("abort", onAbort);
      }
    },

    cancelJob: (req) =>
      handle("CancelJob", async () => {
        v.uuid(req.jobId, "job_id");
        const j = catalog.getJob(req.jobId);
        if (!j) throw notFound(`job ${req.jobId} not found`);
        if (isFinal(j.state)) throw failedPrecondition(`job ${j.id} has already finished (${JobState[j.state]})`);
        return view(scheduler.cancel(j));
      }),

    listAgents: () =>
      handle("ListAgents", async () => {
        const running = scheduler.runningCounts(catalog.activeJobs()).byAgent;
        return {
          agents: catalog.listAgents().map((a) => ({
            agentId: a.agentId,
            clusterName: a.clusterName,
            clusterFsid: a.clusterFsid,
            version: a.version,
            transferAddress: a.transferAddress,
            connected: sessions.get(a.agentId) !== undefined,
            capacity: a.capacity,
            runningJobs: running.get(a.agentId) ?? 0,
            lastSeen: new Date(a.lastSeen),
            defaultBackupPool: a.defaultBackupPool,
          })),
        };
      }),

    checkCluster: (req, ctx) =>
      handle("CheckCluster", async () => {
        v.clusterName(req.cluster, "cluster");
        v.rbdName(req.backupPool, "backup_pool", { allowEmpty: true });
        knownCluster(req.cluster, "cluster");
        return sessions
          .any(req.cluster)
          .call({ $case: "check", value: { backupPool: req.backupPool } }, "check", CALL_TIMEOUT_MS, ctx.signal);
      }),

    exportBackupRecord: (req) =>
      handle("ExportBackupRecord", async () => {
        v.uuid(req.backupId, "backup_id");
        const b = catalog.getBackup(req.backupId);
        if (!b) throw notFound(`backup ${req.backupId} not found`);
        if (b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE) {
          throw failedPrecondition(
            `backup ${b.id} is ${BackupStatus[b.status]}; only an available backup can be exported`,
          );
        }
        return { version: 1, backup: b };
      }),

    importBackupRecord: (req, ctx) =>
      handle("ImportBackupRecord", async () => {
        const r = req.record;
        if (!r?.backup) throw invalidArgument("record.backup is required");
        if (r.version !== 1)
          throw invalidArgument(`record.version ${r.version} is not supported (this coordinator reads 1)`);
        const b = r.backup;
        v.uuid(b.id, "record.backup.id");
        v.volumeRef(b.volume, "record.backup.volume");
        const loc = v.location(b.location, "record.backup.location");
        v.rbdName(loc.pool, "record.backup.location.pool");
        v.rbdName(b.baseImage, "record.backup.base_image");
        if (parseBackupSnap(b.snapshot)?.backupId !== b.id) {
          throw invalidArgument(`record.backup.snapshot "${b.snapshot}" is not a snapshot of backup ${b.id}`);
        }
        v.volumeMetadata(b.volumeId, b.volumeMetadata);
        if (b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE)
          throw invalidArgument("record.backup.status must be AVAILABLE");
        if (catalog.getBackup(b.id)) throw alreadyExists(`backup ${b.id} is already in this catalog`);
        knownCluster(loc.cluster, "record.backup.location.cluster");
        const agent = sessions.any(loc.cluster);
        if (b.locationFsid && agent.info.clusterFsid !== b.locationFsid) {
          throw failedPrecondition(
            `the record's backup is on a cluster with fsid ${b.locationFsid}, but cluster ${loc.cluster} here has fsid ${agent.info.clusterFsid}`,
          );
        }
        const snaps = await agent
          .call(
            { $case: "snapshots", value: { image: { pool: loc.pool, namespace: loc.namespace, image: b.baseImage } } },
            "snapshots",
            CALL_TIMEOUT_MS,
            ctx.signal,
          )
          .catch((e) => {
            if (statusOf(e) === Status.NOT_FOUND)
              throw failedPrecondition(
                `base image ${loc.pool}/${b.baseImage} of the record is not on cluster ${loc.cluster}: ${(e as Error).message}`,
              );
            throw e;
          });
        if (!snaps.snapshots.some((s) => s.name === b.snapshot)) {
          throw failedPrecondition(
            `snapshot ${b.snapshot} of the record is not on ${loc.cluster}/${loc.pool}/${b.baseImage}: the backup is gone`,
          );
        }
        const imported: Backup = { ...b, jobId: "", locationFsid: agent.info.clusterFsid, warnings: [] };
        try {
          catalog.insertBackup(imported);
        } catch (e) {
          if (isUniqueViolation(e)) throw alreadyExists(`backup ${b.id} is already in this catalog`);
          throw e;
        }
        log.info("backup record imported", {
          backup: b.id,
          volume: volumeKey(b.volume ?? { cluster: "", pool: "", namespace: "", image: "" }),
        });
        return imported;
      }),
  };
}

/** A page token this server did not issue is the caller's mistake. */
function pageOr400<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof RangeError) throw new AppError(Status.INVALID_ARGUMENT, e.message);
    throw e;
  }
}
