/**
 * The lease runner: runs each attempt the coordinator leases to this agent exactly once (fencing
 * first, then the operation through AgentOperations), tracks its progress, and keeps its outcome
 * until the coordinator acknowledges it — across reconnects, since attempts run on while the
 * coordinator is away. An attempt is stopped for one of three reasons, each reported differently:
 * a user's cancel (CANCELLED, the job ends), a revoked lease (the coordinator no longer holds it) and
 * this agent's shutdown (UNAVAILABLE, a transient failure: the coordinator retries elsewhere).
 */
import { Status } from "nice-grpc-common";
import { AppError, messageOf, statusOf } from "../../src/common/errors";
import type { Logger } from "../../src/common/log";
import type { AgentMessage, Cancel, HeldLease, JobOutcome, Lease } from "../../src/gen/rbdbackup/v1/session";
import { SOURCE_SNAPSHOTS, type WithSourceSnapshots } from "../engine/backup-result";
import { DeleteIncomplete } from "../engine/delete";
import { newProgress, type Progress, snapshotOf } from "../engine/progress";
import type { Changes } from "./changes";
import type { CoordinatorData } from "./coordinator-data";
import { fenceEarlierHolders } from "./fencing";
import type { SessionOperations } from "./operations";

/** Why a running attempt was aborted ("" = it was not). */
export type StopReason = "" | "cancel" | "shutdown" | "revoked";

interface Running {
  lease: HeldLease;
  abort: AbortController;
  reason: StopReason;
  progress: Progress;
  /** The last progress sent, to send only changes. */
  lastSent: string;
}

type Listed = "sourceSnapshots" | "sourceSnapshotsListed";
type OutcomeFields = Omit<JobOutcome, "jobId" | "token" | "result" | "refused" | Listed> & {
  result?: JobOutcome["result"];
  refused?: boolean;
} & Partial<Pick<JobOutcome, Listed>>;

export class LeaseRunner {
  #running = new Map<string, Running>();
  /** Outcomes not yet acknowledged, by token. */
  #outcomes = new Map<string, JobOutcome>();
  #draining = false;

  constructor(
    readonly agentId: string,
    readonly ops: SessionOperations,
    readonly log: Logger,
    /** Sends to the coordinator (dropped while no session is open; outcomes are resent on reconnect). */
    readonly send: (msg: AgentMessage["msg"]) => void,
    readonly changes: Changes,
    /** Test-only faults (config testFaults, honoured only with RBDBACKUP_ENABLE_TEST_FAULTS=1). */
    readonly faults: { dieBeforeOutcome?: boolean } = {},
    /** The data streams of EXPORT and IMPORT leases (none: such leases fail UNAVAILABLE). */
    readonly data: CoordinatorData | null = null,
  ) {}

  get runningCount(): number {
    return this.#running.size;
  }

  get unacknowledgedCount(): number {
    return this.#outcomes.size;
  }

  /** Outcomes the coordinator has not acknowledged yet (resent when a session opens). */
  get unacknowledged(): JobOutcome[] {
    return [...this.#outcomes.values()];
  }

  /** New leases are refused with UNAVAILABLE from now on (the coordinator retries them elsewhere). */
  /** Shutting down: new leases are refused. */
  get draining(): boolean {
    return this.#draining;
  }

  drain(): void {
    this.#draining = true;
  }

  /** Whether held() lists anything (a running attempt, or an outcome not yet acknowledged). */
  get holding(): boolean {
    return this.#running.size > 0 || this.#outcomes.size > 0;
  }

  /**
   * Leases this agent holds: running attempts, and finished ones whose outcome is unacknowledged
   * (the coordinator must not fail them as lost before it has read the outcome).
   */
  held(): HeldLease[] {
    return [
      ...[...this.#running.values()].map((r) => r.lease),
      ...[...this.#outcomes.values()].map((o) => ({ jobId: o.jobId, attempt: 0, token: o.token })),
    ];
  }

  /** Starts the leased attempt, unless it is already running. */
  start(l: Lease): void {
    if (this.#running.has(l.token)) return;
    if (this.#draining) {
      const message = `agent ${this.agentId} is shutting down`;
      this.#report(l, { code: Status.UNAVAILABLE, message, refused: true });
      return;
    }
    const entry: Running = {
      lease: { jobId: l.jobId, attempt: l.attempt, token: l.token },
      abort: new AbortController(),
      reason: "",
      progress: newProgress(),
      lastSent: "",
    };
    this.log.info("lease received", { job: l.jobId, attempt: l.attempt, operation: l.operation?.$case });
    this.#attempt(l, entry)
      .then(async (result) => ({ code: Status.OK, message: "", result, ...(await this.#sourceSnapshots(l, result)) }))
      .then(
        (o) => this.#finish(l, o),
        (e) => this.#finish(l, this.#failure(entry.reason, e)),
      );
    this.#running.set(l.token, entry);
  }

  /** A user's cancel: the attempt stops and reports CANCELLED. */
  cancel(c: Cancel): void {
    const r = this.#running.get(c.token);
    if (!r) return;
    this.log.info("cancel requested by the coordinator", { job: c.jobId, reason: c.reason });
    this.#abort(r, "cancel");
  }

  /** The coordinator no longer holds this attempt: stop it, forget its outcome. */
  revoke(token: string): void {
    if (this.#outcomes.delete(token)) this.changes.notify();
    const r = this.#running.get(token);
    if (r) {
      this.log.warn("lease revoked by the coordinator; cancelling", { job: r.lease.jobId });
      this.#abort(r, "revoked");
    }
  }

  /** The coordinator has read these outcomes. */
  acknowledge(tokens: string[]): void {
    let changed = false;
    for (const t of tokens) changed = this.#outcomes.delete(t) || changed;
    if (changed) this.changes.notify();
  }

  /** This agent is stopping: every running attempt is aborted and reports a transient failure. */
  shutdown(): void {
    for (const r of this.#running.values()) this.#abort(r, "shutdown");
  }

  /** Sends the progress of each attempt whose progress changed since it was last sent. */
  reportProgress(): void {
    for (const r of this.#running.values()) {
      const s = snapshotOf(r.progress);
      const key = `${s.phase}:${s.bytesDone}:${s.bytesTransferred}:${s.bytesTotal}`;
      if (key === r.lastSent) continue;
      r.lastSent = key;
      this.send({ $case: "progress", value: { jobId: r.lease.jobId, token: r.lease.token, ...s } });
    }
  }

  #abort(r: Running, reason: StopReason): void {
    r.reason = reason;
    r.abort.abort();
  }

  async #attempt(l: Lease, r: Running): Promise<JobOutcome["result"]> {
    await fenceEarlierHolders(this.ops.ctx.cluster, l, this.log);
    const op = l.operation;
    const { signal } = r.abort;
    switch (op?.$case) {
      case "backup":
        return { $case: "backup", value: await this.ops.backup(op.value, signal, r.progress) };
      case "restore":
        return { $case: "restore", value: await this.ops.restore(op.value, signal, r.progress) };
      case "delete":
        return { $case: "delete", value: await this.ops.deleteBackup(op.value) };
      case "flatten":
        return { $case: "flatten", value: await this.ops.flatten(op.value, signal, r.progress) };
      case "verify":
        return { $case: "verify", value: await this.ops.verify(op.value, signal, r.progress) };
      case "export": {
        if (!this.ops.exportBackup) throw unknownOperation(op.$case);
        const data = this.#dataStreams(l);
        const send = (bytes: AsyncIterable<Buffer>, s: AbortSignal) => data.exportData(l, bytes, s);
        return { $case: "export", value: await this.ops.exportBackup(op.value, send, signal, r.progress) };
      }
      case "import": {
        if (!this.ops.importBackup) throw unknownOperation(op.$case);
        const bytes = this.#dataStreams(l).importData(l, signal);
        return { $case: "backup", value: await this.ops.importBackup(op.value, bytes, signal, r.progress) };
      }
      default:
        throw new AppError(Status.UNIMPLEMENTED, "the lease names no operation this agent knows");
    }
  }

  /**
   * A successful backup of a volume: the backup snapshots now on it, for the coordinator's snapshot
   * hygiene (JobOutcome.source_snapshots; it then need not ask) — those the backup's own prune listed
   * and left (backup-result.ts SOURCE_SNAPSHOTS), else listed here. A listing that fails is left out.
   */
  async #sourceSnapshots(l: Lease, result: JobOutcome["result"]): Promise<Partial<Pick<JobOutcome, Listed>>> {
    const op = l.operation;
    if (op?.$case !== "backup" || op.value.source?.$case !== "volume") return {};
    const carried = result?.$case === "backup" ? (result.value as WithSourceSnapshots)[SOURCE_SNAPSHOTS] : undefined;
    if (carried) return { sourceSnapshots: carried, sourceSnapshotsListed: true };
    const v = op.value.source.value;
    try {
      const r = await this.ops.listBackupSnapshots({ image: { pool: v.pool, namespace: v.namespace, image: v.image } });
      return { sourceSnapshots: r.snapshots, sourceSnapshotsListed: true };
    } catch (e) {
      this.log.warn("could not list the source's backup snapshots after the backup", {
        job: l.jobId,
        error: messageOf(e),
      });
      return {};
    }
  }

  /** The coordinator streams an EXPORT or IMPORT lease's bytes go through. */
  #dataStreams(l: Lease): CoordinatorData {
    if (!this.data) throw new AppError(Status.UNAVAILABLE, `no data stream to the coordinator for job ${l.jobId}`);
    return this.data;
  }

  /** A failed attempt's outcome: its own status, unless this agent stopped it. */
  #failure(reason: StopReason, e: unknown): OutcomeFields {
    const failed =
      reason === "shutdown"
        ? { code: Status.UNAVAILABLE, message: `agent ${this.agentId} shut down during the attempt` }
        : { code: reason ? Status.CANCELLED : statusOf(e), message: messageOf(e) };
    // A delete that removed the backup's snapshot before it failed says so, whatever stopped it (the
    // backup is gone); the operation's boundary wrapped it in a ServerError (its cause).
    const incomplete = [e, (e as { cause?: unknown })?.cause].find((x) => x instanceof DeleteIncomplete);
    if (incomplete) return { ...failed, result: { $case: "delete", value: (incomplete as DeleteIncomplete).partial } };
    return failed;
  }

  #finish(l: Lease, o: OutcomeFields): void {
    if (this.faults.dieBeforeOutcome && o.code === Status.OK && o.result?.$case === "backup") {
      this.log.warn("test fault: dying before reporting a successful backup", { job: l.jobId });
      process.kill(process.pid, "SIGKILL");
    }
    this.#running.delete(l.token);
    this.#report(l, o);
  }

  /** Keeps the outcome until acknowledged and sends it. */
  #report(l: Lease, o: OutcomeFields): void {
    const outcome: JobOutcome = {
      jobId: l.jobId,
      token: l.token,
      result: undefined,
      sourceSnapshots: [],
      sourceSnapshotsListed: false,
      refused: false,
      ...o,
    };
    this.#outcomes.set(l.token, outcome);
    this.changes.notify();
    this.send({ $case: "outcome", value: outcome });
  }
}

function unknownOperation(name: string): AppError {
  return new AppError(Status.UNIMPLEMENTED, `this agent cannot run ${name} leases`);
}
