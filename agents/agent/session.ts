/**
 * The agent's end of the coordinator session (protocol in proto/rbdbackup/v1/session.proto). It wires
 * three parts together: the reconnecting transport (coordinator-link.ts: dial, register, heartbeats,
 * backoff), the lease runner (lease-runner.ts: leased attempts, progress, outcomes kept until
 * acknowledged) and the calls (calls.ts). Attempts keep running while the coordinator is away; the
 * link reconnects, trying the coordinator's addresses in turn, until stop.
 */
import type { Logger } from "../../src/common/log";
import type { TlsConfig } from "../../src/common/tls";
import type { AgentMessage, CoordinatorMessage } from "../../src/gen/rbdbackup/v1/session";
import { AGENT_FEATURES, answerCall } from "./calls";
import { Changes } from "./changes";
import { coordinatorData } from "./coordinator-data";
import { CoordinatorLink, DEFAULT_LINK_OPTIONS, type LinkOptions } from "./coordinator-link";
import { LeaseRunner } from "./lease-runner";
import type { SessionOperations } from "./operations";

/** How long stop() waits for aborted attempts to clean up (snapshots, half-written images). */
const ABORTED_CLEANUP_MS = 60_000;
/** How long stop() waits for the coordinator to acknowledge the last outcomes. */
const OUTCOME_DELIVERY_MS = 3_000;

/** Sees each session message's kind as it is sent or received (benches count them); the opening messages are not told. */
export type SessionTap = (way: "sent" | "received", what: string) => void;

export interface SessionIdentity {
  agentId: string;
  clusterName: string;
  clusterFsid: string;
  version: string;
  librbdVersion: string;
  transferAddress: string;
  capacity: number;
  defaultBackupPool: string;
  /** Abilities named in Register.features (default AGENT_FEATURES; tests name fewer to play an older agent). */
  features?: readonly string[];
}

export class CoordinatorSession {
  readonly #changes = new Changes();
  readonly #runner: LeaseRunner;
  readonly #link: CoordinatorLink;
  readonly #tap: SessionTap | undefined;

  constructor(
    /** The coordinator's addresses, tried in this order (at least one). */
    readonly addresses: readonly string[],
    readonly tls: TlsConfig,
    readonly identity: SessionIdentity,
    readonly ops: SessionOperations,
    readonly log: Logger,
    /** Test-only faults (config testFaults, honoured only with RBDBACKUP_ENABLE_TEST_FAULTS=1). */
    readonly faults: { dieBeforeOutcome?: boolean } = {},
    options: Partial<LinkOptions> & { tap?: SessionTap } = {},
  ) {
    const { tap, ...linkOptions } = options;
    this.#tap = tap;
    const send = (msg: AgentMessage["msg"]) => this.#send(msg);
    const data = coordinatorData(() => this.#link.client());
    this.#runner = new LeaseRunner(identity.agentId, ops, log, send, this.#changes, faults, data);
    this.#link = new CoordinatorLink(
      addresses,
      tls,
      {
        opening: () => this.#opening(),
        heartbeat: () => {
          this.#tap?.("sent", "heartbeat");
          return { $case: "heartbeat", value: { leases: this.#runner.held(), draining: this.#runner.draining } };
        },
        holding: () => this.#runner.holding,
        onMessage: (msg) => {
          this.#tap?.("received", msg.$case === "call" ? `call:${msg.value.request?.$case}` : msg.$case);
          this.#dispatch(msg);
        },
        onTick: () => this.#runner.reportProgress(),
      },
      log,
      this.#changes,
      { ...DEFAULT_LINK_OPTIONS, ...linkOptions },
    );
  }

  #send(msg: AgentMessage["msg"]): void {
    if (msg) this.#tap?.("sent", msg.$case);
    this.#link.send(msg);
  }

  /** The coordinator address the link is on. */
  get address(): string {
    return this.#link.address;
  }

  /** The revocation list was reloaded: ends the session of a coordinator whose certificate it now names. */
  dropRevoked(): ReturnType<CoordinatorLink["dropRevoked"]> {
    return this.#link.dropRevoked();
  }

  /** Registered with the coordinator now. */
  get connected(): boolean {
    return this.#link.connected;
  }

  start(): void {
    this.#link.start();
  }

  /** No new leases are accepted (they are answered UNAVAILABLE so the coordinator retries elsewhere). */
  drain(): void {
    this.#runner.drain();
  }

  /** Attempts still running. */
  get runningCount(): number {
    return this.#runner.runningCount;
  }

  /**
   * Waits up to `waitMs` for running attempts to finish, then aborts the rest (they report a transient
   * failure once cleaned up), waits (bounded) for their outcomes' delivery, and closes.
   */
  async stop(waitMs: number): Promise<void> {
    const runner = this.#runner;
    runner.drain();
    await this.#changes.until(() => runner.runningCount === 0, waitMs);
    runner.shutdown();
    await this.#changes.until(() => runner.runningCount === 0, ABORTED_CLEANUP_MS);
    await this.#changes.until(() => runner.unacknowledgedCount === 0 || !this.connected, OUTCOME_DELIVERY_MS);
    await this.#link.close();
  }

  /** Register (with the leases held, finished ones included), then every unacknowledged outcome again. */
  #opening(): AgentMessage["msg"][] {
    const id = this.identity;
    return [
      {
        $case: "register",
        value: {
          agentId: id.agentId,
          clusterName: id.clusterName,
          clusterFsid: id.clusterFsid,
          version: id.version,
          transferAddress: id.transferAddress,
          capacity: id.capacity,
          leases: this.#runner.held(),
          librbdVersion: id.librbdVersion,
          defaultBackupPool: id.defaultBackupPool,
          cephClientAddrs: this.ops.ctx.cluster.addrs(),
          features: [...(id.features ?? AGENT_FEATURES)],
        },
      },
      ...this.#runner.unacknowledged.map((o) => ({ $case: "outcome" as const, value: o })),
    ];
  }

  #dispatch(msg: NonNullable<CoordinatorMessage["msg"]>): void {
    switch (msg.$case) {
      case "registered":
        for (const t of msg.value.revokedTokens) this.#runner.revoke(t);
        break;
      case "heartbeatAck":
        for (const t of msg.value.revokedTokens) this.#runner.revoke(t);
        this.#runner.acknowledge(msg.value.outcomesReceived);
        break;
      case "lease":
        this.#runner.start(msg.value);
        break;
      case "cancel":
        this.#runner.cancel(msg.value);
        break;
      case "call":
        answerCall(this.ops, msg.value).then((reply) => this.#send({ $case: "callReply", value: reply }));
        break;
    }
  }
}
