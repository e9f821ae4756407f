/**
 * A fake agent session for coordinator unit tests: the real AgentSession (so the coordinator's code
 * paths are the ones that run), but what the coordinator sends is recorded instead of streamed, and its
 * synchronous calls (probe, snapshots, check) are answered by a function the test sets. No Ceph, no gRPC.
 */
import { Status } from "nice-grpc-common";
import { AppError } from "../../src/common/errors";
import type { AgentRecord } from "../../src/coordinator/model";
import { AgentSession, type CallRequest } from "../../src/coordinator/sessions";
import type { CallReply, CoordinatorMessage, HeldLease, Lease } from "../../src/gen/rbdbackup/v1/session";

type Msg = NonNullable<CoordinatorMessage["msg"]>;
/** An answer to a call: its result, or an AppError whose status the agent reports. */
export type Answer = NonNullable<CallReply["result"]> | AppError;

export const FSIDS: Record<string, string> = {};

/** A cluster's fsid, stable per name within a test run. */
export function fsidOf(cluster: string): string {
  FSIDS[cluster] ??= `00000000-0000-4000-8000-${String(Object.keys(FSIDS).length + 1).padStart(12, "0")}`;
  return FSIDS[cluster];
}

export function agentRecord(agentId: string, cluster: string, o: Partial<AgentRecord> = {}): AgentRecord {
  return {
    agentId,
    clusterName: cluster,
    clusterFsid: fsidOf(cluster),
    version: "test",
    transferAddress: `127.0.0.1:${7400 + (agentId.length % 100)}`,
    capacity: 4,
    defaultBackupPool: "backups",
    cephClientAddrs: `v2:127.0.0.1:6800/${agentId}`,
    lastSeen: 0,
    ...o,
  };
}

export class FakeAgentSession extends AgentSession {
  readonly sent: Msg[] = [];
  /** Answers the coordinator's calls (at once, or when a promise settles); by default every call fails UNIMPLEMENTED. */
  answer: (req: CallRequest) => Answer | Promise<Answer> = (req) =>
    new AppError(Status.UNIMPLEMENTED, `the fake agent has no answer for ${req.$case}`);

  override send(msg: CoordinatorMessage["msg"]): void {
    if (!msg) return;
    this.sent.push(msg);
    if (msg.$case === "call") {
      const { callId, request } = msg.value;
      const a = request ? this.answer(request) : new AppError(Status.INVALID_ARGUMENT, "empty call");
      const reply = (x: Answer): CallReply =>
        x instanceof AppError
          ? { callId, code: x.status, message: x.message, result: undefined }
          : { callId, code: Status.OK, message: "", result: x };
      // A rejected answer is the agent failing the call (INTERNAL), not an unhandled rejection.
      void Promise.resolve(a)
        .catch((e: unknown) => new AppError(Status.INTERNAL, String((e as Error)?.message ?? e)))
        .then((x) => this.onCallReply(reply(x)));
    }
  }

  /** Every lease the coordinator sent, oldest first. */
  leases(): Lease[] {
    return this.sent.flatMap((m) => (m.$case === "lease" ? [m.value] : []));
  }

  /** The newest lease of a job (throws when none was sent). */
  lease(jobId: string): Lease {
    const l = this.leases()
      .filter((x) => x.jobId === jobId)
      .at(-1);
    if (!l) throw new Error(`agent ${this.agentId} got no lease of job ${jobId}`);
    return l;
  }

  /** The lease as the agent lists it in a heartbeat or a Register. */
  held(jobId: string): HeldLease {
    const l = this.lease(jobId);
    return { jobId: l.jobId, attempt: l.attempt, token: l.token };
  }

  cancels(): Array<{ jobId: string; token: string }> {
    return this.sent.flatMap((m) => (m.$case === "cancel" ? [m.value] : []));
  }
}
