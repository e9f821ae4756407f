/**
 * The dispatcher: one pass over the queue, oldest job first. A queued job starts only when
 *  - no earlier job holds one of its locks (one mutating job per volume chain, in order of creation),
 *    and no source snapshot sweep of its volume is in flight (snapshot-hygiene.ts `sweeping`),
 *  - its retry backoff has passed,
 *  - every cluster it touches has a free slot (per-cluster limit),
 *  - an agent of its cluster has capacity, and a peer agent is connected for a transfer.
 * Otherwise it stays queued with the reason as its waiting reason. Safe to run any number of times.
 */
import { Status } from "nice-grpc-common";
import { AppError } from "../../common/errors";
import { VerifyMode } from "../../gen/rbdbackup/v1/agent";
import { JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { Lease as LeaseMsg } from "../../gen/rbdbackup/v1/session";
import type { JobRecord } from "../model";
import type { AgentSession } from "../sessions";
import type { Located } from "./capabilities";
import type { SchedulerContext } from "./context";
import type { DigestMaps } from "./digest-maps";
import {
  clustersOf,
  countRunning,
  isFinal,
  isSharedLock,
  lockedResource,
  type RunningCounts,
  runningCounts,
} from "./jobs";
import type { LeaseBroker } from "./lease-broker";
import { leaseOperation } from "./operation";
import { finish, retryReason, wait } from "./transitions";
import { noAgent, type Waiting, waiting } from "./waiting";

/** Longer than any wait between two dispatcher passes while leading (the scheduler sleeps at most 30 s). */
const PASS_GAP_MS = 90_000;

interface Placement {
  agent: AgentSession;
  peer: AgentSession | null;
  /** SOURCE verification: the backup's digest map, fetched for this attempt. */
  digestMap?: Uint8Array;
}

export class Dispatcher {
  /**
   * Queued jobs waiting for an agent of a cluster to connect: since when (this process's view, in memory:
   * a restarted coordinator or a new leader counts afresh, as agents reconnect to it), and which cluster.
   */
  readonly #noAgent = new Map<string, { cluster: string; since: number; seen: number }>();

  constructor(
    private readonly ctx: SchedulerContext,
    private readonly broker: LeaseBroker,
    private readonly maps: DigestMaps,
  ) {}

  /**
   * Starts every queued job that may start now (`jobs`: the active jobs, oldest first; `sweeping`: the
   * volume locks of source snapshot sweeps in flight).
   */
  dispatch(jobs: JobRecord[], sweeping: Pick<ReadonlySet<string>, "has">): void {
    const active = jobs.filter((j) => !isFinal(j.state));
    const counts = runningCounts(active);
    const held = heldLocks(active);
    const ids = new Set(active.map((j) => j.id));
    this.maps.prune(ids);
    for (const id of this.#noAgent.keys()) if (!ids.has(id)) this.#noAgent.delete(id);
    for (const j of active) {
      if (j.state !== JobState.JOB_STATE_QUEUED) continue;
      const sweep = j.locks.some((k) => sweeping.has(k));
      const blocker = takeLocks(held, j);
      const placed = blocker
        ? waiting(`waiting for job ${blocker}, which uses the same volume or backup`)
        : sweep
          ? waiting("waiting for the source snapshot sweep of its volume (after the volume's previous job)")
          : this.#place(j, counts);
      if ("reason" in placed) {
        if (!this.#waitedTooLong(j, placed)) wait(this.ctx, j, placed.reason);
      } else {
        this.#noAgent.delete(j.id);
        this.#start(j, placed, counts);
      }
    }
  }

  /**
   * A job that waits for an agent of a cluster to connect (a site down) is failed UNAVAILABLE once it has
   * waited scheduler.placementTimeoutMs: queued without end, it held its place and every later job of its
   * volume (a backup to a healthy site, a delete, a restore) waited behind it. Returns whether it failed.
   */
  #waitedTooLong(j: JobRecord, { reason, noAgentOf }: Waiting): boolean {
    const { ctx } = this;
    if (!noAgentOf) {
      this.#noAgent.delete(j.id);
      return false;
    }
    const now = ctx.now();
    const w = this.#noAgent.get(j.id);
    // Counted afresh for another cluster, and after a gap in the passes (a standby's term in between:
    // passes come at least every 30 s while this coordinator leads).
    if (!w || w.cluster !== noAgentOf || now - w.seen > PASS_GAP_MS) {
      this.#noAgent.set(j.id, { cluster: noAgentOf, since: now, seen: now });
      return false;
    }
    w.seen = now;
    const limit = ctx.cfg.placementTimeoutMs;
    if (limit <= 0 || now - w.since < limit) return false;
    this.#noAgent.delete(j.id);
    const mins = Math.round((now - w.since) / 60_000);
    finish(
      ctx,
      j,
      JobState.JOB_STATE_FAILED,
      Status.UNAVAILABLE,
      `${reason}: no such agent for ${mins} min (scheduler.placementTimeoutMs ${limit} ms); the job is failed rather than left queued, holding up its volume's later jobs — submit it again once the cluster's agents are back`,
    );
    return true;
  }

  /** Where the job runs now, or why it cannot run yet. */
  #place(j: JobRecord, counts: RunningCounts): Placement | Waiting {
    const { cfg, sessions } = this.ctx;
    if (j.nextAttemptAt > this.ctx.now()) return waiting(retryReason(j.nextAttemptAt));
    const full = clustersOf(j).find((c) => (counts.byCluster.get(c) ?? 0) >= cfg.perClusterLimit);
    if (full) return waiting(`cluster ${full} already runs ${cfg.perClusterLimit} jobs (its limit)`);
    const load = (s: AgentSession) => counts.byAgent.get(s.agentId) ?? 0;
    const connected = sessions.ofCluster(j.execCluster);
    // An agent shutting down takes no new lease (it would refuse it).
    const ofCluster = connected.filter((s) => !s.draining);
    const agent = ofCluster.filter((s) => load(s) < s.info.capacity).sort((a, b) => load(a) - load(b))[0];
    if (!agent) {
      if (ofCluster.length) return waiting(`every agent of cluster ${j.execCluster} is at its capacity`);
      return connected.length
        ? noAgent(j.execCluster, `every agent of cluster ${j.execCluster} is shutting down; waiting for one to connect`)
        : noAgent(j.execCluster);
    }
    if (j.operation.kind === "verify" && j.operation.mode === VerifyMode.VERIFY_MODE_SOURCE) {
      const b = this.ctx.catalog.getBackup(j.backupId);
      if (!b?.location || !b.volume) return { agent, peer: null }; // leaseOperation fails the job
      const map = this.maps.ready(j, b as Located);
      return map instanceof Uint8Array ? { agent, peer: null, digestMap: map } : map;
    }
    if (!j.peerCluster || j.peerCluster === j.execCluster) return { agent, peer: null };
    const peers = sessions.ofCluster(j.peerCluster).filter((s) => !s.draining);
    // A retry goes back to the last attempt's peer while it is there (model.ts lastPeerAgent); else the least busy.
    const peer = peers.find((s) => s.agentId === j.lastPeerAgent) ?? peers.sort((a, b) => a.jobs.size - b.jobs.size)[0];
    return peer ? { agent, peer } : noAgent(j.peerCluster);
  }

  #start(j: JobRecord, { agent, peer, digestMap }: Placement, counts: RunningCounts): void {
    let op: LeaseMsg["operation"];
    try {
      const runner = { agent, attempt: j.attempts + 1, signer: this.ctx.signer, digestMap };
      op = leaseOperation(this.ctx.catalog, j, peer, runner);
      this.maps.drop(j.id);
    } catch (e) {
      // The catalog failing for now (PostgreSQL unreachable, a fenced write) is not the job's fault: it
      // stays queued and the next pass tries again. Anything else means the job cannot be leased.
      if (e instanceof AppError && (e.status === Status.UNAVAILABLE || e.status === Status.ABORTED)) {
        this.ctx.log.warn("could not build a job's lease; it stays queued", { job: j.id, err: e });
        return;
      }
      finish(this.ctx, j, JobState.JOB_STATE_FAILED, Status.FAILED_PRECONDITION, (e as Error).message);
      return;
    }
    if (peer) j.lastPeerAgent = peer.agentId;
    this.broker.issue(j, agent, op);
    countRunning(counts, j, agent.agentId);
  }
}

/** Who holds (or has claimed) a locked resource: one job exclusively, or jobs that share it. */
interface Holders {
  exclusive?: string;
  shared: string[];
}

/** Resource → the running jobs that hold it (jobs.ts: exclusive and shared locks). */
function heldLocks(active: JobRecord[]): Map<string, Holders> {
  const held = new Map<string, Holders>();
  for (const j of active) if (j.state === JobState.JOB_STATE_RUNNING) claim(held, j);
  return held;
}

/** j's claims: an exclusive lock unless another job claimed it first; a shared one unless an exclusive was. */
function claim(held: Map<string, Holders>, j: JobRecord): void {
  for (const k of j.locks) {
    const r = lockedResource(k);
    const h = held.get(r) ?? { shared: [] };
    held.set(r, h);
    if (!isSharedLock(k)) h.exclusive ??= j.id;
    else if (h.exclusive === undefined) h.shared.push(j.id);
  }
}

/**
 * The job that holds one of j's locks in a way j's lock excludes, if any; j then claims its locks, so
 * that later jobs wait for it (first come, first served: a DELETE waiting for a backup's readers holds
 * off the readers queued after it).
 */
function takeLocks(held: Map<string, Holders>, j: JobRecord): string | undefined {
  let blocker: string | undefined;
  for (const k of j.locks) {
    const h = held.get(lockedResource(k));
    if (!h) continue;
    const by = isSharedLock(k) ? h.exclusive : (h.exclusive ?? h.shared[0]);
    if (by !== undefined && by !== j.id) blocker ??= by;
  }
  claim(held, j);
  return blocker;
}
