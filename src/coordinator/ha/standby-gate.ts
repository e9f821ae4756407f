/**
 * What a standby answers, and how it sends callers to the leader.
 *
 * A standby serves the catalog reads in STANDBY_SERVES from the shared catalog. Every other
 * BackupService method — the mutating ones, and those that need the leader's agents or scheduler
 * (ListBackupSnapshots and CheckCluster ask an agent, ListAgents shows live sessions, WatchJob follows
 * the scheduler's live events) — is refused before its handler runs: UNAVAILABLE "this coordinator is a
 * standby; the leader is <id> at <host:port>", with the trailing metadata `rbdbackup-leader` (host:port)
 * and `rbdbackup-leader-id` (absent while no coordinator leads). Nothing was done: the client may send
 * the same call to the leader. The agents' Session is refused the same way (session-service.ts).
 *
 * On the leader, a leader-only call runs under the term: when the term ends (step-down) its signal is
 * aborted (a WatchJob ends), and a call that ends by the step-down, or by a fenced write, fails
 * UNAVAILABLE with the trailers of the new leader — unless its handler had made its job (madeJob): then
 * UNAVAILABLE naming the job, without the trailers.
 */
import { type CallContext, type Metadata, ServerError, type ServerMiddlewareCall, Status } from "nice-grpc-common";
import { linkSignals } from "../../common/signals";
import { splitPath } from "../authz";
import { FencedError } from "../catalog/leader-lease";

export const LEADER_TRAILER = "rbdbackup-leader";
export const LEADER_ID_TRAILER = "rbdbackup-leader-id";

/** BackupService methods a standby answers (reads of the shared catalog). */
export const STANDBY_SERVES: ReadonlySet<string> = new Set([
  "GetBackup",
  "ListBackups",
  "GetJob", // without live progress (that is the leader's)
  "ListJobs",
  "ExportBackupRecord",
  "GetPolicy", // selection: the policy's explicit volumes (discovery is the leader's)
  "ListPolicies",
  "GetVolumeProtection",
  "ListVolumeProtection",
  "GetCoordinatorStatus",
]);

export interface LeaderRef {
  id: string;
  address: string;
}

/** The coordinator's part, as the gate and the session service see it. */
export interface LeaderView {
  /** This coordinator may dispatch and take mutating calls (it leads, or it is the only one). */
  leading(): boolean;
  /** The leader to name (undefined while none is known). */
  leader(): LeaderRef | undefined;
  /** Aborted when the current term ends (undefined while standby). */
  termSignal(): AbortSignal | undefined;
}

/** UNAVAILABLE naming the leader, with its trailers set on `trailer`. */
export function standbyError(view: LeaderView, trailer: Metadata, what = "this coordinator is a standby"): ServerError {
  const leader = view.leader();
  if (!leader) return new ServerError(Status.UNAVAILABLE, `${what}; no coordinator leads at the moment: retry shortly`);
  trailer.set(LEADER_TRAILER, leader.address);
  trailer.set(LEADER_ID_TRAILER, leader.id);
  return new ServerError(Status.UNAVAILABLE, `${what}; the leader is ${leader.id} at ${leader.address}`);
}

const MADE = Symbol("rbdbackup.madeJob");

/**
 * A handler that goes on after it made its job (ImportBackup: the upload follows; ExportBackup: the
 * download) says so: a step-down
 * after that is no "nothing was done, send it to the leader" — the caller would make a second job — but
 * UNAVAILABLE naming the job made, without the leader trailers.
 */
export function madeJob(context: CallContext, jobId: string): void {
  (context as CallContext & { [MADE]?: string })[MADE] = jobId;
}

/** BackupService middleware: standby refusals, and leader-only calls bound to the term. */
export function standbyGate(view: LeaderView) {
  return async function* standbyGateMiddleware<Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) {
    const [, method] = splitPath(call.method.path);
    if (STANDBY_SERVES.has(method)) return yield* call.next(call.request, context);
    const term = view.leading() ? view.termSignal() : undefined;
    if (!view.leading()) throw standbyError(view, context.trailer);
    if (!term) return yield* call.next(call.request, context);
    const linked = linkSignals(context.signal, term);
    const inner: CallContext & { [MADE]?: string } = { ...context, signal: linked.signal };
    const lost = () => {
      const made = inner[MADE];
      if (made) {
        return new ServerError(
          Status.UNAVAILABLE,
          `this coordinator lost the leadership during the call, after it made job ${made}: ask the leader for that job (GetJob); sent again without the same idempotency key, the call would make another`,
        );
      }
      return standbyError(view, context.trailer, "this coordinator lost the leadership during the call");
    };
    try {
      const result = yield* call.next(call.request, inner);
      // A stream ended by the step-down (WatchJob returns when its signal aborts) did not finish.
      if (term.aborted && !context.signal.aborted && call.responseStream) throw lost();
      return result;
    } catch (e) {
      if (e instanceof FencedError || (term.aborted && !context.signal.aborted)) throw lost();
      throw e;
    } finally {
      linked.dispose();
    }
  };
}
