/**
 * The scheduler owns job state after creation: the queue, leases, retries and limits. This class is a
 * façade over its parts, so that the API, the session service and the metrics see one object:
 *
 *  - dispatcher.ts: which queued job starts now, where (locks, per-cluster and per-agent limits);
 *  - lease-broker.ts: leases issued, renewed, expired and claimed again; token checks; fencing;
 *  - transitions.ts: every change of a job's state (retries with backoff, finish, success, cancel);
 *  - confirmation.ts: a backup made is AVAILABLE only once an agent of its destination confirms it;
 *  - retry-policy.ts: which failures get another attempt, after how long;
 *  - snapshot-hygiene.ts: after a backup or delete ends, the source volume keeps only the backup
 *    snapshots a live chain needs (hygiene-plan.ts decides);
 *  - operation.ts: the request an attempt runs, with the chain policy and its transfer capability
 *    (capabilities.ts); progress.ts: live progress.
 *
 * Everything is level-triggered: tick() compares the catalog with the connected agents and converges;
 * it runs whenever something changed (kick(): a job queued, an outcome, an agent registered or gone, an
 * answer) and on a timer that each tick sets to the next time something falls due by itself (nextWake():
 * a lease's expiry, a retry's backoff, a confirmation's next check or deadline, a sweep's retry). While
 * a queued job waits for something no event announces (a limit, a lock) the timer keeps the old cadence
 * (cfg.tickMs); with nothing due it still fires every SAFETY_PASS_MS at least, so a missed kick delays
 * work, never blocks it. Every step is safe to repeat. Time and randomness come from the deps, so a test
 * drives the clock and calls tick() itself.
 */
import { EventEmitter } from "node:events";
import type { Status } from "nice-grpc-common";
import { JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { HeldLease, JobOutcome, JobProgressReport } from "../../gen/rbdbackup/v1/session";
import type { JobRecord } from "../model";
import type { AgentSession } from "../sessions";
import { Confirmer } from "./confirmation";
import type { SchedulerContext, SchedulerDeps, SchedulerEvents } from "./context";
import { DigestMaps } from "./digest-maps";
import { Dispatcher } from "./dispatcher";
import { type RunningCounts, runningCounts } from "./jobs";
import { LeaseBroker } from "./lease-broker";
import type { LiveProgress } from "./progress";
import { SnapshotHygiene } from "./snapshot-hygiene";
import { StallWatch } from "./stall-watch";
import { abandon, cancel } from "./transitions";
import { SAFETY_PASS_MS, WakeTimer } from "./wake-timer";

/** The longest the scheduler sleeps with nothing due (a safety pass: a kick some path forgot). */

export class Scheduler extends EventEmitter<SchedulerEvents> {
  readonly progress = new Map<string, LiveProgress>();
  readonly cfg: SchedulerDeps["cfg"];
  readonly #ctx: SchedulerContext;
  readonly #broker: LeaseBroker;
  readonly #dispatcher: Dispatcher;
  readonly #confirmer: Confirmer;
  readonly #maps: DigestMaps;
  readonly #hygiene: SnapshotHygiene;
  /**
   * Its `next`: what the last tick found next due (nextWake). Armed by each tick (a kick's tick never
   * pushes back an earlier wake-up); no longest sleep of its own: #nextWake caps what is due at
   * SAFETY_PASS_MS, and the polling cadence (cfg.tickMs, up to a minute) is kept as configured.
   */
  readonly #wake: WakeTimer;
  #kicked = false;
  #stopped = false;
  /** Events emitted through the context so far (tick(): did this pass change a job?). */
  #announced = 0;

  constructor(deps: SchedulerDeps) {
    super();
    this.setMaxListeners(0);
    this.cfg = deps.cfg;
    this.#ctx = {
      catalog: deps.catalog,
      sessions: deps.sessions,
      cfg: deps.cfg,
      log: deps.log,
      now: deps.now ?? Date.now,
      random: deps.random ?? Math.random,
      signer: deps.signer,
      progress: this.progress,
      emit: (event, ...args) => {
        this.#announced++;
        // biome-ignore lint/suspicious/noExplicitAny: EventEmitter's typed emit cannot take a generic event
        this.emit(event, ...(args as any));
      },
      kick: () => this.kick(),
      leading: deps.leading ?? (() => true),
    };
    // The coordinator's own stalls are watched on a real clock; a test that drives the clock passes a
    // watch of its own, or none.
    const stall = deps.stallWatch !== undefined ? deps.stallWatch : deps.now ? null : new StallWatch();
    this.#broker = new LeaseBroker(this.#ctx, stall);
    this.#maps = new DigestMaps(this.#ctx);
    this.#dispatcher = new Dispatcher(this.#ctx, this.#broker, this.#maps);
    this.#confirmer = new Confirmer(this.#ctx);
    this.#hygiene = new SnapshotHygiene(this.#ctx);
    this.#wake = new WakeTimer(() => this.tick(), {
      now: this.#ctx.now,
      keepEarlier: true,
      maxSleepMs: Number.POSITIVE_INFINITY,
    });
    this.on("finished", (j) => this.#hygiene.onFinished(j));
  }

  /**
   * After a restart: running jobs get one lease time and the reconnect grace for their agents to reconnect
   * and claim them. In one transaction: all or nothing, and on PostgreSQL one commit instead of one per
   * running job (at a takeover this runs before the next renewal of the lease: 200 fenced writes of ~20 ms
   * outlasted it, and the new leader stepped down again).
   */
  start(): void {
    this.#ctx.catalog.transaction(() => {
      this.#broker.recover();
      this.#confirmer.recover();
    });
    this.#broker.start();
    this.#wake.start();
    this.kick();
  }

  stop(): void {
    this.#stopped = true;
    this.#broker.stop();
    this.#wake.stop();
  }

  /**
   * When the last tick found the next thing due by itself (epoch ms): the earliest lease expiry, queued
   * retry, confirmation check or deadline, sweep retry; `now + cfg.tickMs` while something waits that
   * only polling notices; at most `now + SAFETY_PASS_MS`.
   */
  get nextWake(): number {
    return this.#wake.next;
  }

  /** The next wake-up after a tick at `now` over the active `jobs`. */
  #nextWake(jobs: JobRecord[], now: number): number {
    let at = Math.min(this.#broker.nextExpiry(jobs), this.#confirmer.nextAt(jobs), this.#hygiene.nextAt());
    for (const j of jobs) if (j.state === JobState.JOB_STATE_QUEUED) at = Math.min(at, j.nextAttemptAt);
    // Due already yet not done (a queued job held by a limit or a lock, an agent awaited, a check in
    // flight): polled at the configured cadence, as before.
    if (at <= now) return now + this.cfg.tickMs;
    return Math.min(at, now + SAFETY_PASS_MS);
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

  /**
   * One pass: expired leases fail their attempts, due confirmations are asked, due source snapshot
   * sweeps start (a sweep holds its volume's lock), then queued jobs start where they may.
   *
   * One read of the active jobs when the pass changed nothing (the common case while queued jobs wait on
   * a limit or a lock, or leases run on): every change of a job is announced (an event through the
   * context: transitions.ts, lease-broker.ts issue), and only those events run code outside these parts,
   * so a pass that announced nothing left the catalog's active jobs as it read them. A pass that changed
   * something reads them again: a part may have changed a job through another copy of it than `jobs`
   * (the confirmer applies a verdict to `activeJob(id)`), and an event's listener may queue a job.
   */
  tick(): void {
    if (this.#stopped) return;
    const now = this.#ctx.now();
    let wake = now + this.cfg.tickMs;
    try {
      let jobs = this.#ctx.catalog.activeJobs();
      let announced = this.#announced;
      this.#broker.expire(jobs);
      this.#confirmer.run(jobs);
      if (this.#hygiene.waiting) {
        if (this.#announced !== announced) [jobs, announced] = [this.#ctx.catalog.activeJobs(), this.#announced];
        this.#hygiene.run(jobs);
      }
      this.#dispatcher.dispatch(jobs, this.#hygiene.sweeping);
      const after = this.#announced === announced ? jobs : this.#ctx.catalog.activeJobs();
      wake = this.#nextWake(after, now);
    } catch (err) {
      this.#ctx.log.error("scheduler tick failed", { err });
    }
    this.#wake.next = wake;
    this.#wake.arm(now);
  }

  /** Resolves when no confirmation question, digest map fetch nor snapshot sweep is in flight (tests drive the clock and await this). */
  async settle(): Promise<void> {
    await Promise.all([this.#confirmer.settle(), this.#maps.settle()]);
    await this.#hygiene.settle();
  }

  /** Running jobs by cluster (each job counts on every cluster it touches) and by agent. */
  runningCounts(jobs: JobRecord[]): RunningCounts {
    return runningCounts(jobs);
  }

  /** Cancels a job: at once when queued; a running one is asked to stop and ends when its agent reports. */
  /** `reason`: the message a queued job ends with ("cancelled" unless told). */
  cancel(j: JobRecord, reason?: string): JobRecord {
    return cancel(this.#ctx, j, reason);
  }

  /** Keeps the backup's source snapshot from the sweeps while a SOURCE verify of it is admitted (snapshot-hygiene.ts). */
  holdForVerify(backupId: string, volume: VolumeRef, signal: AbortSignal): Promise<() => void> {
    return this.#hygiene.holdForVerify(backupId, volume, signal);
  }

  /** Fails a queued or running job from the coordinator's side (see transitions.ts abandon). */
  fail(j: JobRecord, code: Status, message: string): void {
    abandon(this.#ctx, j, code, message);
  }

  // ---- agent reports (see lease-broker.ts) ----

  onRegister(session: AgentSession, leases: HeldLease[], previousClientAddrs = ""): string[] {
    return this.#broker.onRegister(session, leases, previousClientAddrs);
  }

  onHeartbeat(session: AgentSession, leases: HeldLease[]): string[] {
    return this.#broker.onHeartbeat(session, leases);
  }

  onProgress(session: AgentSession, r: JobProgressReport): void {
    this.#broker.onProgress(session, r);
  }

  /** An attempt's result; a backup made is confirmed with its destination at once (see confirmation.ts). */
  onOutcome(session: AgentSession, o: JobOutcome): boolean {
    // Any outcome forgets an earlier attempt's list first (a final failure ends the job, and starts its
    // sweep, inside the broker); only the current holder's successful outcome gives a new one.
    this.#hygiene.forget(o.jobId);
    const current = this.#broker.onOutcome(session, o);
    if (current && o.code === 0 && this.#ctx.catalog.activeJob(o.jobId)) this.#hygiene.listed(o);
    // Only this job can have become due for a confirmation (the tick starts the others): one row read,
    // not every active job parsed per outcome (a backlog of 10k jobs: ~27 ms each).
    const j = current && !this.#stopped ? this.#ctx.catalog.activeJob(o.jobId) : undefined;
    if (j) this.#confirmer.run([j]);
    return current;
  }

  onDisconnect(session: AgentSession): void {
    this.#broker.onDisconnect(session);
  }
}
