/**
 * The lease broker: a job runs on an agent as a lease (job id, attempt, token, expiry). The broker
 * issues leases, renews them on heartbeats and re-registration, expires them, and is the one place that
 * checks a report's token — a report for a lease that is not the job's current one is refused.
 *
 * Fencing: an agent that is gone (not merely slow) may still hold the volume's lock through its Ceph
 * client; its client addresses go with the job, and the next attempt's agent blocklists them first.
 *
 * Renewals by heartbeat live in memory (`#renewed`, by token): a heartbeat changes no job's state, so
 * it writes no row. The catalog keeps the expiry of the lease's issue (or last registration); after a
 * restart `recover()` gives every running lease one lease time and RECONNECT_GRACE_MS from then, so
 * nothing is lost and a live agent slow to reach a new leader is not fenced.
 */
import { randomUUID } from "node:crypto";
import { Status } from "nice-grpc-common";
import { statusOf } from "../../common/errors";
import { PARTLY_OVERWRITTEN } from "../../common/outcome-words";
import { JobKind, JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { HeldLease, JobOutcome, JobProgressReport, Lease as LeaseMsg } from "../../gen/rbdbackup/v1/session";
import { type JobRecord, sameToken } from "../model";
import type { AgentSession } from "../sessions";
import { FENCE_SECONDS, RECONNECT_GRACE_MS } from "./config";
import type { SchedulerContext } from "./context";
import { nextProgress } from "./progress";
import type { StallWatch } from "./stall-watch";
import { attemptFailed, awaitConfirmation, backupGone, changed, finish, succeeded } from "./transitions";

/** Attempts refused by agents shutting down that one job gets back, at most (then they count). */
export const MAX_REFUNDED_ATTEMPTS = 10;

export class LeaseBroker {
  /** Lease token → its expiry as last renewed by a heartbeat (not written to the catalog). */
  readonly #renewed = new Map<string, number>();

  constructor(
    private readonly ctx: SchedulerContext,
    /** The coordinator's own stalls (stall-watch.ts); null: not watched (a test driving the clock). */
    private readonly stall: StallWatch | null = null,
  ) {}

  /** Starts watching for the coordinator's stalls (its own timer). */
  start(): void {
    // The watch's own timer: a catalog that does not answer (the stall's likely cause) must not throw out
    // of it and take the process down — the time is owed and given back by the next tick's expire().
    this.stall?.start((ms) => {
      try {
        this.#payBack(ms);
      } catch (err) {
        this.#owed += ms;
        this.ctx.log.warn("could not give running leases a stall's time back yet (the catalog failed)", { err });
      }
    });
  }

  /** Stall time not yet given back (the catalog failed when the watch reported it). */
  #owed = 0;

  /** Gives `ms` of stall back to the running leases, with what is still owed. */
  #payBack(ms: number): void {
    const stalled = ms + this.#owed;
    if (stalled <= 0) return;
    this.#giveBack(stalled);
    this.#owed = 0;
  }

  stop(): void {
    this.stall?.stop();
  }

  /**
   * The coordinator did not run for `ms` (stall-watch.ts): its agents were not heard, not silent. Every
   * running lease gets that time back, in memory like a heartbeat's renewal.
   */
  #giveBack(ms: number): void {
    let leases = 0;
    for (const j of this.ctx.catalog.activeJobs()) {
      if (j.state !== JobState.JOB_STATE_RUNNING || !j.lease) continue;
      this.#renewed.set(j.lease.token, this.#expiresAt(j.lease) + ms);
      leases++;
    }
    this.ctx.log.warn("the coordinator did not run for a while; its running leases get that time back", {
      stalledMs: ms,
      leases,
    });
  }

  /** When the lease expires: the later of its catalog expiry and its last in-memory renewal. */
  #expiresAt(lease: NonNullable<JobRecord["lease"]>): number {
    return Math.max(lease.expiresAt, this.#renewed.get(lease.token) ?? 0);
  }

  /**
   * After a restart or at a new leader's term: running jobs get one lease time and RECONNECT_GRACE_MS
   * for their agents to reconnect and claim them — again at a later term only when the agent did
   * (Lease.gracedUntil): a leader that flaps every few seconds must not push a dead agent's lease on forever.
   */
  recover(): void {
    const now = this.ctx.now();
    const ttl = this.ctx.cfg.leaseTtlMs + RECONNECT_GRACE_MS;
    for (const j of this.ctx.catalog.activeJobs()) {
      const lease = j.lease;
      if (j.state !== JobState.JOB_STATE_RUNNING || !lease) continue;
      // Graced by an earlier term and not claimed since (a claim, #renew at registration, clears the mark
      // and moves expiresAt); a mark of an older coordinator: graced at gracedAt with one lease time.
      if (lease.gracedUntil !== undefined && lease.expiresAt <= lease.gracedUntil) continue;
      if (lease.gracedAt !== undefined && lease.expiresAt <= lease.gracedAt + this.ctx.cfg.leaseTtlMs) continue;
      lease.expiresAt = Math.max(lease.expiresAt, now + ttl);
      lease.gracedUntil = lease.expiresAt;
      delete lease.gracedAt;
      this.ctx.catalog.updateJob(j);
    }
  }

  /** Starts an attempt of a queued job on `agent`: the job is RUNNING under a new token. */
  issue(j: JobRecord, agent: AgentSession, operation: LeaseMsg["operation"]): void {
    const { ctx } = this;
    const now = ctx.now();
    const token = randomUUID();
    j.attempts++;
    j.state = JobState.JOB_STATE_RUNNING;
    j.lease = { token, attempt: j.attempts, agentId: agent.agentId, expiresAt: now + ctx.cfg.leaseTtlMs };
    j.agentId = agent.agentId;
    j.waitingReason = "";
    if (!j.startedAt) j.startedAt = now;
    try {
      ctx.catalog.updateJob(j);
    } catch (e) {
      // PostgreSQL: a write abandoned at its deadline (UNAVAILABLE) may have committed all the same. Then
      // the job is RUNNING under this token, and its agent must get the lease — else the attempt expires
      // unrun, and a one-attempt EXPORT or IMPORT fails. Not committed: the error stands (still queued).
      if (statusOf(e) !== Status.UNAVAILABLE || !this.#holds(j.id, token)) throw e;
      ctx.log.warn("a lease's write answered UNAVAILABLE but had committed; the lease is sent", { job: j.id });
    }
    agent.jobs.add(j.id);
    agent.send({
      $case: "lease",
      value: {
        jobId: j.id,
        attempt: j.attempts,
        token,
        ttlMs: ctx.cfg.leaseTtlMs,
        operation,
        fenceClientAddrs: j.fence ?? [],
        fenceSeconds: FENCE_SECONDS,
      },
    });
    ctx.log.info("job leased", { job: j.id, attempt: j.attempts, agent: agent.agentId, kind: JobKind[j.kind] });
    ctx.emit("attempt", j);
    changed(ctx, j);
  }

  /** Whether the catalog has job `id` RUNNING under `token` (false when it cannot be read either). */
  #holds(id: string, token: string): boolean {
    try {
      const now = this.ctx.catalog.getJob(id);
      return now?.state === JobState.JOB_STATE_RUNNING && now.lease?.token === token;
    } catch {
      return false;
    }
  }

  /** When the first lease among `jobs` expires (Infinity: none running under a lease). */
  nextExpiry(jobs: JobRecord[]): number {
    let at = Number.POSITIVE_INFINITY;
    for (const j of jobs)
      if (j.state === JobState.JOB_STATE_RUNNING && j.lease) at = Math.min(at, this.#expiresAt(j.lease));
    return at;
  }

  /** Fails the attempts whose lease has expired (the jobs are updated in place). */
  expire(jobs: JobRecord[]): void {
    // A stall just ended (this pass's timer may run before the watch's): its time is given back first.
    this.#payBack(this.stall?.take() ?? 0);
    this.#forgetEnded(jobs);
    const now = this.ctx.now();
    for (const j of jobs) {
      const lease = j.lease;
      if (j.state !== JobState.JOB_STATE_RUNNING || !lease || this.#expiresAt(lease) >= now) continue;
      this.ctx.log.warn("lease expired", { job: j.id, attempt: lease.attempt, agent: lease.agentId });
      const s = this.ctx.sessions.get(lease.agentId);
      s?.jobs.delete(j.id);
      // Gone (not merely slow): its Ceph client may still hold the volume's lock; fence it.
      if (!s) fence(j, this.ctx.catalog.listAgents().find((a) => a.agentId === lease.agentId)?.cephClientAddrs);
      const why = `the lease of attempt ${lease.attempt} expired: agent ${lease.agentId} stopped reporting`;
      if (j.operation.kind === "delete") j.deleteFateUnknown = true;
      attemptFailed(this.ctx, j, Status.UNAVAILABLE, why);
      // Still connected but silent (a stalled agent): once the expiry is written (a deposed leader's write
      // fails first, and its agents' attempts go on), the agent is told to stop that attempt, so that it
      // does as soon as it reads its stream again, not only when a heartbeat's answer revokes the token.
      s?.send({ $case: "cancel", value: { jobId: j.id, token: lease.token, reason: "its lease expired" } });
      // Once its end is written (fenced): a deposed leader's expiry is not counted.
      this.ctx.emit("leaseExpired", j);
    }
  }

  /** A (re)registered agent: its listed leases are renewed when still current; returns the stale ones. */
  onRegister(session: AgentSession, leases: HeldLease[], previousClientAddrs = ""): string[] {
    const listed = new Set<string>();
    const revoked = this.#renew(session, leases, true, (j, l) => {
      listed.add(j.id);
      if (j.cancelRequested)
        session.send({ $case: "cancel", value: { jobId: j.id, token: l.token, reason: "cancelled by a user" } });
    });
    // Attempts this agent held but no longer lists (it restarted): failed now, not at lease expiry.
    for (const j of this.ctx.catalog.activeJobs()) {
      if (j.state === JobState.JOB_STATE_RUNNING && j.lease?.agentId === session.agentId && !listed.has(j.id)) {
        if (previousClientAddrs !== session.info.cephClientAddrs) fence(j, previousClientAddrs);
        if (j.operation.kind === "delete") j.deleteFateUnknown = true;
        attemptFailed(
          this.ctx,
          j,
          Status.UNAVAILABLE,
          `agent ${session.agentId} restarted and lost attempt ${j.attempts}`,
        );
      }
    }
    this.ctx.kick();
    return revoked;
  }

  /** A heartbeat renews the leases it lists; returns the tokens that are no longer current. */
  onHeartbeat(session: AgentSession, leases: HeldLease[]): string[] {
    return this.#renew(session, leases, false, () => {});
  }

  onDisconnect(session: AgentSession): void {
    // Its leases stay until they expire: the agent may reconnect and claim them.
    this.ctx.log.info("agent disconnected", { agent: session.agentId, jobs: [...session.jobs] });
    this.ctx.kick();
  }

  /** Progress of a current attempt; reports of stale attempts are dropped. */
  onProgress(session: AgentSession, r: JobProgressReport): void {
    const j = this.#current(r.jobId, r.token, session);
    if (!j) return;
    this.ctx.progress.set(j.id, nextProgress(this.ctx.progress.get(j.id), r, this.ctx.now()));
    this.ctx.emit("progress", j.id);
  }

  /** An attempt's result. False when its token is stale (the report is ignored). */
  onOutcome(session: AgentSession, o: JobOutcome): boolean {
    session.jobs.delete(o.jobId);
    const j = this.#current(o.jobId, o.token, session);
    if (!j) {
      this.ctx.log.warn("ignored the outcome of a stale attempt", { job: o.jobId, agent: session.agentId });
      return false;
    }
    // Said by the job's end whatever path it takes (a cancel's "cancelled" included): transitions.ts finish.
    // (Agents' messages reach the scheduler only here: attemptFailed's other callers word their own.)
    if (o.code !== Status.OK && o.message.includes(PARTLY_OVERWRITTEN)) j.targetOverwritten = true;
    if (o.code === Status.OK) this.#succeeded(j, o);
    else if (o.refused && !j.cancelRequested && (j.refundedAttempts ?? 0) < MAX_REFUNDED_ATTEMPTS) {
      // Refused before any work (the agent is shutting down): the attempt is given back.
      j.refundedAttempts = (j.refundedAttempts ?? 0) + 1;
      session.draining = true;
      attemptFailed(this.ctx, j, o.code as Status, o.message);
    } else if (j.operation.kind === "delete" && o.result?.$case === "delete") {
      // The delete removed the backup's snapshot, then failed: the backup is gone, whatever the job's end
      // (a failure or a cancel must not make it AVAILABLE again); the retry removes what is left.
      backupGone(this.ctx, j, o.result.value.warnings.concat(`the delete did not finish: ${o.message}`));
      if (j.cancelRequested) finish(this.ctx, j, JobState.JOB_STATE_CANCELLED, Status.CANCELLED, "cancelled");
      else attemptFailed(this.ctx, j, o.code as Status, o.message);
    } else if (j.cancelRequested) finish(this.ctx, j, JobState.JOB_STATE_CANCELLED, Status.CANCELLED, "cancelled");
    else if (o.code === Status.CANCELLED) {
      // CANCELLED means CancelJob's (backup_service.proto): an attempt the agent's side called off (its
      // shutdown, a peer that reset the stream) is a failed attempt, retried while attempts remain.
      attemptFailed(this.ctx, j, Status.ABORTED, `the attempt was called off on the agents' side: ${o.message}`);
    } else attemptFailed(this.ctx, j, o.code as Status, o.message);
    this.ctx.kick();
    return true;
  }

  /**
   * A backup made (or imported) is confirmed with its destination first, a restore with its target
   * cluster; deletes, flattens and exports succeed at once (the agent that ran one is an agent of the
   * cluster that holds the data), and so do verifications (they change no data; their finding is the result).
   */
  #succeeded(j: JobRecord, o: JobOutcome): void {
    const kind = j.operation.kind;
    // Each succeeds only with its own result: a delete without one would leave its backup DELETING for good.
    if ((kind === "delete" || kind === "flatten" || kind === "export" || kind === "verify") && o.result?.$case === kind)
      succeeded(this.ctx, j, o);
    else if ((kind === "backup" || kind === "import") && o.result?.$case === "backup")
      awaitConfirmation(this.ctx, j, o.result);
    else if (kind === "restore" && o.result?.$case === "restore") awaitConfirmation(this.ctx, j, o.result);
    else {
      const why = `agent ${j.lease?.agentId} reported a ${kind} done without its result`;
      attemptFailed(this.ctx, j, Status.INTERNAL, why);
    }
  }

  /** Drops the in-memory renewals of leases that are no longer a running job's current one. */
  #forgetEnded(active: JobRecord[]): void {
    if (this.#renewed.size === 0) return;
    const live = new Set<string>();
    for (const j of active) if (j.state === JobState.JOB_STATE_RUNNING && j.lease) live.add(j.lease.token);
    for (const token of this.#renewed.keys()) if (!live.has(token)) this.#renewed.delete(token);
  }

  /**
   * The running job whose current lease has this token (from the catalog's active jobs: no query in
   * SQLite), as `session` may speak for it: an agent of the job's cluster (a lease may pass between the
   * agents of one cluster — a restarted agent, a second one — never to another cluster's). Tokens are
   * compared in constant time.
   */
  #current(jobId: string, token: string, session: AgentSession): JobRecord | undefined {
    const j = this.ctx.catalog.activeJob(jobId);
    if (j?.state !== JobState.JOB_STATE_RUNNING || !j.lease || j.execCluster !== session.info.clusterName)
      return undefined;
    return sameToken(j.lease.token, token) ? j : undefined;
  }

  /**
   * Renews each listed lease that is current (now held by `session`); returns the tokens of the others.
   * The job is written when `persist` (a registration) or when the lease changes hands; otherwise the
   * renewal is kept in memory only.
   */
  #renew(
    session: AgentSession,
    leases: HeldLease[],
    persist: boolean,
    onRenewed: (j: JobRecord, l: HeldLease) => void,
  ): string[] {
    const revoked: string[] = [];
    const until = this.ctx.now() + this.ctx.cfg.leaseTtlMs;
    for (const l of leases) {
      const j = this.#current(l.jobId, l.token, session);
      if (!j?.lease) {
        revoked.push(l.token);
        continue;
      }
      this.#renewed.set(j.lease.token, until);
      if (persist || j.lease.agentId !== session.agentId) {
        j.lease.agentId = session.agentId;
        j.lease.expiresAt = until;
        // Claimed: the next term graces it again (recover), however soon after its grace this came.
        delete j.lease.gracedUntil;
        delete j.lease.gracedAt;
        this.ctx.catalog.updateJob(j);
      }
      session.jobs.add(j.id);
      onRenewed(j, l);
    }
    return revoked;
  }
}

/** Remembers a dead agent's Ceph client for the next attempt to blocklist (the caller saves the job). */
function fence(j: JobRecord, addrs: string | undefined): void {
  if (!addrs) return;
  j.fence = [...new Set([...(j.fence ?? []), addrs])];
}
