/**
 * The coordinator's logic without Ceph: an in-memory SQLite catalog (the real SqliteCatalog), the real
 * Sessions registry holding fake agent sessions, a scheduler whose clock and randomness the test drives,
 * and a log that keeps what was logged. Nothing here waits: a test moves the clock and calls tick().
 *
 * The fake agents answer the coordinator's confirmation questions (`snapshots`, `metadata`) from
 * `committed`: what the destination holds. `backupDone` commits the backup there first (as a real
 * destination does before the source reports), reports it and awaits the confirmation.
 */

import { randomUUID } from "node:crypto";
import { Status } from "nice-grpc-common";
import type { CapabilitySigner } from "../../../src/common/capability";
import { AppError } from "../../../src/common/errors";
import { backupSnapName, baseImageName } from "../../../src/common/ids";
import type { Logger } from "../../../src/common/log";
import { AsyncQueue } from "../../../src/common/queue";
import { Admission } from "../../../src/coordinator/api/admission";
import { Audit } from "../../../src/coordinator/audit";
import { CALLER_METADATA_KEY } from "../../../src/coordinator/authz";
import { registeredFsid } from "../../../src/coordinator/catalog/catalog";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import { Relays } from "../../../src/coordinator/interchange/relays";
import { deleteJobSpec } from "../../../src/coordinator/jobs/delete-job";
import type { Backup, JobRecord } from "../../../src/coordinator/model";
import {
  lockOfBackup,
  lockOfVolume,
  Scheduler,
  type SchedulerConfig,
  sharedLockOfBackup,
} from "../../../src/coordinator/scheduler";
import type { StallWatch } from "../../../src/coordinator/scheduler/stall-watch";
import { sessionService } from "../../../src/coordinator/session-service";
import { type CallRequest, Sessions } from "../../../src/coordinator/sessions";
import { BackupMode, type BackupResult, RestoreMode, RestoreResult } from "../../../src/gen/rbdbackup/v1/agent";
import {
  BackupStatus,
  type ImportBackupHeader,
  type ImportBackupMessage,
  JobKind,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import type { AgentMessage, JobOutcome, Register } from "../../../src/gen/rbdbackup/v1/session";
import type { BackupSnapshot } from "../../../src/gen/rbdbackup/v1/transfer";
import { type Answer, agentRecord, FakeAgentSession, fsidOf } from "../../helpers/fake-agent";

/** A backup as its destination holds it: base image, snapshot and metadata object. */
export interface Committed {
  cluster: string;
  pool: string;
  baseImage: string;
  snapshot: string;
  backupId: string;
  /** The metadata object's JSON. */
  meta: string;
  /** What the source reports about it. */
  result: BackupResult;
}

export interface LogLine {
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}

export function memoryLogger(lines: LogLine[] = []): Logger & { lines: LogLine[] } {
  const at =
    (level: string) =>
    (msg: string, fields?: Record<string, unknown>): void => {
      lines.push({ level, msg, fields });
    };
  const log = {
    lines,
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: () => log,
  };
  return log;
}

export const testConfig: SchedulerConfig = {
  fullPoolBackoffMs: 300_000,
  leftoverWaitMs: 30_000,
  placementTimeoutMs: 3_600_000,
  confirmTimeoutMs: 600_000,
  leaseTtlMs: 15_000,
  heartbeatIntervalMs: 3_000,
  idleHeartbeatIntervalMs: 30_000,
  maxAttempts: 3,
  backoffBaseMs: 1_000,
  backoffMaxMs: 60_000,
  perClusterLimit: 4,
  tickMs: 60_000,
};

export const vol = (image: string, cluster = "a", pool = "rbd"): VolumeRef => ({ cluster, pool, namespace: "", image });

/** An ImportBackup stream's first message: a header of `volume`, kept on cluster b's default pool unless given. */
export function importHeaderMessage(
  h: Partial<ImportBackupHeader> & Pick<ImportBackupHeader, "volume">,
): ImportBackupMessage {
  const value: ImportBackupHeader = {
    location: { cluster: "b", pool: "", namespace: "" },
    volumeId: "",
    volumeMetadata: {},
    parentBackupId: "",
    idempotencyKey: "",
    format: 0,
    takenAt: undefined,
    ...h,
  };
  return { body: { $case: "header", value } };
}

export class Harness {
  /** Epoch ms of the fake clock. */
  t = Date.UTC(2026, 11, 1);
  /** Jitter input: 0.5 makes every backoff exactly base·2^(attempt-1). */
  rnd = 0.5;
  /** What the scheduler's leading() answers (HA: false once the lease may have lapsed). */
  leading = true;
  readonly log = memoryLogger();
  readonly catalog: SqliteCatalog;
  readonly sessions = new Sessions();
  readonly cfg: SchedulerConfig;
  scheduler: Scheduler;
  readonly admission: Admission;
  /** What the destinations hold (answers the confirmation questions), by backup id. */
  readonly committed = new Map<string, Committed>();
  /** Images restored on target clusters (answers restores' confirmation probes): "cluster/pool/ns/image" → size. */
  readonly restored = new Map<string, number>();

  constructor(
    cfg: Partial<SchedulerConfig> = {},
    catalog = new SqliteCatalog(":memory:"),
    readonly signer?: CapabilitySigner,
    /** The scheduler's watch for the coordinator's own stalls (none unless a test brings one). */
    readonly stallWatch: StallWatch | null = null,
  ) {
    this.cfg = { ...testConfig, ...cfg };
    this.catalog = catalog;
    this.scheduler = this.newScheduler();
    this.admission = new Admission({
      catalog: this.catalog,
      sessions: this.sessions,
      scheduler: this.scheduler,
      log: this.log,
      maxAttempts: this.cfg.maxAttempts,
    });
  }

  /** A scheduler on this harness's catalog, agents and clock (a second one plays the restarted coordinator). */
  newScheduler(): Scheduler {
    return new Scheduler({
      catalog: this.catalog,
      sessions: this.sessions,
      cfg: this.cfg,
      log: this.log,
      now: () => this.t,
      random: () => this.rnd,
      stallWatch: this.stallWatch,
      leading: () => this.leading,
      ...(this.signer ? { signer: this.signer } : {}),
    });
  }

  advance(ms: number): void {
    this.t += ms;
  }

  tick(): void {
    this.scheduler.tick();
  }

  close(): void {
    this.scheduler.stop();
    this.catalog.close();
  }

  /** An agent of `cluster` registers (known to the catalog) and connects (its session is live). */
  connect(agentId: string, cluster: string, capacity = 4, features: string[] = []): FakeAgentSession {
    const rec = agentRecord(agentId, cluster, { capacity, lastSeen: this.t });
    this.catalog.upsertAgent(rec);
    const s = new FakeAgentSession(rec, features);
    s.answer = (req) => this.destinationAnswer(cluster, req);
    this.sessions.add(s);
    return s;
  }

  /** A destination agent's answer to a confirmation question, from `committed`. */
  destinationAnswer(cluster: string, req: CallRequest): Answer {
    const held = [...this.committed.values()].filter((c) => c.cluster === cluster);
    if (req.$case === "snapshots") {
      const im = req.value.image;
      const on = held.filter((c) => c.pool === im?.pool && c.baseImage === im?.image);
      if (!on.length) return new AppError(Status.NOT_FOUND, `image ${im?.pool}/${im?.image} not found`);
      const snapshots = on.map((c) => ({ name: c.snapshot, backupId: c.backupId, timestamp: 1, snapId: 1, size: 1 }));
      return { $case: "snapshots", value: { snapshots } };
    }
    if (req.$case === "metadata") {
      const c = held.find((x) => x.backupId === req.value.backupId && x.pool === req.value.pool);
      return { $case: "metadata", value: { found: !!c, json: c?.meta ?? "" } };
    }
    if (req.$case === "confirmBackup") {
      // What `snapshots` and `metadata` answer, together (agents/agent/calls.ts does the same).
      const { image, backupId, snapshot } = req.value;
      const listed = this.destinationAnswer(cluster, { $case: "snapshots", value: { image } });
      if (listed instanceof AppError) return listed;
      const snaps = listed.$case === "snapshots" ? listed.value.snapshots : [];
      const snap = snaps.find((s) => s.name === snapshot);
      const req2 = { backupId, pool: image?.pool ?? "", namespace: image?.namespace ?? "" };
      const meta = this.destinationAnswer(cluster, { $case: "metadata", value: req2 });
      const metadata = meta instanceof AppError || meta.$case !== "metadata" ? undefined : meta.value;
      return {
        $case: "confirmBackup",
        value: { snapshot: snap, metadata: snap ? metadata : { found: false, json: "" } },
      };
    }
    if (req.$case === "probe") {
      const im = req.value.image;
      const size = this.restored.get(`${cluster}/${im?.pool}/${im?.namespace}/${im?.image}`);
      const value = { missingPools: [], missingNamespaces: [], imageSnapshots: [] };
      return { $case: "probe", value: { ...value, imageExists: size !== undefined, imageSize: size ?? 0 } };
    }
    return new AppError(Status.UNIMPLEMENTED, `the fake agent has no answer for ${req.$case}`);
  }

  /** The destination of job j's backup now holds it (as the result of backupResult() describes it). */
  commit(j: JobRecord, r: BackupResult = backupResult(j.backupId)): Committed {
    const b = this.backup(j.backupId);
    const v = b.volume as VolumeRef;
    const meta = {
      version: 1,
      backup_id: b.id,
      source: {
        kind: "rbd",
        // As the source agent writes them: its cluster's name and fsid (agents/engine/backup-header.ts).
        cluster_name: v.cluster,
        cluster_fsid: registeredFsid(this.catalog, v.cluster),
        pool: v.pool,
        namespace: v.namespace,
        image: v.image,
      },
      chain: { base_image: r.baseImage, snapshot: r.snapshot },
    };
    const c: Committed = {
      cluster: b.location?.cluster ?? "",
      pool: r.destinationPool,
      baseImage: r.baseImage,
      snapshot: r.snapshot,
      backupId: b.id,
      meta: JSON.stringify(meta),
      result: r,
    };
    this.committed.set(b.id, c);
    return c;
  }

  /**
   * A pass after a BACKUP or DELETE job ended: its volume's source snapshot sweep runs first (and holds
   * the volume's next job) until the fake source answers it, then a second pass dispatches.
   */
  async tickAfterSweep(): Promise<void> {
    this.tick();
    await this.settle();
    this.tick();
  }

  /** Waits until the scheduler's confirmation questions are answered and applied. */
  async settle(): Promise<void> {
    await this.scheduler.settle();
  }

  disconnect(s: FakeAgentSession): void {
    if (this.sessions.remove(s)) this.scheduler.onDisconnect(s);
  }

  job(id: string): JobRecord {
    const j = this.catalog.getJob(id);
    if (!j) throw new Error(`job ${id} not in the catalog`);
    return j;
  }

  backup(id: string): Backup {
    const b = this.catalog.getBackup(id);
    if (!b) throw new Error(`backup ${id} not in the catalog`);
    return b;
  }

  /** A queued BACKUP job of `v` into `destCluster`/backups, with its CREATING backup (`key`: its idempotency key). */
  queueBackup(v: VolumeRef, destCluster = "b", key = ""): JobRecord {
    const backup = newBackup(v, destCluster, this.t);
    const job = this.#job(
      {
        kind: JobKind.JOB_KIND_BACKUP,
        backupId: backup.id,
        volume: v,
        operation: { kind: "backup", mode: BackupMode.BACKUP_MODE_AUTO, maxSnapshots: 0 },
        locks: [lockOfVolume(v)],
        execCluster: v.cluster,
        peerCluster: destCluster,
      },
      key,
    );
    backup.jobId = job.id;
    this.catalog.transaction(() => {
      this.catalog.insertBackup(backup);
      this.catalog.insertJob(job);
    });
    return job;
  }

  /** A queued RESTORE job of an available backup onto `target`. */
  queueRestore(backupId: string, target: VolumeRef): JobRecord {
    const b = this.backup(backupId);
    const job = this.#job({
      kind: JobKind.JOB_KIND_RESTORE,
      backupId,
      volume: target,
      operation: { kind: "restore", target, mode: RestoreMode.RESTORE_MODE_NEW },
      locks: [lockOfVolume(target), sharedLockOfBackup(backupId)],
      execCluster: b.location?.cluster ?? "",
      peerCluster: target.cluster,
    });
    this.catalog.insertJob(job);
    return job;
  }

  /** A queued DELETE job of an available backup (the backup becomes DELETING, as the API does); `key`: its idempotency key. */
  queueDelete(backupId: string, key = ""): JobRecord {
    const b = this.backup(backupId);
    const v = b.volume as VolumeRef;
    const job = this.#job(
      {
        kind: JobKind.JOB_KIND_DELETE,
        backupId,
        volume: v,
        operation: deleteJobSpec(b, "").operation,
        locks: [lockOfVolume(v), lockOfBackup(backupId)],
        execCluster: b.location?.cluster ?? "",
        peerCluster: "",
      },
      key,
    );
    this.catalog.transaction(() => {
      b.status = BackupStatus.BACKUP_STATUS_DELETING;
      this.catalog.updateBackup(b);
      this.catalog.insertJob(job);
    });
    return job;
  }

  /** Jobs are ordered by creation time: each new one is 1 ms younger than the previous. */
  #job(spec: Omit<Parameters<Admission["newJob"]>[0], "idempotencyKey" | "fingerprint">, key = ""): JobRecord {
    const j = this.admission.newJob({ ...spec, idempotencyKey: key, fingerprint: "" });
    j.createdAt = this.t;
    this.advance(1);
    return j;
  }

  /** The agent reports the outcome of its current attempt of a job. */
  outcome(
    agent: FakeAgentSession,
    jobId: string,
    code: Status,
    message = "",
    result?: JobOutcome["result"],
    /** The source's backup snapshots the outcome lists (JobOutcome.source_snapshots); undefined = not listed. */
    sourceSnapshots?: BackupSnapshot[],
    /** JobOutcome.refused: the agent refused the lease before any work (shutting down). */
    refused = false,
  ): boolean {
    const l = agent.lease(jobId);
    const listed = { sourceSnapshots: sourceSnapshots ?? [], sourceSnapshotsListed: sourceSnapshots !== undefined };
    return this.scheduler.onOutcome(agent, { jobId, token: l.token, code, message, result, refused, ...listed });
  }

  /**
   * The destination commits the backup, the agent reports it made (snapshot named after the backup),
   * and the confirmation is awaited: false when the report was stale.
   */
  async backupDone(agent: FakeAgentSession, j: JobRecord, sourceSnapshots?: BackupSnapshot[]): Promise<boolean> {
    const r = backupResult(j.backupId);
    this.commit(j, r);
    const current = this.outcome(agent, j.id, Status.OK, "", { $case: "backup", value: r }, sourceSnapshots);
    await this.settle();
    return current;
  }

  /**
   * The restore's target image now exists (at `r.imageSize`), the agent reports the restore done, and
   * the confirmation is awaited: false when the report was stale.
   */
  async restoreDone(agent: FakeAgentSession, j: JobRecord, r = RestoreResult.fromPartial({ imageSize: 1 << 20 })) {
    const t = j.volume as VolumeRef;
    this.restored.set(`${t.cluster}/${t.pool}/${t.namespace}/${t.image}`, r.imageSize);
    const current = this.outcome(agent, j.id, Status.OK, "", { $case: "restore", value: r });
    await this.settle();
    return current;
  }
}

export function newBackup(v: VolumeRef, destCluster: string, now: number): Backup {
  return {
    id: randomUUID(),
    volume: v,
    volumeId: "",
    volumeMetadata: {},
    location: { cluster: destCluster, pool: "backups", namespace: "" },
    locationFsid: fsidOf(destCluster),
    status: BackupStatus.BACKUP_STATUS_CREATING,
    baseImage: "",
    snapshot: "",
    incremental: false,
    parentSnapshot: "",
    forcedFullReason: "",
    sizeBytes: 1 << 20,
    dataBytesSent: 0,
    zeroBytes: 0,
    transferSeconds: 0,
    jobId: "",
    createdAt: new Date(now),
    completedAt: undefined,
    error: "",
    warnings: [],
    clones: [],
    integrity: undefined,
    policy: "",
  };
}

/** One snapshot name per backup: a name made at each call moved with the clock (a millisecond apart under load). */
const snapNames = new Map<string, string>();

export function backupResult(backupId: string): BackupResult {
  let snapshot = snapNames.get(backupId);
  if (!snapshot) {
    if (snapNames.size >= 10_000) snapNames.clear();
    snapshot = backupSnapName(backupId);
    snapNames.set(backupId, snapshot);
  }
  return {
    backupId,
    baseImage: baseImageName("img", backupId),
    snapshot,
    incremental: false,
    parentSnapshot: "",
    forcedFullReason: "",
    imageSize: 1 << 20,
    bytesRead: 1 << 20,
    dataBytesSent: 4096,
    zeroBytes: 0,
    dataChunks: 1,
    zeroRanges: 0,
    extents: 1,
    seconds: 1,
    sourceSnapshotsRemoved: [],
    warnings: [],
    destinationPool: "backups",
    destinationNamespace: "",
    destinationFsid: "",
    imageDigest: "",
    digestBlockSize: 0,
    resumedFrom: 0,
    resumeFallbackReason: "",
  };
}

/**
 * The real session service over `h`, driven without gRPC: one Session stream whose first message
 * registers agent a1 of cluster "a" (`register` overrides fields). `received`: what the coordinator sent;
 * `pump` settles when the stream ends (its error, if any, is thrown by it).
 */
export function openSession(h: Harness, register: Partial<Register> = {}, signal = new AbortController().signal) {
  const svc = sessionService({
    catalog: h.catalog,
    sessions: h.sessions,
    scheduler: h.scheduler,
    log: h.log,
    audit: new Audit(h.log),
    accepting: () => true,
    relays: new Relays(),
  });
  const inbox = new AsyncQueue<AgentMessage>();
  const metadata = new Map([[CALLER_METADATA_KEY, JSON.stringify({ via: "insecure" })]]);
  // biome-ignore lint/suspicious/noExplicitAny: the handler reads only metadata and signal of its context
  const out = svc.session(inbox, { metadata, signal } as any);
  const received: unknown[] = [];
  const pump = (async () => {
    for await (const m of out) received.push(m);
  })();
  inbox.push({
    msg: {
      $case: "register",
      value: {
        agentId: "a1",
        clusterName: "a",
        clusterFsid: fsidOf("a"),
        version: "test",
        transferAddress: "127.0.0.1:7401",
        capacity: 4,
        defaultBackupPool: "backups",
        cephClientAddrs: "",
        librbdVersion: "",
        leases: [],
        features: [],
        ...register,
      },
    },
  });
  return { inbox, received, pump };
}
