/**
 * The scheduler as the long-lived parts of the coordinator see it (the API, the agents' session service,
 * the metrics, the interchange relays), while schedulers come and go with leadership terms: each term
 * builds a fresh Scheduler from the catalog (term.ts) and attaches it here; stepping down detaches it.
 *
 * Events of the attached scheduler are re-emitted (those of a detached one are dropped). Without a
 * scheduler (a standby) there is nothing to dispatch: `kick` does nothing, live progress is empty, and
 * what needs the scheduler (cancel, fail) is UNAVAILABLE — the standby gate refuses those calls first.
 * Reports of an agent session go to the scheduler only while that session is still registered: a
 * session of a past term (closed at step-down) never reaches the next term's scheduler.
 */
import { EventEmitter } from "node:events";
import type { Status } from "nice-grpc-common";
import { unavailable } from "../../common/errors";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { HeldLease, JobOutcome, JobProgressReport } from "../../gen/rbdbackup/v1/session";
import type { JobRecord } from "../model";
import type { LiveProgress, RunningCounts, Scheduler, SchedulerEvents } from "../scheduler";
import { runningCounts } from "../scheduler/jobs";
import type { AgentSession, Sessions } from "../sessions";

/** What the relay stands in for: the part of the Scheduler the API, interchange and metrics use. */
export type SchedulerSurface = Pick<
  Scheduler,
  "progress" | "kick" | "cancel" | "fail" | "holdForVerify" | "runningCounts" | "on" | "off"
>;

const EVENTS: (keyof SchedulerEvents)[] = ["job", "progress", "finished", "attempt", "retry", "leaseExpired"];
const NO_PROGRESS: ReadonlyMap<string, LiveProgress> = new Map();

export class SchedulerRelay extends EventEmitter<SchedulerEvents> {
  #current: Scheduler | null = null;

  constructor(
    readonly cfg: Scheduler["cfg"],
    private readonly sessions: Sessions,
  ) {
    super();
    this.setMaxListeners(0);
  }

  /**
   * The relay typed as the Scheduler surface it implements. (A cast only because EventEmitter's `on`
   * returns `this`, which TypeScript reads as Scheduler in a Pick of Scheduler.)
   */
  surface(): SchedulerSurface {
    return this as unknown as SchedulerSurface;
  }

  /** The scheduler of the term in force; null on a standby. */
  get current(): Scheduler | null {
    return this.#current;
  }

  /** Makes `s` the scheduler in force and relays its events. */
  attach(s: Scheduler): void {
    this.#current = s;
    for (const event of EVENTS) {
      s.on(event, (...args: unknown[]) => {
        // biome-ignore lint/suspicious/noExplicitAny: EventEmitter's typed emit cannot take a generic event
        if (this.#current === s) this.emit(event, ...(args as any));
      });
    }
  }

  /** Forgets the scheduler (the caller stops it). */
  detach(): void {
    this.#current = null;
  }

  get progress(): Map<string, LiveProgress> {
    return (this.#current?.progress ?? NO_PROGRESS) as Map<string, LiveProgress>;
  }

  kick(): void {
    this.#current?.kick();
  }

  runningCounts(jobs: JobRecord[]): RunningCounts {
    return runningCounts(jobs);
  }

  #leader(what: string): Scheduler {
    if (!this.#current) throw unavailable(`${what}: this coordinator is not the leader`);
    return this.#current;
  }

  cancel(j: JobRecord, reason?: string): JobRecord {
    return this.#leader("cancel a job").cancel(j, reason);
  }

  fail(j: JobRecord, code: Status, message: string): void {
    this.#leader("fail a job").fail(j, code, message);
  }

  holdForVerify(backupId: string, volume: VolumeRef, signal: AbortSignal): Promise<() => void> {
    return this.#leader("verify a backup at its source").holdForVerify(backupId, volume, signal);
  }

  // ---- agent reports: only from a session registered now, to the scheduler in force ----

  #of(session: AgentSession): Scheduler | null {
    return this.sessions.get(session.agentId) === session ? this.#current : null;
  }

  onRegister(session: AgentSession, leases: HeldLease[], previousClientAddrs = ""): string[] {
    return this.#leader("register an agent").onRegister(session, leases, previousClientAddrs);
  }

  onHeartbeat(session: AgentSession, leases: HeldLease[]): string[] {
    return this.#of(session)?.onHeartbeat(session, leases) ?? [];
  }

  onProgress(session: AgentSession, r: JobProgressReport): void {
    this.#of(session)?.onProgress(session, r);
  }

  onOutcome(session: AgentSession, o: JobOutcome): boolean {
    return this.#of(session)?.onOutcome(session, o) ?? false;
  }

  onDisconnect(session: AgentSession): void {
    this.#current?.onDisconnect(session);
  }
}
