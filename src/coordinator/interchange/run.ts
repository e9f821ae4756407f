/**
 * The API side of an EXPORT or IMPORT job while its call is open (a "run"): the relay is opened before
 * the job is queued and closed when the call ends, and every wait is bounded:
 *
 *  - the job must be leased within `startMs` (else it FAILS: DEADLINE_EXCEEDED with its waiting reason);
 *  - the agent holding the lease must connect for the data within `connectMs` of the lease (else it
 *    FAILS: DEADLINE_EXCEEDED naming the agent);
 *  - once the data is through, the call waits at most `endMs` for the job to end.
 * The caller going away (its call cancelled, its stream broken) cancels the job while the data moves;
 * once it is through (the stream ended, every byte taken by the agent or the caller: BytePipe.through)
 * the job no longer needs the call — an import's agent may still be committing a large upload — so
 * neither the call's end nor endMs cancels it: it goes on (WatchJob follows it, CancelJob stops it). The
 * job ending other than SUCCEEDED fails the pipe with the job's own status and message, so the caller
 * gets them.
 */
import { Status } from "nice-grpc-common";
import { AppError, cancelled } from "../../common/errors";
import { logger } from "../../common/log";
import { JobKind, JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { Catalog } from "../catalog/catalog";
import type { JobRecord } from "../model";
import type { Scheduler } from "../scheduler";
import { BytePipe } from "./pipe";
import type { Direction, Relays } from "./relays";

/** The part of the scheduler a run uses. */
export type RunScheduler = Pick<Scheduler, "on" | "off" | "cancel" | "fail">;

const log = logger({ component: "interchange" });

export interface InterchangeTimeouts {
  startMs: number;
  connectMs: number;
  endMs: number;
  /**
   * Once the agent is connected: no byte moving through the relay for this long (the caller stopped
   * sending or reading, or the agent did) fails the job — its locks held the volume or backup until then.
   */
  idleMs: number;
  /** Bytes the relay buffers at most between the two streams. */
  bufferBytes: number;
}

/**
 * An export's caller must read at least this much per idleMs while data waits for it, an import's send
 * at least this much per idleMs while the agent waits for data (#watchIdle).
 */
export const MIN_READ_BYTES = 1 << 20;

export const DEFAULT_TIMEOUTS: InterchangeTimeouts = {
  startMs: 600_000,
  connectMs: 60_000,
  endMs: 600_000,
  idleMs: 600_000,
  bufferBytes: 8 << 20,
};

export interface InterchangeDeps {
  relays: Relays;
  scheduler: RunScheduler;
  timeouts?: Partial<InterchangeTimeouts>;
}

const isFinal = (s: JobState) =>
  s === JobState.JOB_STATE_SUCCEEDED || s === JobState.JOB_STATE_FAILED || s === JobState.JOB_STATE_CANCELLED;

/** The status a finished job's caller gets (its recorded code and message). */
export function jobError(j: JobRecord): AppError {
  const code = Status[j.errorCode as keyof typeof Status];
  const what = `${JobKind[j.kind]} job ${j.id} ${JobState[j.state]}`;
  return new AppError(typeof code === "number" ? code : Status.UNKNOWN, `${what}: ${j.errorMessage || "no reason"}`);
}

export class InterchangeRun {
  readonly pipe: BytePipe;
  readonly #t: InterchangeTimeouts;
  #timer: NodeJS.Timeout | undefined;
  #idle: NodeJS.Timeout | undefined;
  #claimed = false;
  #closed = false;
  #finished: JobRecord | null = null;
  #onFinish: (() => void) | null = null;
  readonly #listenFinished = (j: JobRecord) => this.#jobFinished(j);
  readonly #listenAttempt = (j: JobRecord) => this.#leased(j);
  readonly #onAbort = () => this.#callerGone();

  constructor(
    private readonly deps: InterchangeDeps & { catalog: Catalog },
    readonly jobId: string,
    readonly direction: Direction,
    private readonly signal: AbortSignal,
  ) {
    this.#t = { ...DEFAULT_TIMEOUTS, ...deps.timeouts };
    this.pipe = new BytePipe(this.#t.bufferBytes);
  }

  /** Opens the relay (before the job is queued) and starts watching the job and the caller. */
  open(): void {
    this.deps.relays.open(this.jobId, this.direction, this.pipe, () => this.#claim());
    this.deps.scheduler.on("finished", this.#listenFinished);
    this.deps.scheduler.on("attempt", this.#listenAttempt);
    this.signal.addEventListener("abort", this.#onAbort);
    this.#armStart();
  }

  /** The job must be leased within startMs (from now). */
  #armStart(): void {
    this.#arm(this.#t.startMs, () => {
      const j = this.#job();
      if (!j || j.state !== JobState.JOB_STATE_QUEUED) return;
      const why = j.waitingReason ? `: ${j.waitingReason}` : "";
      this.#fail(j, `job ${j.id} was not started within ${this.#t.startMs / 1000} s${why}`);
    });
  }

  /** The job was submitted but is not ours (an idempotent replay, or it failed at once): watch nothing. */
  get job(): JobRecord | undefined {
    return this.#job();
  }

  /** Waits (at most endMs) for the job to end; returns it SUCCEEDED, else throws its error. */
  async finished(): Promise<JobRecord> {
    const done = this.#job();
    if (done && isFinal(done.state)) return this.#verdict(done);
    // Its own timer: the start and connect timers (#arm) may be re-armed meanwhile by a lease's events.
    let end: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.#onFinish = resolve;
      end = setTimeout(resolve, this.#t.endMs);
      end.unref?.();
      if (this.#finished || this.signal.aborted) resolve();
    });
    clearTimeout(end);
    if (this.signal.aborted)
      throw cancelled(`the ${this.direction} call of job ${this.jobId} was cancelled by its caller`);
    const j = this.#job();
    if (!j) throw new AppError(Status.INTERNAL, `job ${this.jobId} is not in the catalog`);
    if (!isFinal(j.state)) {
      const goesOn = this.#through ? " and goes on" : "";
      throw new AppError(
        Status.DEADLINE_EXCEEDED,
        `job ${j.id} did not end within ${this.#t.endMs / 1000} s after its data; it is ${JobState[j.state]}${goesOn} (watch it with WatchJob)`,
      );
    }
    return this.#verdict(j);
  }

  /**
   * Ends the run: relay closed, listeners and timers gone; a job not yet ended is cancelled, unless its
   * data is through (see the module's comment).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#stopIdle();
    this.deps.relays.close(this.jobId);
    this.deps.scheduler.off("finished", this.#listenFinished);
    this.deps.scheduler.off("attempt", this.#listenAttempt);
    this.signal.removeEventListener("abort", this.#onAbort);
    if (this.#through) return;
    const j = this.#job();
    if (j && !isFinal(j.state) && !j.confirming && !j.cancelRequested)
      this.#tell("cancel", () => this.deps.scheduler.cancel(j));
    this.pipe.fail(cancelled(`the ${this.direction} call of job ${this.jobId} ended`));
  }

  /**
   * The data is through: the agent connected (claimed the relay) and the stream ended with every byte
   * taken. (A stream that ended before the agent came — a header-only import — is not: the relay closes
   * with the call, so the job cannot go on without it.)
   */
  get #through(): boolean {
    return this.#claimed && this.pipe.through;
  }

  #verdict(j: JobRecord): JobRecord {
    if (j.state !== JobState.JOB_STATE_SUCCEEDED) throw jobError(j);
    return j;
  }

  #job(): JobRecord | undefined {
    return this.deps.catalog.getJob(this.jobId);
  }

  #arm(ms: number, f: () => void): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(f, ms);
    this.#timer.unref?.();
  }

  #claim(): void {
    this.#claimed = true;
    clearTimeout(this.#timer);
    this.#watchIdle();
  }

  /**
   * While the data moves: a relay through which no byte went for idleMs (and whose stream has not ended)
   * fails the job, naming the side that stalled — the writer (nothing buffered) or the reader (full).
   */
  #watchIdle(): void {
    const every = Math.max(10, Math.floor(this.#t.idleMs / 4));
    let moved = -1;
    let since = Date.now();
    // An export's caller that reads a trickle (a byte moved now and then resets the check above) while the
    // agent keeps the relay from going empty: under MIN_READ_BYTES in a whole idleMs fails it too — it held
    // a cluster slot and the backup's lock for as long as it liked.
    // An import's caller that sends a trickle while the agent takes everything at once (the relay never
    // backs up): the same rule (an admin's client, but it holds a cluster slot and a volume's lock alike).
    let windowAt = Date.now();
    let takenAt = this.pipe.taken;
    let writtenAt = this.pipe.written;
    let drained = false;
    let backedUp = false;
    this.#idle = setInterval(() => {
      const p = this.pipe;
      if (p.done || this.#closed) return this.#stopIdle();
      if (p.buffered === 0) drained = true;
      if (p.buffered >= p.limitBytes / 2) backedUp = true;
      if (Date.now() - windowAt >= this.#t.idleMs) {
        const sent = p.written - writtenAt;
        // Still trickling (bytes moved lately): one that stopped is "sent nothing", said below.
        const trickling = Date.now() - since < this.#t.idleMs / 2;
        if (this.direction === "import" && !backedUp && trickling && sent > 0 && sent < MIN_READ_BYTES) {
          this.#stopIdle();
          const j = this.#job();
          if (!j || isFinal(j.state)) return;
          return this.#fail(
            j,
            `the caller sent only ${sent} bytes in ${this.#t.idleMs / 1000} s while the agent waited for data (at least ${MIN_READ_BYTES} are needed); job ${j.id} was ended`,
          );
        }
        const read = p.taken - takenAt;
        if (this.direction === "export" && !drained && read > 0 && read < MIN_READ_BYTES) {
          this.#stopIdle();
          const j = this.#job();
          if (!j || isFinal(j.state)) return;
          return this.#fail(
            j,
            `the caller read only ${read} bytes in ${this.#t.idleMs / 1000} s while the agent's data waited (at least ${MIN_READ_BYTES} are needed); job ${j.id} was ended`,
          );
        }
        windowAt = Date.now();
        takenAt = p.taken;
        writtenAt = p.written;
        drained = false;
        backedUp = false;
      }
      const now = p.written + p.taken;
      if (now !== moved) {
        moved = now;
        since = Date.now();
        return;
      }
      if (Date.now() - since < this.#t.idleMs) return;
      this.#stopIdle();
      const j = this.#job();
      if (!j || isFinal(j.state)) return;
      const caller = this.direction === "import" ? p.buffered === 0 : p.buffered > 0;
      const who = caller ? "the caller" : `agent ${j.lease?.agentId ?? j.agentId}`;
      const what = (this.direction === "import") === caller ? "sent" : "read";
      this.#fail(j, `${who} ${what} nothing for ${this.#t.idleMs / 1000} s; job ${j.id} was ended`);
    }, every);
    this.#idle.unref?.();
  }

  #stopIdle(): void {
    if (this.#idle) clearInterval(this.#idle);
    this.#idle = undefined;
  }

  /** A lease was issued: the agent must connect for the data within connectMs. */
  #leased(j: JobRecord): void {
    if (j.id !== this.jobId || this.#claimed) return;
    const agent = j.lease?.agentId ?? j.agentId;
    this.#arm(this.#t.connectMs, () => {
      const now = this.#job();
      if (!now || this.#claimed || isFinal(now.state)) return;
      // That lease is over (refused by an agent shutting down, expired): the job waits to be leased again.
      if (now.state !== JobState.JOB_STATE_RUNNING || now.lease?.token !== j.lease?.token) {
        if (now.state === JobState.JOB_STATE_QUEUED) this.#armStart();
        return;
      }
      const what = this.direction === "export" ? "ExportData" : "ImportData";
      this.#fail(
        now,
        `agent ${agent} took the lease of job ${j.id} but did not call ${what} within ${this.#t.connectMs / 1000} s`,
      );
    });
  }

  #jobFinished(j: JobRecord): void {
    if (j.id !== this.jobId) return;
    this.#finished = j;
    if (j.state !== JobState.JOB_STATE_SUCCEEDED) this.pipe.fail(jobError(j));
    this.#onFinish?.();
  }

  /**
   * A scheduler call from a timer, an abort listener or close(): it throws once this coordinator is no
   * longer the leader ("not the leader", after a step-down or while stopping — the term's end aborts
   * the calls in flight) or the catalog refuses the write. Thrown from a timer or a listener, that would
   * be an uncaught exception and end the process; so it is logged, and the job is left to the leader
   * (or to recovery), which will fail or cancel it on its own terms.
   */
  #tell(what: "cancel" | "fail", f: () => void): void {
    try {
      f();
    } catch (err) {
      log.warn(`interchange: could not ${what} the job; left to the leader`, { job: this.jobId, err });
    }
  }

  #fail(j: JobRecord, message: string): void {
    this.#tell("fail", () => this.deps.scheduler.fail(j, Status.DEADLINE_EXCEEDED, message));
    const now = this.#job();
    this.pipe.fail(now && isFinal(now.state) ? jobError(now) : new AppError(Status.DEADLINE_EXCEEDED, message));
  }

  #callerGone(): void {
    if (this.#through) {
      this.#onFinish?.(); // the job goes on without the call
      return;
    }
    const j = this.#job();
    if (j && !isFinal(j.state) && !j.confirming) this.#tell("cancel", () => this.deps.scheduler.cancel(j));
    this.pipe.fail(cancelled(`the ${this.direction} call of job ${this.jobId} was cancelled by its caller`));
    this.#onFinish?.(); // a wait for the job's end has nobody to answer any more
  }
}
