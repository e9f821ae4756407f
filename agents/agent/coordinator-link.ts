/**
 * The reconnecting transport of the agent's coordinator session (session.proto): one bidirectional
 * Session stream at a time, over one gRPC channel per coordinator address. Each stream opens with the
 * messages the handler gives (Register first); once the coordinator answers Registered, heartbeats go
 * out at the interval it asks for (at its idle interval while the agent holds no lease). The addresses (a coordinator and its standby, or its old and new
 * address) are tried round robin: a failed dial or a lost stream moves to the next one at once, and
 * after a full round of failures the link waits with exponential backoff and jitter
 * (src/common/retry.ts) until `close()`. A standby (several coordinators on one catalog) refuses the
 * session UNAVAILABLE with the leader's address in the trailer `rbdbackup-leader`, and a leader that
 * steps down ends it the same way: the link dials that address next, at once (listed or not; at most
 * one hop per address before the usual rotation and backoff resume). What the messages mean is the
 * handler's business. The far end
 * must be the coordinator, at every address: its certificate has to name one and not be in the agent's
 * revocation list (coordinatorCredentials), else no stream; `dropRevoked()` (the list reloaded) ends a
 * stream whose coordinator presented a certificate revoked since, and its reconnect is refused.
 */
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { ChannelCredentials } from "@grpc/grpc-js";
import { createChannel, createClient } from "nice-grpc";
import { type Metadata, Status } from "nice-grpc-common";
import { messageOf, statusOf } from "../../src/common/errors";
import { identityOfCertificate, identityUri, notCoordinator } from "../../src/common/identity";
import type { Logger } from "../../src/common/log";
import { AsyncQueue } from "../../src/common/queue";
import { type BackoffOptions, backoffDelay, delay } from "../../src/common/retry";
import { certFingerprints, type Revoked } from "../../src/common/revocations";
import { SESSION_MAX_MESSAGE_BYTES } from "../../src/common/session-limits";
import { channelCredentials, type TlsConfig, tlsChannelOptions, tlsFiles } from "../../src/common/tls";
import {
  type AgentMessage,
  CoordinatorAgentServiceDefinition,
  type CoordinatorMessage,
} from "../../src/gen/rbdbackup/v1/session";
import type { Changes } from "./changes";

// The far end of the session gives this agent its leases: a peer whose certificate does not name a
// coordinator (src/common/identity.ts notCoordinator) — another agent, an API client — is refused in
// the handshake.
export { notCoordinator };

/**
 * Mutual TLS to the coordinator: the usual checks (CA, host name), plus "the server is a coordinator"
 * and "its certificate is not revoked" (`revoked`: the agent's auth.revokedCertificatesFile; `onRevoked`
 * hears each such refusal). `verified` hears the fingerprints (its own and its ECDSA twins') of every
 * certificate let through.
 */
export function coordinatorCredentials(
  tls: TlsConfig,
  address: string,
  log: Logger,
  revoked?: Revoked,
  verified: (fingerprints: string[], identity: string) => void = () => {},
  onRevoked: (address: string, message: string, identity: string) => void = () => {},
): ChannelCredentials {
  if (tls.insecure) return channelCredentials(tls);
  const f = tlsFiles(tls, "coordinator session");
  return ChannelCredentials.createSsl(f.ca, f.key, f.cert, {
    checkServerIdentity: (host: string, cert: PeerCertificate) => {
      const hostError = checkServerIdentity(host, cert);
      if (hostError) return hostError;
      const why = notCoordinator(cert);
      if (why) {
        log.error("refusing the coordinator session: the server is not the coordinator", { coordinator: address, why });
        return new Error(`refusing ${address}: ${why}`);
      }
      const fingerprints = certFingerprints(cert.raw);
      const listed = fingerprints.find((fp) => revoked?.has(fp));
      if (listed) {
        const msg = `the coordinator's certificate (sha256 ${listed}) is revoked (auth.revokedCertificatesFile)`;
        log.error("refusing the coordinator session: its certificate is revoked", {
          coordinator: address,
          fingerprint: listed,
        });
        onRevoked(address, msg, identityUriOf(cert));
        return new Error(`refusing ${address}: ${msg}`);
      }
      verified(fingerprints, identityUriOf(cert));
      return undefined;
    },
  });
}

export interface LinkHandler {
  /** The messages that open every stream: Register first, then whatever must be resent. */
  opening(): AgentMessage["msg"][];
  /** The heartbeat to send now. */
  heartbeat(): AgentMessage["msg"];
  /**
   * Whether the agent holds a lease or an unacknowledged outcome (a heartbeat would list something).
   * While it holds nothing, heartbeats go out only every Registered.idle_heartbeat_interval_ms.
   */
  holding(): boolean;
  /** Every message from the coordinator (Registered included, after the link has noted it). */
  onMessage(msg: NonNullable<CoordinatorMessage["msg"]>): void;
  /** Called every `tickMs` while a stream is open (e.g. to report progress). */
  onTick(): void;
}

/** The identity URI a (coordinator's) certificate names, for audit lines. */
function identityUriOf(cert: PeerCertificate): string {
  try {
    const id = identityOfCertificate(cert.raw);
    return id ? identityUri(id) : "none";
  } catch {
    return "none";
  }
}

export interface LinkOptions {
  /** Reconnect backoff: delays grow from baseMs to maxMs, with jitter. */
  reconnect: BackoffOptions;
  /** A stream that lasted this long resets the backoff to its first delay. */
  resetAfterMs: number;
  tickMs: number;
  /** The wait between reconnects (the retry helper's `delay`; tests may observe it). */
  wait: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Coordinator certificates refused (the agent's auth.revokedCertificatesFile); none when absent. */
  revoked?: Revoked;
  /** Hears each coordinator refused for its revoked certificate, and each session ended for it (audit). */
  onRevoked?: (address: string, message: string, identity: string) => void;
}

/** The trailer a standby names the leader in ("host:port"). */
export const LEADER_TRAILER = "rbdbackup-leader";

export const DEFAULT_LINK_OPTIONS: LinkOptions = {
  reconnect: { baseMs: 250, maxMs: 10_000, jitter: 1 },
  resetAfterMs: 30_000,
  tickMs: 500,
  wait: delay,
};

type SessionClient = ReturnType<typeof createClient<typeof CoordinatorAgentServiceDefinition>>;

/**
 * The channel to one coordinator address: mutual TLS that also checks the far end is a coordinator whose
 * certificate is not revoked; `verified` hears its fingerprint.
 */
function openChannel(
  address: string,
  tls: TlsConfig,
  log: Logger,
  revoked: Revoked | undefined,
  verified: (fingerprints: string[], identity: string) => void,
  onRevoked: ((address: string, message: string, identity: string) => void) | undefined,
) {
  return createChannel(address, coordinatorCredentials(tls, address, log, revoked, verified, onRevoked), {
    ...tlsChannelOptions(address, tls),
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.initial_reconnect_backoff_ms": 250,
    "grpc.max_reconnect_backoff_ms": 5_000,
    "grpc.max_receive_message_length": SESSION_MAX_MESSAGE_BYTES,
    // HTTP/2 receive window of this channel's streams (grpc-js' default is 64 KiB): an IMPORT lease's
    // ImportData stream waited for window updates and moved ~60 MiB/s; with 16 MiB, 1 GiB half zeros
    // through ImportBackup took 6.1 s instead of 8.3 s (test/bench/cinder-copy.ts, separate runs).
    // Bounded: at most this much of a stream is buffered while the parser is busy.
    "grpc-node.flow_control_window": 16 << 20,
  });
}

export class CoordinatorLink {
  #out: AsyncQueue<AgentMessage> | null = null;
  #stop = new AbortController();
  #loop: Promise<void> | null = null;
  #connected = false;
  #at = 0;
  /** The leader a coordinator named (trailer), dialed next; null = the rotation's address. */
  #follow: string | null = null;
  /** The leader named by the last stream's trailer. */
  #named: string | null = null;
  /** One channel and client per coordinator address, while the link runs (the session's and the data streams'). */
  #channels = new Map<string, ReturnType<typeof createChannel>>();
  #clients = new Map<string, SessionClient>();
  /**
   * The fingerprints of every certificate let through at each address since its channel was made (an
   * address may resolve to several servers, and a handshake that lost the race may finish last).
   */
  #fingerprints = new Map<string, Map<string, string>>();
  /** Ends the current stream (dropRevoked). */
  #current: AbortController | null = null;

  constructor(
    /** The coordinator's addresses, tried in this order (at least one). */
    readonly addresses: readonly string[],
    readonly tls: TlsConfig,
    readonly handler: LinkHandler,
    readonly log: Logger,
    /** Notified when the link goes up or down. */
    readonly changes: Changes,
    readonly options: LinkOptions = DEFAULT_LINK_OPTIONS,
  ) {
    if (addresses.length === 0) throw new Error("the coordinator link needs at least one coordinator address");
  }

  /** The address the link is on (dialing, or registered with when `connected`). */
  get address(): string {
    return this.#follow ?? (this.addresses[this.#at] as string);
  }

  /** Registered with the coordinator on the current stream. */
  get connected(): boolean {
    return this.#connected;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Sends on the current stream; dropped when none is open. */
  send(msg: AgentMessage["msg"]): void {
    this.#out?.push({ msg });
  }

  /** Ends the current stream and stops reconnecting. */
  async close(): Promise<void> {
    this.#stop.abort();
    this.#out?.close();
    await this.#loop?.catch(() => {});
  }

  #setConnected(up: boolean): void {
    if (this.#connected === up) return;
    this.#connected = up;
    this.changes.notify();
  }

  /**
   * The client on the address the link is on now, for the lease data streams (ExportData, ImportData):
   * same channel and credentials as the session. Null once the link is closed.
   */
  client(): SessionClient | null {
    return this.#stop.signal.aborted ? null : this.#clientOf(this.address);
  }

  /**
   * After the revocation list was reloaded: every channel whose coordinator presented a certificate now
   * revoked is closed (`closed`), and the next dial's handshake there is refused. `ended`: the session
   * stream that was on one of them, ended with it (its address and the revoked certificate's identity);
   * null when the session was elsewhere (or none was open).
   */
  dropRevoked(): { closed: string[]; ended: { address: string; identity: string } | null } {
    const revoked = this.options.revoked;
    const out: ReturnType<CoordinatorLink["dropRevoked"]> = { closed: [], ended: null };
    if (!revoked) return out;
    for (const [address, seen] of this.#fingerprints) {
      const listed = [...seen.keys()].find((fp) => revoked.has(fp));
      if (listed === undefined) continue;
      out.closed.push(address);
      this.#fingerprints.delete(address);
      this.#channels.get(address)?.close();
      this.#channels.delete(address);
      this.#clients.delete(address);
      if (address === this.address && this.#current && !this.#current.signal.aborted) {
        this.#current.abort();
        out.ended = { address, identity: seen.get(listed) ?? "none" };
      }
    }
    return out;
  }

  #clientOf(address: string): SessionClient {
    let client = this.#clients.get(address);
    if (!client) {
      const seen = new Map<string, string>(); // fingerprint → the identity its certificate names
      this.#fingerprints.set(address, seen);
      const channel = openChannel(
        address,
        this.tls,
        this.log,
        this.options.revoked,
        (fps, identity) => {
          for (const fp of fps) seen.set(fp, identity);
        },
        this.options.onRevoked,
      );
      this.#channels.set(address, channel);
      client = createClient(CoordinatorAgentServiceDefinition, channel);
      this.#clients.set(address, client);
    }
    return client;
  }

  async #run(): Promise<void> {
    const clientOf = (address: string) => this.#clientOf(address);
    const stop = this.#stop.signal;
    const n = this.addresses.length;
    try {
      // `round`: full rounds of failures since the backoff was last reset; `failed`: failures in this round.
      // `follows`: hops to a named leader since the last registered stream.
      for (let round = 1, failed = 0, follows = 0; !stop.aborted; ) {
        const address = this.address;
        if (n > 1) this.log.info("dialing the coordinator", { coordinator: address, addresses: this.addresses });
        const started = Date.now();
        try {
          await this.#stream(clientOf(address), address);
        } catch (e) {
          if (stop.aborted) break;
          this.log.warn("coordinator session failed", {
            coordinator: address,
            code: Status[statusOf(e)],
            error: messageOf(e),
          });
        }
        const registered = this.#connected;
        this.#setConnected(false);
        if (stop.aborted) break;
        if (Date.now() - started > this.options.resetAfterMs) [round, failed] = [1, 0];
        if (registered) follows = 0;
        this.#follow = null;
        const named = this.#named;
        this.#named = null;
        if (named && named !== address && follows++ < n) {
          // Sent to the leader: dial it at once (its place in the list, or the named address itself).
          const i = this.addresses.indexOf(named);
          if (i >= 0) this.#at = i;
          else this.#follow = named;
          this.log.info("following the coordinator's leader", { from: address, leader: named });
          continue;
        }
        this.#at = (this.#at + 1) % n;
        if (++failed < n) continue; // the next address at once
        failed = 0;
        try {
          await this.options.wait(backoffDelay(round++, this.options.reconnect), stop);
        } catch {
          break; // stopped while waiting
        }
      }
    } finally {
      this.#setConnected(false);
      for (const channel of this.#channels.values()) channel.close();
      this.#channels.clear();
      this.#clients.clear();
    }
  }

  /**
   * The heartbeat timer of a registered stream: it fires every `everyMs`; a beat goes out when the agent
   * holds something (so a lease is listed within `everyMs` of its arrival, as the coordinator expects)
   * or when `idleMs` (0: a coordinator that does not say = `everyMs`) has passed since the last beat.
   */
  #heartbeats(everyMs: number, idleMs: number): NodeJS.Timeout {
    const idle = Math.max(everyMs, idleMs);
    let last = Date.now();
    return setInterval(() => {
      const now = Date.now();
      if (!this.handler.holding() && now - last < idle - everyMs / 2) return;
      last = now;
      this.send(this.handler.heartbeat());
    }, everyMs);
  }

  /** One Session stream, from its opening messages until it ends. */
  async #stream(client: SessionClient, address: string): Promise<void> {
    const out = new AsyncQueue<AgentMessage>();
    this.#out = out;
    for (const msg of this.handler.opening()) out.push({ msg });
    const ac = new AbortController();
    this.#current = ac;
    const onStop = () => ac.abort();
    this.#stop.signal.addEventListener("abort", onStop, { once: true });
    let heartbeat: NodeJS.Timeout | undefined;
    const tick = setInterval(() => this.handler.onTick(), this.options.tickMs);
    try {
      const onTrailer = (md: Metadata) => {
        this.#named = md.get(LEADER_TRAILER) || null;
      };
      for await (const m of client.session(out, { signal: ac.signal, onTrailer })) {
        const msg = m.msg;
        if (!msg) continue;
        if (msg.$case === "registered") {
          this.#setConnected(true);
          this.log.info("registered with the coordinator", { coordinator: address });
          clearInterval(heartbeat);
          heartbeat = this.#heartbeats(msg.value.heartbeatIntervalMs, msg.value.idleHeartbeatIntervalMs);
        }
        this.handler.onMessage(msg);
      }
    } finally {
      clearInterval(heartbeat);
      clearInterval(tick);
      this.#stop.signal.removeEventListener("abort", onStop);
      if (this.#current === ac) this.#current = null;
      out.close();
      if (this.#out === out) this.#out = null;
    }
  }
}
