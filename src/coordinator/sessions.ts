/**
 * Agent sessions on the coordinator side: the registry of connected agents (several may serve one
 * cluster) and, per agent, its outgoing message queue and its pending synchronous calls. The
 * CoordinatorAgentService handler (session-service.ts) feeds incoming messages to the scheduler.
 */
import { randomUUID } from "node:crypto";
import { Status } from "nice-grpc-common";
import { AppError, unavailable } from "../common/errors";
import { AsyncQueue } from "../common/queue";
import type { Call as CallMsg, CallReply, CoordinatorMessage } from "../gen/rbdbackup/v1/session";
import type { AgentRecord } from "./model";

/** How often, at most, a heartbeat writes the agent's last_seen to the catalog (ListAgents reads live sessions' from memory). */
export const LAST_SEEN_PERSIST_MS = 30_000;

export type CallRequest = NonNullable<CallMsg["request"]>;
type CallResult = NonNullable<CallReply["result"]>;
export type CallCase = CallResult["$case"];
/** The answer to a call whose result is of case C. */
export type CallAnswer<C extends CallCase> = Extract<CallResult, { $case: C }>["value"];

export class AgentSession {
  readonly out = new AsyncQueue<CoordinatorMessage>();
  /** Job ids whose current lease this agent holds. */
  readonly jobs = new Set<string>();
  readonly sessionId = randomUUID();
  /** The agent said it is shutting down (Heartbeat.draining): no new lease goes to it. */
  draining = false;
  #calls = new Map<string, { resolve: (r: CallReply) => void; reject: (e: unknown) => void }>();
  /** The last_seen the catalog holds for this agent (`info` was written at registration). */
  #persistedSeen: number;

  /** Optional abilities the agent named in Register.features (session.proto, "Versions"). */
  readonly features: ReadonlySet<string>;
  /** SHA-256 of the client certificate the session was opened with ("" without one): a revocation ends it. */
  certFingerprint = "";
  /** That and its ECDSA twins' fingerprints (revocations.ts certFingerprints): a revocation of any ends it. */
  certFingerprints: string[] = [];

  constructor(
    readonly info: AgentRecord,
    features: Iterable<string> = [],
  ) {
    this.#persistedSeen = info.lastSeen;
    this.features = new Set(features);
  }

  /**
   * The agent was heard from at `now`: `info.lastSeen` moves; true when the catalog's copy is due to be
   * written (at most every LAST_SEEN_PERSIST_MS; the caller writes `info`).
   */
  seen(now: number): boolean {
    this.info.lastSeen = now;
    if (now >= this.#persistedSeen && now - this.#persistedSeen < LAST_SEEN_PERSIST_MS) return false;
    this.#persistedSeen = now;
    return true;
  }

  /** True when `info.lastSeen` is newer than the catalog's copy (to be written at disconnect); marks it written. */
  unsaved(): boolean {
    if (this.info.lastSeen === this.#persistedSeen) return false;
    this.#persistedSeen = this.info.lastSeen;
    return true;
  }

  get agentId(): string {
    return this.info.agentId;
  }

  get cluster(): string {
    return this.info.clusterName;
  }

  send(msg: CoordinatorMessage["msg"]): void {
    this.out.push({ msg });
  }

  /** A synchronous question to the agent; its failure status comes back as an AppError. */
  async call<C extends CallCase>(
    request: CallRequest,
    expect: C,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<CallAnswer<C>> {
    // Already cancelled: not asked at all (a listener added to an aborted signal never fires, so the
    // call would have waited out its whole timeout).
    if (signal?.aborted) throw new AppError(Status.CANCELLED, "the call was cancelled");
    const callId = randomUUID();
    const reply = await new Promise<CallReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#calls.delete(callId);
        signal?.removeEventListener("abort", onAbort);
        reject(unavailable(`agent ${this.agentId} (cluster ${this.cluster}) did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      const onAbort = () => {
        clearTimeout(timer);
        this.#calls.delete(callId);
        reject(new AppError(Status.CANCELLED, "the call was cancelled"));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#calls.set(callId, {
        resolve: (r) => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          reject(e);
        },
      });
      this.send({ $case: "call", value: { callId, request } });
    });
    if (reply.code !== 0) throw new AppError(reply.code as Status, reply.message);
    if (reply.result?.$case !== expect) {
      throw new AppError(
        Status.INTERNAL,
        `agent ${this.agentId} answered a ${expect} call with ${reply.result?.$case}`,
      );
    }
    // biome-ignore lint/suspicious/noExplicitAny: the $case was checked just above
    return reply.result.value as any;
  }

  onCallReply(reply: CallReply): void {
    const c = this.#calls.get(reply.callId);
    if (!c) return;
    this.#calls.delete(reply.callId);
    c.resolve(reply);
  }

  close(reason: string): void {
    for (const c of this.#calls.values()) c.reject(unavailable(`agent ${this.agentId} disconnected (${reason})`));
    this.#calls.clear();
    this.out.close();
  }
}

export class Sessions {
  readonly #byAgent = new Map<string, AgentSession>();

  add(s: AgentSession): AgentSession | undefined {
    const old = this.#byAgent.get(s.agentId);
    this.#byAgent.set(s.agentId, s);
    return old;
  }

  /** Removes `s` if it is still the agent's current session. */
  remove(s: AgentSession): boolean {
    if (this.#byAgent.get(s.agentId) !== s) return false;
    this.#byAgent.delete(s.agentId);
    return true;
  }

  get(agentId: string): AgentSession | undefined {
    return this.#byAgent.get(agentId);
  }

  all(): AgentSession[] {
    return [...this.#byAgent.values()];
  }

  ofCluster(cluster: string): AgentSession[] {
    return this.all().filter((s) => s.cluster === cluster);
  }

  /** A connected agent of the cluster, the least busy first; UNAVAILABLE when none is connected. */
  any(cluster: string): AgentSession {
    const s = this.ofCluster(cluster).sort((a, b) => a.jobs.size - b.jobs.size)[0];
    if (!s) throw unavailable(`no agent of cluster ${cluster} is connected to this coordinator; retry when one is`);
    return s;
  }
}
