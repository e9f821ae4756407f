/**
 * The scheduler owns job state after creation: the queue, leases, retries and limits.
 *
 *  - A job runs as leases (job id, attempt, token, expiry) on an agent of its cluster; heartbeats renew
 *    them. An expired lease fails that attempt; a report with a token that is not the job's current one
 *    is refused (and the agent told to stop it).
 *  - Transient failures (UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN,
 *    an expired lease) are retried with exponential backoff and jitter until maxAttempts; then the job
 *    fails with the last cause. Other failures end the job at once.
 *  - Jobs take exclusive locks (one volume, one backup); a queued job waits for every earlier job
 *    holding one of its locks — one mutating job per volume chain, in order of creation.
 *  - A job uses a slot on each cluster it touches (per-cluster limit) and one of its agent's
 *    capacity.
 *  - Everything is level-triggered: tick() compares the catalog with the connected agents and
 *    converges; it runs on a timer and whenever something changed, and every step is safe to repeat.
 */
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { Status } from "nice-grpc-common";
import type { Logger } from "../common/log";
import {
  type BackupRequest,
  BackupResult,
  type DeleteBackupDataRequest,
  DeleteBackupDataResult,
  type RestoreRequest,
  RestoreResult,
} from "../gen/rbdbackup/v1/agent";
import { BackupStatus, JobKind, JobState } from "../gen/rbdbackup/v1/backup_service";
import type { HeldLease, JobOutcome, JobProgressReport, Lease as LeaseMsg } from "../gen/rbdbackup/v1/session";
import type { Catalog } from "./catalog/catalog";
import { type Backup, type JobRecord, volumeKey, volumeLabel } from "./model";
import type { AgentSession, Sessions } from "./sessions";

export interface SchedulerConfig {
  leaseTtlMs: number;
  heartbeatIntervalMs: number;
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** Jobs running at once on one cluster (as source, destination or target). */
  perClusterLimit: number;
  tickMs: number;
}

/** How long a dead agent's Ceph client stays blocklisted (it is dead: its successor has a new address). */
const FENCE_SECONDS = 3600;

export const schedulerDefaults: SchedulerConfig = {
  leaseTtlMs: 15_000,
  heartbeatIntervalMs: 3_000,
  maxAttempts: 3,
  backoffBaseMs: 1_000,
  backoffMaxMs: 60_000,
  perClusterLimit: 4,
  tickMs: 1_000,
};

export interface LiveProgress {
  phase: string;
  bytesDone: number;
  bytesTotal: number;
  bytesTransferred: number;
  rateBytesPerSecond: number;
  at: number;
}

const TRANSIENT = new Set<Status>([
  Status.UNAVAILABLE,
  Status.ABORTED,
  Status.DEADLINE_EXCEEDED,
  Status.RESOURCE_EXHAUSTED,
  Status.INTERNAL,
  Status.UNKNOWN,
]);

export const isFinal = (s: JobState): boolean =>
  s === JobState.JOB_STATE_SUCCEEDED || s === JobState.JOB_STATE_FAILED || s === JobState.JOB_STATE_CANCELLED;

export interface SchedulerEvents {
  /** A job changed (state, attempt, waiting reason). */
  job: [jobId: string];
  /** A running job reported progress (watchers may throttle these). */
  progress: [jobId: string];
  /** A job reached a final state. */
  finished: [job: JobRecord];
  /** An attempt started / failed; a lease expired. */
  attempt: [job: JobRecord];
  retry: [job: JobRecord, cause: string];
  leaseExpired: [job: JobRecord];
}

export class Scheduler extends EventEmitter<SchedulerEvents> {
  readonly progress = new Map<string, LiveProgress>();
  #timer: NodeJS.Timeout | null = null;
  #kicked = false;
  #stopped = false;

  constructor(
    readonly catalog: Catalog,
    readonly sessions: Sessions,
    readonly cfg: SchedulerConfig,
    readonly log: Logger,
  ) {
    super();
    this.setMaxListeners(0);
  }

  /** After a restart: running jobs get one lease time for their agents to reconnect and claim them. */
  start(): void {
    const now = Date.now();
    for (const j of this.catalog.activeJobs()) {
      if (j.state === JobState.JOB_STATE_RUNNING && j.lease) {
        j.lease.expiresAt = Math.max(j.lease.expiresAt, now + this.cfg.leaseTtlMs);
        this.catalog.updateJob(j);
      }
    }
    this.#timer = setInterval(() => this.tick(), this.cfg.tickMs);
    this.kick();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Runs tick() soon (coalesced). */
  kick(): void {
    if (this.#kicked || this.#stopped) return;
    this.#kicked = true;
    setImmediate(() => {
      this.#kicked = false;
      this.tick();
    });
  }

  #changed(j: JobRecord): void {
    this.emit("job", j.id);
    if (isFinal(j.state)) {
      this.progress.delete(j.id);
      this.emit("finished", j);
    }
  }

  /** Running jobs by cluster (each job counts on every cluster it touches) and by agent. */
  runningCounts(jobs: JobRecord[]): { byCluster: Map<string, number>; byAgent: Map<string, number> } {
    const byCluster = new Map<string, number>();
    const byAgent = new Map<string, number>();
    for (const j of jobs) {
      if (j.state !== JobState.JOB_STATE_RUNNING) continue;
      for (const c of clustersOf(j)) byCluster.set(c, (byCluster.get(c) ?? 0) + 1);
      if (j.lease) byAgent.set(j.lease.agentId, (byAgent.get(j.lease.agentId) ?? 0) + 1);
    }
    return { byCluster, byAgent };
  }

  tick(): void {
    if (this.#stopped) return;
    try {
      this.#tick();
    } catch (e) {
      this.log.error("scheduler tick failed", { error: (e as Error).message, stack: (e as Error).stack });
    }
  }

  #tick(): void {
    const now = Date.now();
    const jobs = this.catalog.activeJobs();
    for (const j of jobs) {
      if (j.state === JobState.JOB_STATE_RUNNING && j.lease && j.lease.expiresAt < now) {
        this.log.warn("lease expired", { job: j.id, attempt: j.lease.attempt, agent: j.lease.agentId });
        this.emit("leaseExpired", j);
        const s = this.sessions.get(j.lease.agentId);
        s?.jobs.delete(j.id);
        // Gone (not merely slow): its Ceph client may still hold the volume's lock; fence it.
        if (!s) this.#fence(j, this.catalog.listAgents().find((a) => a.agentId === j.lease?.agentId)?.cephClientAddrs);
        this.#attemptFailed(
          j,
          Status.UNAVAILABLE,
          `the lease of attempt ${j.lease.attempt} expired: agent ${j.lease.agentId} stopped reporting`,
        );
      }
    }
    const active = jobs.filter((j) => !isFinal(j.state));
    const { byCluster, byAgent } = this.runningCounts(active);
    const held = new Map<string, string>();
    for (const j of active) if (j.state === JobState.JOB_STATE_RUNNING) for (const k of j.locks) held.set(k, j.id);
    for (const j of active) {
      if (j.state !== JobState.JOB_STATE_QUEUED) continue;
      const blocker = j.locks.map((k) => held.get(k)).find((x) => x !== undefined);
      for (const k of j.locks) if (!held.has(k)) held.set(k, j.id);
      if (blocker) {
        this.#wait(j, `waiting for job ${blocker}, which uses the same volume or backup`);
        continue;
      }
      if (j.nextAttemptAt > now) {
        this.#wait(j, `retrying after a failed attempt at ${new Date(j.nextAttemptAt).toISOString()}`);
        continue;
      }
      const full = clustersOf(j).find((c) => (byCluster.get(c) ?? 0) >= this.cfg.perClusterLimit);
      if (full) {
        this.#wait(j, `cluster ${full} already runs ${this.cfg.perClusterLimit} jobs (its limit)`);
        continue;
      }
      const agents = this.sessions
        .ofCluster(j.execCluster)
        .filter((s) => (byAgent.get(s.agentId) ?? 0) < s.info.capacity)
        .sort((a, b) => (byAgent.get(a.agentId) ?? 0) - (byAgent.get(b.agentId) ?? 0));
      const agent = agents[0];
      if (!agent) {
        this.#wait(
          j,
          this.sessions.ofCluster(j.execCluster).length
            ? `every agent of cluster ${j.execCluster} is at its capacity`
            : `waiting for an agent of cluster ${j.execCluster} to connect`,
        );
        continue;
      }
      let peer: AgentSession | null = null;
      if (j.peerCluster && j.peerCluster !== j.execCluster) {
        peer = this.sessions.ofCluster(j.peerCluster).sort((a, b) => a.jobs.size - b.jobs.size)[0] ?? null;
        if (!peer) {
          this.#wait(j, `waiting for an agent of cluster ${j.peerCluster} to connect`);
          continue;
        }
      }
      let op: LeaseMsg["operation"];
      try {
        op = this.#operation(j, peer);
      } catch (e) {
        this.#finish(j, JobState.JOB_STATE_FAILED, Status.FAILED_PRECONDITION, (e as Error).message);
        continue;
      }
      const token = randomUUID();
      j.attempts++;
      j.state = JobState.JOB_STATE_RUNNING;
      j.lease = { token, attempt: j.attempts, agentId: agent.agentId, expiresAt: now + this.cfg.leaseTtlMs };
      j.agentId = agent.agentId;
      j.waitingReason = "";
      if (!j.startedAt) j.startedAt = now;
      this.catalog.updateJob(j);
      agent.jobs.add(j.id);
      for (const c of clustersOf(j)) byCluster.set(c, (byCluster.get(c) ?? 0) + 1);
      byAgent.set(agent.agentId, (byAgent.get(agent.agentId) ?? 0) + 1);
      agent.send({
        $case: "lease",
        value: {
          jobId: j.id,
          attempt: j.attempts,
          token,
          ttlMs: this.cfg.leaseTtlMs,
          operation: op,
          fenceClientAddrs: j.fence ?? [],
          fenceSeconds: FENCE_SECONDS,
        },
      });
      this.log.info("job leased", { job: j.id, attempt: j.attempts, agent: agent.agentId, kind: JobKind[j.kind] });
      this.emit("attempt", j);
      this.#changed(j);
    }
  }

  /** Remembers a dead agent's Ceph client for the next attempt to blocklist (the catalog job is saved by the caller). */
  #fence(j: JobRecord, addrs: string | undefined): void {
    if (!addrs) return;
    j.fence = [...new Set([...(j.fence ?? []), addrs])];
  }

  #wait(j: JobRecord, reason: string): void {
    if (j.waitingReason === reason) return;
    j.waitingReason = reason;
    this.catalog.updateJob(j);
    this.#changed(j);
  }

  /** The request the agent runs for this attempt. */
  #operation(j: JobRecord, peer: AgentSession | null): LeaseMsg["operation"] {
    const b = this.catalog.getBackup(j.backupId);
    if (!b?.location || !b.volume) throw new Error(`backup ${j.backupId} is not in the catalog`);
    const peerRef = peer ? { address: peer.info.transferAddress, clusterFsid: peer.info.clusterFsid } : undefined;
    const op = j.operation;
    if (op.kind === "backup") {
      const v = b.volume;
      const req: BackupRequest = {
        backupId: b.id,
        source: { $case: "volume", value: { pool: v.pool, namespace: v.namespace, image: v.image } },
        sourceName: "",
        destination: peerRef ?? { address: "", clusterFsid: "" },
        destinationPool: b.location.pool,
        destinationNamespace: b.location.namespace,
        mode: op.mode,
        volumeId: b.volumeId,
        volumeMetadata: b.volumeMetadata,
        maxSnapshots: op.maxSnapshots,
        keepSnapshots: this.#keepSnapshots(b),
        jobId: j.id,
      };
      return { $case: "backup", value: req };
    }
    if (op.kind === "restore") {
      const req: RestoreRequest = {
        backupId: b.id,
        backupPool: b.location.pool,
        backupNamespace: b.location.namespace,
        baseImage: b.baseImage,
        snapshot: b.snapshot,
        targetAgent: peerRef ?? { address: "", clusterFsid: "" },
        target: { pool: op.target.pool, namespace: op.target.namespace, image: op.target.image },
        mode: op.mode,
        jobId: j.id,
      };
      return { $case: "restore", value: req };
    }
    const req: DeleteBackupDataRequest = {
      backupId: b.id,
      pool: b.location.pool,
      namespace: b.location.namespace,
      baseImage: b.baseImage,
      jobId: j.id,
    };
    return { $case: "delete", value: req };
  }

  /**
   * Source snapshots the backup must not prune: the newest snapshot of every other chain of the volume
   * (backups of it kept in other pools or clusters), which their next incremental starts from.
   */
  #keepSnapshots(b: Backup): string[] {
    const v = b.volume;
    if (!v || !b.location) return [];
    const here = `${b.location.cluster}/${b.location.pool}/${b.location.namespace}`;
    const newest = new Map<string, string>();
    for (const o of this.catalog.backupsOfVolume(v.cluster, v.pool, v.namespace, v.image)) {
      if (o.status !== BackupStatus.BACKUP_STATUS_AVAILABLE || !o.location || !o.snapshot) continue;
      const loc = `${o.location.cluster}/${o.location.pool}/${o.location.namespace}`;
      if (loc !== here) newest.set(loc, o.snapshot);
    }
    return [...newest.values()];
  }

  // ---- agent reports ----

  /** A (re)registered agent: its listed leases are renewed when still current; returns the stale ones. */
  onRegister(session: AgentSession, leases: HeldLease[], previousClientAddrs = ""): string[] {
    const revoked: string[] = [];
    const listed = new Set<string>();
    for (const l of leases) {
      const j = this.catalog.getJob(l.jobId);
      if (j?.state === JobState.JOB_STATE_RUNNING && j.lease?.token === l.token) {
        j.lease.agentId = session.agentId;
        j.lease.expiresAt = Date.now() + this.cfg.leaseTtlMs;
        this.catalog.updateJob(j);
        session.jobs.add(j.id);
        listed.add(j.id);
        if (j.cancelRequested)
          session.send({ $case: "cancel", value: { jobId: j.id, token: l.token, reason: "cancelled by a user" } });
      } else revoked.push(l.token);
    }
    // Attempts this agent held but no longer lists (it restarted): failed now, not at lease expiry.
    for (const j of this.catalog.activeJobs()) {
      if (j.state === JobState.JOB_STATE_RUNNING && j.lease?.agentId === session.agentId && !listed.has(j.id)) {
        if (previousClientAddrs !== session.info.cephClientAddrs) this.#fence(j, previousClientAddrs);
        this.#attemptFailed(j, Status.UNAVAILABLE, `agent ${session.agentId} restarted and lost attempt ${j.attempts}`);
      }
    }
    this.kick();
    return revoked;
  }

  onHeartbeat(session: AgentSession, leases: HeldLease[]): string[] {
    const revoked: string[] = [];
    const now = Date.now();
    for (const l of leases) {
      const j = this.catalog.getJob(l.jobId);
      if (j?.state === JobState.JOB_STATE_RUNNING && j.lease?.token === l.token) {
        j.lease.expiresAt = now + this.cfg.leaseTtlMs;
        j.lease.agentId = session.agentId;
        this.catalog.updateJob(j);
        session.jobs.add(j.id);
      } else revoked.push(l.token);
    }
    return revoked;
  }

  onProgress(_session: AgentSession, r: JobProgressReport): void {
    const j = this.catalog.getJob(r.jobId);
    if (!j || j.state !== JobState.JOB_STATE_RUNNING || j.lease?.token !== r.token) return;
    const now = Date.now();
    const prev = this.progress.get(j.id);
    let rate = prev?.rateBytesPerSecond ?? 0;
    if (prev && now > prev.at && r.bytesDone >= prev.bytesDone) {
      const inst = ((r.bytesDone - prev.bytesDone) * 1000) / (now - prev.at);
      rate = prev.rateBytesPerSecond ? 0.7 * prev.rateBytesPerSecond + 0.3 * inst : inst;
    }
    this.progress.set(j.id, {
      phase: r.phase,
      bytesDone: r.bytesDone,
      bytesTotal: r.bytesTotal,
      bytesTransferred: r.bytesTransferred,
      rateBytesPerSecond: rate,
      at: now,
    });
    this.emit("progress", j.id);
  }

  /** An attempt's result. False when its token is stale (the report is ignored). */
  onOutcome(session: AgentSession, o: JobOutcome): boolean {
    const j = this.catalog.getJob(o.jobId);
    session.jobs.delete(o.jobId);
    if (!j || j.state !== JobState.JOB_STATE_RUNNING || j.lease?.token !== o.token) {
      this.log.warn("ignored the outcome of a stale attempt", { job: o.jobId, agent: session.agentId });
      return false;
    }
    if (o.code === Status.OK) this.#succeeded(j, o);
    else if (j.cancelRequested || o.code === Status.CANCELLED)
      this.#finish(j, JobState.JOB_STATE_CANCELLED, Status.CANCELLED, j.cancelRequested ? "cancelled" : o.message);
    else this.#attemptFailed(j, o.code as Status, o.message);
    this.kick();
    return true;
  }

  onDisconnect(session: AgentSession): void {
    // Its leases stay until they expire: the agent may reconnect and claim them.
    this.log.info("agent disconnected", { agent: session.agentId, jobs: [...session.jobs] });
    this.kick();
  }

  // ---- state changes ----

  /** Cancels a job: at once when queued; a running one is asked to stop and ends when its agent reports. */
  cancel(j: JobRecord): JobRecord {
    if (j.state === JobState.JOB_STATE_QUEUED) {
      this.#finish(j, JobState.JOB_STATE_CANCELLED, Status.CANCELLED, "cancelled");
    } else if (j.state === JobState.JOB_STATE_RUNNING && !j.cancelRequested) {
      j.cancelRequested = true;
      this.catalog.updateJob(j);
      const lease = j.lease;
      if (lease) {
        this.sessions
          .get(lease.agentId)
          ?.send({ $case: "cancel", value: { jobId: j.id, token: lease.token, reason: "cancelled by a user" } });
      }
      this.#changed(j);
    }
    this.kick();
    return j;
  }

  #attemptFailed(j: JobRecord, code: Status, message: string): void {
    j.errorCode = Status[code] ?? String(code);
    j.errorMessage = message;
    j.lease = null;
    if (j.cancelRequested) {
      this.#finish(j, JobState.JOB_STATE_CANCELLED, Status.CANCELLED, "cancelled");
      return;
    }
    if (TRANSIENT.has(code) && j.attempts < j.maxAttempts) {
      const backoff = Math.min(this.cfg.backoffMaxMs, this.cfg.backoffBaseMs * 2 ** (j.attempts - 1));
      j.nextAttemptAt = Date.now() + Math.round(backoff * (0.5 + Math.random()));
      j.state = JobState.JOB_STATE_QUEUED;
      j.waitingReason = `retrying after a failed attempt at ${new Date(j.nextAttemptAt).toISOString()}`;
      this.catalog.updateJob(j);
      this.log.warn("attempt failed, retrying", { job: j.id, attempt: j.attempts, code: j.errorCode, message });
      this.progress.delete(j.id);
      this.emit("retry", j, j.errorCode);
      this.#changed(j);
      return;
    }
    this.#finish(j, JobState.JOB_STATE_FAILED, code, message);
  }

  /** Ends a job (FAILED or CANCELLED here) and puts its backup in the matching state. */
  #finish(j: JobRecord, state: JobState, code: Status, message: string): void {
    this.catalog.transaction(() => {
      j.state = state;
      j.finishedAt = Date.now();
      j.lease = null;
      j.waitingReason = "";
      if (state !== JobState.JOB_STATE_SUCCEEDED) {
        j.errorCode = Status[code] ?? String(code);
        j.errorMessage = message;
      }
      this.catalog.updateJob(j);
      const b = this.catalog.getBackup(j.backupId);
      if (b && state !== JobState.JOB_STATE_SUCCEEDED) {
        if (j.operation.kind === "backup") {
          b.status = BackupStatus.BACKUP_STATUS_FAILED;
          b.error = state === JobState.JOB_STATE_CANCELLED ? "cancelled" : `${j.errorCode}: ${message}`;
          b.completedAt = new Date();
          this.catalog.updateBackup(b);
        } else if (j.operation.kind === "delete" && b.status === BackupStatus.BACKUP_STATUS_DELETING) {
          b.status = BackupStatus.BACKUP_STATUS_AVAILABLE;
          this.catalog.updateBackup(b);
        }
      }
    });
    this.log.info("job finished", { job: j.id, state: JobState[state], code: j.errorCode, message: j.errorMessage });
    this.#changed(j);
  }

  #succeeded(j: JobRecord, o: JobOutcome): void {
    const r = o.result;
    this.catalog.transaction(() => {
      const b = this.catalog.getBackup(j.backupId);
      if (r?.$case === "backup" && b) {
        const x = r.value;
        Object.assign(b, {
          status: BackupStatus.BACKUP_STATUS_AVAILABLE,
          baseImage: x.baseImage,
          snapshot: x.snapshot,
          incremental: x.incremental,
          parentSnapshot: x.parentSnapshot,
          forcedFullReason: x.forcedFullReason,
          sizeBytes: x.imageSize,
          dataBytesSent: x.dataBytesSent,
          zeroBytes: x.zeroBytes,
          transferSeconds: x.seconds,
          locationFsid: x.destinationFsid,
          completedAt: new Date(),
          warnings: x.warnings,
          error: "",
        } satisfies Partial<Backup>);
        if (b.location) b.location.pool = x.destinationPool || b.location.pool;
        this.catalog.updateBackup(b);
        j.warnings = x.warnings;
        j.result = BackupResult.toJSON(x);
      } else if (r?.$case === "delete" && b) {
        b.status = BackupStatus.BACKUP_STATUS_DELETED;
        b.warnings = r.value.warnings;
        this.catalog.updateBackup(b);
        j.warnings = r.value.warnings;
        j.result = DeleteBackupDataResult.toJSON(r.value);
      } else if (r?.$case === "restore") {
        j.result = RestoreResult.toJSON(r.value);
        j.warnings = r.value.warnings;
      }
      j.state = JobState.JOB_STATE_SUCCEEDED;
      j.finishedAt = Date.now();
      j.lease = null;
      j.waitingReason = "";
      j.errorCode = "";
      j.errorMessage = "";
      this.catalog.updateJob(j);
    });
    this.log.info("job succeeded", { job: j.id, kind: JobKind[j.kind], volume: volumeLabel(j.volume) });
    this.#changed(j);
  }
}

/** The clusters whose slots a job uses. */
export function clustersOf(j: JobRecord): string[] {
  return j.peerCluster && j.peerCluster !== j.execCluster ? [j.execCluster, j.peerCluster] : [j.execCluster];
}

export const lockOfVolume = (v: Parameters<typeof volumeKey>[0]): string => `vol:${volumeKey(v)}`;
export const lockOfBackup = (id: string): string => `backup:${id}`;
