/**
 * The agent's end of the coordinator session (protocol in proto/rbdbackup/v1/session.proto): dials
 * out, registers, heartbeats, runs leased attempts through AgentOperations and reports progress and
 * outcomes. Reconnects with backoff forever (until stop); attempts keep running while the coordinator
 * is away, and their outcomes are kept until the coordinator acknowledges them.
 */
import { createChannel, createClient } from "nice-grpc";
import { Status } from "nice-grpc-common";
import { AppError, messageOf, statusOf } from "../../src/common/errors";
import type { Logger } from "../../src/common/log";
import { AsyncQueue } from "../../src/common/queue";
import { channelCredentials, type TlsConfig, tlsChannelOptions } from "../../src/common/tls";
import {
  type AgentMessage,
  CoordinatorAgentServiceDefinition,
  type CoordinatorMessage,
  type HeldLease,
  type JobOutcome,
  type Lease,
} from "../../src/gen/rbdbackup/v1/session";
import { newProgress, type Progress, snapshotOf } from "../engine/progress";
import type { AgentOperations } from "./operations";

const PROGRESS_INTERVAL_MS = 500;
const RECONNECT_MIN_MS = 250;
const RECONNECT_MAX_MS = 10_000;

export interface SessionIdentity {
  agentId: string;
  clusterName: string;
  clusterFsid: string;
  version: string;
  librbdVersion: string;
  transferAddress: string;
  capacity: number;
  defaultBackupPool: string;
}

interface Running {
  lease: HeldLease;
  abort: AbortController;
  /** Why it was aborted: a user's cancel ends the job; this agent's shutdown is a transient failure. */
  reason: "" | "cancel" | "shutdown" | "revoked";
  progress: Progress;
  lastSent: string;
  done: Promise<void>;
}

export class CoordinatorSession {
  #running = new Map<string, Running>();
  /** Outcomes not yet acknowledged, by token. */
  #outcomes = new Map<string, JobOutcome>();
  #out: AsyncQueue<AgentMessage> | null = null;
  #stopped = false;
  #stop = new AbortController();
  #loop: Promise<void> | null = null;
  #draining = false;
  connected = false;

  constructor(
    readonly address: string,
    readonly tls: TlsConfig,
    readonly identity: SessionIdentity,
    readonly ops: AgentOperations,
    readonly log: Logger,
    /** Test-only faults (config testFaults, honoured only with RBDBACKUP_ENABLE_TEST_FAULTS=1). */
    readonly faults: { dieBeforeOutcome?: boolean } = {},
  ) {}

  start(): void {
    this.#loop = this.#run();
  }

  /** No new leases are accepted (they are answered UNAVAILABLE so the coordinator retries elsewhere). */
  drain(): void {
    this.#draining = true;
  }

  /** Attempts still running. */
  get runningCount(): number {
    return this.#running.size;
  }

  /** Waits (bounded) for running attempts and their outcomes' delivery, then closes. */
  async stop(waitMs: number): Promise<void> {
    this.#draining = true;
    const until = async (cond: () => boolean, ms: number) => {
      const deadline = Date.now() + ms;
      while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    };
    await until(() => this.#running.size === 0, waitMs);
    for (const r of this.#running.values()) {
      r.reason = "shutdown";
      r.abort.abort();
    }
    // Cancelled work cleans up (snapshots, half-written images), then its outcome is delivered.
    await until(() => this.#running.size === 0, 60_000);
    await until(() => this.#outcomes.size === 0 || !this.connected, 3_000);
    this.#stopped = true;
    this.#stop.abort();
    this.#out?.close();
    await this.#loop?.catch(() => {});
  }

  #send(msg: AgentMessage["msg"]): void {
    this.#out?.push({ msg });
  }

  #held(): HeldLease[] {
    // Finished attempts whose outcome is unacknowledged count as held: the coordinator must not fail
    // them as lost before it has read the outcome.
    return [
      ...[...this.#running.values()].map((r) => r.lease),
      ...[...this.#outcomes.values()].map((o) => ({ jobId: o.jobId, attempt: 0, token: o.token })),
    ];
  }

  async #run(): Promise<void> {
    let delay = RECONNECT_MIN_MS;
    const channel = createChannel(this.address, channelCredentials(this.tls), {
      ...tlsChannelOptions(this.address, this.tls),
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.initial_reconnect_backoff_ms": 250,
      "grpc.max_reconnect_backoff_ms": 5_000,
    });
    const client = createClient(CoordinatorAgentServiceDefinition, channel);
    try {
      while (!this.#stopped) {
        const started = Date.now();
        try {
          await this.#session(client);
        } catch (e) {
          if (this.#stopped) break;
          this.log.warn("coordinator session failed", {
            coordinator: this.address,
            code: Status[statusOf(e)],
            error: messageOf(e),
          });
        }
        this.connected = false;
        if (this.#stopped) break;
        if (Date.now() - started > 30_000) delay = RECONNECT_MIN_MS;
        const wait = Math.round(delay * (0.5 + Math.random()));
        delay = Math.min(RECONNECT_MAX_MS, delay * 2);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, wait);
          this.#stop.signal.addEventListener(
            "abort",
            () => {
              clearTimeout(t);
              resolve();
            },
            { once: true },
          );
        });
      }
    } finally {
      channel.close();
    }
  }

  async #session(client: ReturnType<typeof createClient<typeof CoordinatorAgentServiceDefinition>>): Promise<void> {
    const out = new AsyncQueue<AgentMessage>();
    this.#out = out;
    const id = this.identity;
    out.push({
      msg: {
        $case: "register",
        value: {
          agentId: id.agentId,
          clusterName: id.clusterName,
          clusterFsid: id.clusterFsid,
          version: id.version,
          transferAddress: id.transferAddress,
          capacity: id.capacity,
          leases: this.#held(),
          librbdVersion: id.librbdVersion,
          defaultBackupPool: id.defaultBackupPool,
          cephClientAddrs: this.ops.ctx.cluster.addrs(),
        },
      },
    });
    for (const o of this.#outcomes.values()) out.push({ msg: { $case: "outcome", value: o } });
    const ac = new AbortController();
    const onStop = () => ac.abort();
    this.#stop.signal.addEventListener("abort", onStop, { once: true });
    let heartbeat: NodeJS.Timeout | undefined;
    const progress = setInterval(() => this.#reportProgress(), PROGRESS_INTERVAL_MS);
    try {
      for await (const m of client.session(out, { signal: ac.signal })) {
        const msg = m.msg;
        if (!msg) continue;
        switch (msg.$case) {
          case "registered": {
            this.connected = true;
            this.log.info("registered with the coordinator", { coordinator: this.address });
            for (const t of msg.value.revokedTokens) this.#revoke(t);
            clearInterval(heartbeat);
            heartbeat = setInterval(
              () => this.#send({ $case: "heartbeat", value: { leases: this.#held() } }),
              msg.value.heartbeatIntervalMs,
            );
            break;
          }
          case "heartbeatAck":
            for (const t of msg.value.revokedTokens) this.#revoke(t);
            for (const t of msg.value.outcomesReceived) this.#outcomes.delete(t);
            break;
          case "lease":
            this.#startLease(msg.value);
            break;
          case "cancel": {
            const r = this.#running.get(msg.value.token);
            if (r) {
              this.log.info("cancel requested by the coordinator", { job: msg.value.jobId, reason: msg.value.reason });
              r.reason = "cancel";
              r.abort.abort();
            }
            break;
          }
          case "call":
            this.#answer(msg.value);
            break;
        }
      }
    } finally {
      clearInterval(heartbeat);
      clearInterval(progress);
      this.#stop.signal.removeEventListener("abort", onStop);
      out.close();
      if (this.#out === out) this.#out = null;
    }
  }

  /** The coordinator no longer holds this attempt: stop it, forget its outcome. */
  #revoke(token: string): void {
    this.#outcomes.delete(token);
    const r = this.#running.get(token);
    if (r) {
      this.log.warn("lease revoked by the coordinator; cancelling", { job: r.lease.jobId });
      r.reason = "revoked";
      r.abort.abort();
    }
  }

  #reportProgress(): void {
    for (const r of this.#running.values()) {
      const s = snapshotOf(r.progress);
      const key = `${s.phase}:${s.bytesDone}:${s.bytesTransferred}:${s.bytesTotal}`;
      if (key === r.lastSent) continue;
      r.lastSent = key;
      this.#send({ $case: "progress", value: { jobId: r.lease.jobId, token: r.lease.token, ...s } });
    }
  }

  #startLease(l: Lease): void {
    const lease = { jobId: l.jobId, attempt: l.attempt, token: l.token };
    if (this.#running.has(l.token)) return;
    const finish = (o: Omit<JobOutcome, "jobId" | "token" | "result"> & { result?: JobOutcome["result"] }) => {
      const outcome: JobOutcome = { jobId: l.jobId, token: l.token, result: undefined, ...o };
      if (this.faults.dieBeforeOutcome && o.code === Status.OK && o.result?.$case === "backup") {
        this.log.warn("test fault: dying before reporting a successful backup", { job: l.jobId });
        process.kill(process.pid, "SIGKILL");
      }
      this.#outcomes.set(l.token, outcome);
      this.#running.delete(l.token);
      this.#send({ $case: "outcome", value: outcome });
    };
    if (this.#draining) {
      this.#outcomes.set(l.token, {
        jobId: l.jobId,
        token: l.token,
        code: Status.UNAVAILABLE,
        message: `agent ${this.identity.agentId} is shutting down`,
        result: undefined,
      });
      this.#send({ $case: "outcome", value: this.#outcomes.get(l.token) as JobOutcome });
      return;
    }
    const abort = new AbortController();
    const progress = newProgress();
    const op = l.operation;
    this.log.info("lease received", { job: l.jobId, attempt: l.attempt, operation: op?.$case });
    const work = (async (): Promise<JobOutcome["result"]> => {
      await this.#fence(l);
      switch (op?.$case) {
        case "backup":
          return { $case: "backup", value: await this.ops.backup(op.value, abort.signal, progress) };
        case "restore":
          return { $case: "restore", value: await this.ops.restore(op.value, abort.signal, progress) };
        case "delete":
          return { $case: "delete", value: await this.ops.deleteBackup(op.value) };
        default:
          throw new AppError(Status.UNIMPLEMENTED, "the lease names no operation this agent knows");
      }
    })();
    const entry: Running = { lease, abort, reason: "", progress, lastSent: "", done: Promise.resolve() };
    entry.done = work.then(
      (result) => finish({ code: Status.OK, message: "", result }),
      (e) => {
        if (entry.reason === "shutdown") {
          finish({ code: Status.UNAVAILABLE, message: `agent ${this.identity.agentId} shut down during the attempt` });
        } else {
          const code = entry.reason ? Status.CANCELLED : statusOf(e);
          finish({ code, message: messageOf(e) });
        }
      },
    );
    this.#running.set(l.token, entry);
  }

  /**
   * Blocklists the Ceph clients of agents that died holding an earlier attempt (never our own), so the
   * volume's exclusive lock and watches they held go now. A failure only delays the attempt's locks.
   */
  async #fence(l: Lease): Promise<void> {
    const own = this.ops.ctx.cluster.addrs();
    for (const addr of l.fenceClientAddrs) {
      if (addr === own) continue;
      try {
        await this.ops.ctx.cluster.blocklistAdd(addr, l.fenceSeconds || 3600);
        this.log.info("fenced the Ceph client of an agent that died holding this job", { job: l.jobId, addr });
      } catch (e) {
        this.log.warn("could not fence a dead agent's Ceph client; its locks go when its watch times out", {
          job: l.jobId,
          addr,
          error: messageOf(e),
        });
      }
    }
  }

  #answer(call: NonNullable<CoordinatorMessage["msg"] & { $case: "call" }>["value"]): void {
    const req = call.request;
    const reply = (r: Partial<Omit<AgentMessage, "msg">> & { code: number; message: string; result?: unknown }) =>
      this.#send({
        $case: "callReply",
        value: { callId: call.callId, code: r.code, message: r.message, result: r.result as never },
      });
    (async () => {
      switch (req?.$case) {
        case "check":
          return { $case: "check" as const, value: await this.ops.checkCluster(req.value) };
        case "snapshots":
          return { $case: "snapshots" as const, value: await this.ops.listBackupSnapshots(req.value) };
        case "metadata":
          return { $case: "metadata" as const, value: await this.ops.getBackupMetadata(req.value) };
        case "probe":
          return { $case: "probe" as const, value: await this.ops.probe(req.value) };
        default:
          throw new AppError(Status.UNIMPLEMENTED, "a call this agent does not know");
      }
    })().then(
      (result) => reply({ code: Status.OK, message: "", result }),
      (e) => reply({ code: statusOf(e), message: messageOf(e) }),
    );
  }
}
