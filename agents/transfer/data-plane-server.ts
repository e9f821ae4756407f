/**
 * The agent's data-plane listener: a TLS server this code owns on its own port (`transferListen`),
 * beside the agent's grpc-js server (AgentService, health). Each connection's ALPN picks its protocol:
 * "h2" → a node:http2 server serving the whole `rbdbackup.v1.TransferService` (Transfer and ListChains,
 * transfer-server.ts; ResumePoint, resume-point-server.ts) in standard gRPC framing; "rbdbackup-bulk/1"
 * → the bulk channel (bulk/server.ts: one Transfer without HTTP/2, fed to the same entry).
 *
 * - Mutual TLS with the agent's files: a client certificate signed by the CA is required and
 *   verified in the handshake, TLS ≥ 1.2 (plaintext h2c only with `insecure`, for tests: no bulk
 *   channel then).
 * - Receive window: every stream and the connection advertise `windowBytes` (HTTP/2 SETTINGS and
 *   the session's local window), so 2 MiB chunks do not stall on 64 KiB WINDOW_UPDATEs.
 * - Keepalive: each connection is pinged every `keepaliveMs`; one that does not answer within
 *   `keepaliveTimeoutMs` is destroyed (its calls see a cancellation).
 * - Admission: at most `maxConcurrentTransfers` transfers at once, Transfer calls and bulk
 *   connections together (RESOURCE_EXHAUSTED beyond), none once the agent stops accepting (UNAVAILABLE);
 *   a caller is judged (`admit`: an agent with a valid capability) before it takes a slot, and a slot's
 *   wait for the next message, the header first, is bounded by the idle timeout on both paths. Bulk
 *   connections open at once are capped (`maxConcurrentTransfers` + BULK_CONNECTIONS_HEADROOM): past it a
 *   new one is answered RESOURCE_EXHAUSTED before it is read.
 * - Routing: gRPC content-type required (else HTTP 415), identity encoding only, unknown methods
 *   UNIMPLEMENTED; callers whose certificate does not name an agent PERMISSION_DENIED (transfer-authz.ts).
 * - Lifecycle: listening → draining (shutdown: listener closed, GOAWAY on every connection, calls and
 *   bulk transfers in flight may finish within the grace period) → stopped (remaining connections
 *   destroyed, which cancels their transfers). Every wait is bounded.
 */
import http2 from "node:http2";
import type { AddressInfo, Server } from "node:net";
import tls, { type TLSSocket } from "node:tls";
import { Status } from "nice-grpc-common";
import { splitHostPort } from "../../src/common/address";
import { AppError } from "../../src/common/errors";
import type { Logger } from "../../src/common/log";
import { delay } from "../../src/common/retry";
import type { Revoked } from "../../src/common/revocations";
import { type TlsConfig, tlsFiles } from "../../src/common/tls";
import { TransferServiceDefinition } from "../../src/gen/rbdbackup/v1/transfer";
import type { AuthzAudit } from "./authz-audit";
import { ALPN_BULK, ALPN_H2, DEFAULT_IDLE_TIMEOUT_MS } from "./bulk/protocol";
import { serveBulk } from "./bulk/server";
import { type ReceivePool, receivePool } from "./message-reader";
import { IDLE_SESSION_MS } from "./protocol";
import { type ResumePointEntry, resumePointMethod } from "./resume-point-server";
import { ServerCall } from "./server-call";
import {
  auditDataPlaneRefusal,
  dataPlaneRefusal,
  LIST_CHAINS_METHOD,
  RESUME_POINT_METHOD,
  TRANSFER_METHOD,
  type TransferCaller,
  transferCallerOf,
} from "./transfer-authz";
import {
  type ListChainsEntry,
  listChainsMethod,
  type MethodHandler,
  type TransferEntry,
  transferMethod,
} from "./transfer-server";

/** After the grace period: how long destroyed connections get to report closed. */
const CLOSE_WAIT_MS = 5_000;

export interface DataPlaneOptions {
  tls: TlsConfig;
  /** Certificates refused whatever they name (the agent's auth.revokedCertificatesFile). */
  revoked?: Revoked;
  /** What the methods call. */
  transfer: TransferEntry;
  listChains: ListChainsEntry;
  /** ResumePoint (absent: UNIMPLEMENTED). */
  resumePoint?: ResumePointEntry;
  /** Largest request message accepted (RESOURCE_EXHAUSTED beyond). */
  maxMessageBytes: number;
  /** Transfer calls served at once. */
  maxConcurrentTransfers: number;
  /** False while the agent is not serving: new transfers get UNAVAILABLE. */
  accepting?: () => boolean;
  /** HTTP/2 receive window per stream and per connection, bytes (default: HTTP/2's 64 KiB). */
  windowBytes?: number;
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  /** Receive buffers for chunks (default: the process's pool). */
  pool?: ReceivePool;
  log?: Logger;
  /** Audits (and counts) refused callers. */
  audit?: AuthzAudit;
  /** The bulk channel (TLS only): offered unless `false`. */
  bulk?: boolean;
  /**
   * How long a transfer may wait for the source's next message with no byte coming, on either path
   * (transfer.bulkIdleTimeoutMs; default DEFAULT_IDLE_TIMEOUT_MS).
   */
  idleTimeoutMs?: number;
  /**
   * Whether a busy destination says so when the source asks (BulkOpen.busy_interval_ms, the Transfer
   * call's BUSY_HEADER): default true; false answers as agents before it did (tests of that skew).
   */
  busyBeats?: boolean;
  /** An HTTP/2 session with no stream for this long is closed (default IDLE_SESSION_MS; tests shorten it). */
  idleSessionMs?: number;
  /**
   * Who may take a transfer slot, judged before it is taken (before any message): throws the refusal
   * (transfer-authz.ts admitTransferCaller). Absent: anyone the TLS handshake let in.
   */
  admit?: (caller: TransferCaller, method: string) => void;
}

export type DataPlaneState = "idle" | "listening" | "draining" | "stopped";

/**
 * Wraps the transfer entry with the server's admission: serving at all, a caller that may transfer at
 * all (`admit`: a caller without a valid capability cannot take the slots real transfers need), and the
 * concurrency limit.
 */
function admitted(
  entry: TransferEntry,
  max: number,
  accepting: () => boolean,
  admit: (caller: TransferCaller, method: string) => void,
): TransferEntry {
  let active = 0;
  return async (messages, signal, caller) => {
    if (!accepting()) throw new AppError(Status.UNAVAILABLE, "this agent is shutting down");
    admit(caller, TRANSFER_METHOD);
    if (active >= max) {
      throw new AppError(
        Status.RESOURCE_EXHAUSTED,
        `this agent already serves ${active} transfers (limit ${max}); retry later`,
      );
    }
    active++;
    try {
      return await entry(messages, signal, caller);
    } finally {
      active--;
    }
  };
}

/** Limits of the unary requests and of the streams of one HTTP/2 connection (see the constructor). */
const MAX_LIST_CHAINS_BYTES = 64 * 1024;
const MAX_RESUME_POINT_BYTES = 2 * 1024 * 1024;
/** Streams one connection may hold beyond the transfers this agent admits (ListChains, ResumePoint). */
const UNARY_STREAMS_HEADROOM = 64;
/**
 * Bulk connections open beyond the transfers this agent admits: the ones whose BulkOpen and header are
 * still on their way (each may hold up to the idle bound and a 64 KiB buffer), and the answered ones
 * lingering for their client's close. Past it a new bulk connection is answered RESOURCE_EXHAUSTED before
 * anything it sends is read — an agent's certificate cannot pile up connections without end.
 */
export const BULK_CONNECTIONS_HEADROOM = 32;
/**
 * How long a connection may take to complete its TLS handshake (Node's default is 120 s): connections
 * that never start TLS do not pile up for minutes each.
 */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

export class DataPlaneServer {
  state: DataPlaneState = "idle";
  /** What listens: the TLS server (h2 and bulk), or the h2c server itself in insecure mode. */
  readonly #server: Server;
  readonly #h2: http2.Http2Server;
  readonly #sessions = new Set<http2.ServerHttp2Session>();
  readonly #bulk = new Set<TLSSocket>();
  /** Bulk connections whose certificate named an agent, still open (capped: BULK_CONNECTIONS_HEADROOM). */
  #bulkAgents = 0;
  readonly #routes = new Map<string, MethodHandler>();
  readonly #opts: DataPlaneOptions;
  #sessionsGone: (() => void) | null = null;

  constructor(opts: DataPlaneOptions) {
    this.#opts = opts;
    const svc = TransferServiceDefinition;
    const accepting = opts.accepting ?? (() => this.state === "listening");
    // Every method checks its caller before reading a byte (an agent presenting a capability that verifies).
    const admit = opts.admit ?? (() => {});
    const entry = admitted(opts.transfer, opts.maxConcurrentTransfers, accepting, admit);
    const idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.#routes.set(
      `/${svc.fullName}/${svc.methods.transfer.name}`,
      transferMethod(entry, {
        maxMessageBytes: opts.maxMessageBytes,
        idleTimeoutMs,
        busyBeats: opts.busyBeats !== false,
        ...(opts.pool ? { pool: opts.pool } : {}),
      }),
    );
    this.#routes.set(
      `/${svc.fullName}/${svc.methods.listChains.name}`,
      // A ListChainsRequest is three names: a peer gets no big buffer for it.
      listChainsMethod(opts.listChains, {
        maxMessageBytes: MAX_LIST_CHAINS_BYTES,
        idleTimeoutMs,
        admit: (caller) => admit(caller, LIST_CHAINS_METHOD),
      }),
    );
    if (opts.resumePoint) {
      this.#routes.set(
        `/${svc.fullName}/${svc.methods.resumePoint.name}`,
        // A header (its metadata_json at most 1 MiB), not data.
        resumePointMethod(opts.resumePoint, {
          maxMessageBytes: MAX_RESUME_POINT_BYTES,
          idleTimeoutMs,
          admit: (caller) => admit(caller, RESUME_POINT_METHOD),
        }),
      );
    }
    const common: http2.ServerOptions = {
      settings: {
        ...(opts.windowBytes ? { initialWindowSize: opts.windowBytes } : {}),
        // Streams one connection may have open (Node's default is ~2^32): each may hold a message buffer.
        // A peer multiplexes all its transfers to this agent on one connection: room for all it may run.
        maxConcurrentStreams: opts.maxConcurrentTransfers + UNARY_STREAMS_HEADROOM,
      },
      // Busy PINGs (transfer-server.ts busyBeat): one per busy stream per beat, besides the keepalive's.
      // Node allows 10 unanswered ones per session by default and cancels the rest — the same streams'
      // every beat, so past 10 busy transfers on one connection those sources timed out.
      maxOutstandingPings: opts.maxConcurrentTransfers + UNARY_STREAMS_HEADROOM + 2,
      // Like grpc-js: no session memory cap (Node degrades badly when it is hit); what a peer may
      // have in flight is bounded by the receive window and the readers' queues instead.
      maxSessionMemory: Number.MAX_SAFE_INTEGER,
    };
    this.#h2 = http2.createServer(common);
    this.#h2.on("session", (s: http2.ServerHttp2Session) => this.#onSession(s));
    this.#h2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) =>
      this.#onStream(stream, headers),
    );
    this.#h2.on("sessionError", (err: Error) => opts.log?.debug("data plane: connection error", { err }));
    if (opts.tls.insecure) {
      this.#server = this.#h2;
      return;
    }
    const bulk = opts.bulk !== false;
    const server = tls.createServer({
      ...tlsFiles(opts.tls, "transfer server"),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.2",
      ALPNProtocols: bulk ? [ALPN_BULK, ALPN_H2] : [ALPN_H2],
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    });
    server.on("secureConnection", (socket: TLSSocket) => {
      if (socket.alpnProtocol === ALPN_H2) this.#h2.emit("connection", socket);
      else if (socket.alpnProtocol === ALPN_BULK && bulk) this.#onBulk(socket, entry, idleTimeoutMs);
      else socket.destroy(); // no ALPN (or another): neither gRPC nor the bulk channel
    });
    server.on("tlsClientError", (err: Error) => opts.log?.debug("data plane: TLS handshake refused", { err }));
    this.#server = server;
  }

  /** A bulk connection: one transfer to the same (admitted) entry as the Transfer call's. */
  #onBulk(socket: TLSSocket, entry: TransferEntry, idleTimeoutMs: number): void {
    const o = this.#opts;
    const limit = o.maxConcurrentTransfers + BULK_CONNECTIONS_HEADROOM;
    // Counted once its certificate names an agent (serveBulk asks after that check): connections refused
    // for their certificate never take a place from the agents.
    const places = {
      take: (): AppError | null => {
        if (this.#bulkAgents >= limit) {
          return new AppError(
            Status.RESOURCE_EXHAUSTED,
            `this agent already has ${this.#bulkAgents} bulk connections of agents open (limit ${limit}: its ${o.maxConcurrentTransfers} transfers and ${BULK_CONNECTIONS_HEADROOM} opening); retry later`,
          );
        }
        this.#bulkAgents++;
        return null;
      },
      give: () => {
        this.#bulkAgents--;
      },
    };
    this.#bulk.add(socket);
    void serveBulk(socket, {
      places,
      entry,
      maxMessageBytes: o.maxMessageBytes,
      pool: o.pool ?? receivePool,
      idleTimeoutMs,
      busyBeats: o.busyBeats !== false,
      ...(o.revoked ? { revoked: o.revoked } : {}),
      ...(o.log ? { log: o.log } : {}),
      ...(o.audit ? { audit: o.audit } : {}),
    }).finally(() => {
      this.#bulk.delete(socket);
      this.#maybeAllClosed();
    });
  }

  /** Listens on host:port (port 0: a free one); resolves with the bound host:port. */
  async listen(address: string): Promise<string> {
    if (this.state !== "idle") throw new Error(`the data-plane server is ${this.state}`);
    const [host, portText] = splitHostPort(address);
    const bare = host.startsWith("[") ? host.slice(1, -1) : host;
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error) => reject(new Error(`transferListen ${address}: ${e.message}`, { cause: e }));
      this.#server.once("error", onError);
      this.#server.listen(Number(portText), bare, () => {
        this.#server.off("error", onError);
        resolve();
      });
    });
    this.state = "listening";
    return `${host}:${(this.#server.address() as AddressInfo).port}`;
  }

  /** Connections open now (for tests and logs). */
  get connections(): number {
    return this.#sessions.size + this.#bulk.size;
  }

  /**
   * Drains, then stops: no new connections or calls (GOAWAY), calls in flight get `graceMs` to end,
   * then every remaining connection is destroyed (their calls are cancelled). Resolves when closed,
   * or CLOSE_WAIT_MS after the grace period at the latest.
   */
  async shutdown(graceMs: number): Promise<void> {
    if (this.state === "draining" || this.state === "stopped") return;
    const wasListening = this.state === "listening";
    this.state = "draining";
    if (wasListening) this.#server.close();
    for (const s of this.#sessions) s.close();
    const cancel = new AbortController();
    const gone = this.#allClosed();
    await Promise.race([gone, delay(graceMs, cancel.signal).catch(() => {})]);
    if (this.connections > 0) {
      this.#opts.log?.info("data plane: grace period over, cancelling transfers still running", {
        connections: this.connections,
      });
      for (const s of this.#sessions) s.destroy();
      for (const s of this.#bulk) s.destroy();
      await Promise.race([gone, delay(CLOSE_WAIT_MS, cancel.signal).catch(() => {})]);
    }
    cancel.abort();
    this.state = "stopped";
  }

  #allClosed(): Promise<void> {
    if (this.connections === 0) return Promise.resolve();
    return new Promise((r) => {
      this.#sessionsGone = r;
    });
  }

  #maybeAllClosed(): void {
    if (this.connections === 0) this.#sessionsGone?.();
  }

  #onSession(session: http2.ServerHttp2Session): void {
    this.#sessions.add(session);
    session.on("error", (err) => this.#opts.log?.debug("data plane: connection failed", { err }));
    const stopPings = this.#keepalive(session);
    const stopIdle = this.#closeWhenIdle(session);
    session.once("close", () => {
      stopPings();
      stopIdle();
      this.#sessions.delete(session);
      this.#maybeAllClosed();
    });
    if (this.state !== "listening") {
      session.close(); // accepted while draining: GOAWAY at once
      return;
    }
    const bytes = this.#opts.windowBytes;
    if (bytes) {
      try {
        session.setLocalWindowSize(bytes);
      } catch {
        // the session is already closing
      }
    }
  }

  /**
   * Closes the session (GOAWAY) once it has had no stream for `idleSessionMs` (IDLE_SESSION_MS): a peer
   * that connected and transfers nothing does not hold a connection (and this side's pings) for ever.
   */
  #closeWhenIdle(session: http2.ServerHttp2Session): () => void {
    const ms = this.#opts.idleSessionMs ?? IDLE_SESSION_MS;
    let open = 0;
    let timer: NodeJS.Timeout | null = null;
    const arm = () => {
      timer = setTimeout(() => {
        if (open === 0 && !session.closed && !session.destroyed) session.close();
      }, ms);
      timer.unref();
    };
    session.on("stream", (stream: http2.ServerHttp2Stream) => {
      open++;
      if (timer) clearTimeout(timer);
      timer = null;
      stream.once("close", () => {
        if (--open === 0 && !session.closed) arm();
      });
    });
    arm();
    return () => {
      if (timer) clearTimeout(timer);
    };
  }

  /** Pings every keepaliveMs; a ping not answered within keepaliveTimeoutMs destroys the session. */
  #keepalive(session: http2.ServerHttp2Session): () => void {
    const every = this.#opts.keepaliveMs ?? 15_000;
    const within = this.#opts.keepaliveTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | null = null;
    const schedule = (f: () => void, ms: number) => {
      timer = setTimeout(f, ms);
      timer.unref();
    };
    const ping = () => {
      if (session.closed || session.destroyed) return;
      schedule(() => {
        this.#opts.log?.warn("data plane: a peer did not answer a keepalive ping; closing its connection", {
          timeoutMs: within,
        });
        session.destroy();
      }, within);
      try {
        session.ping((err) => {
          if (timer) clearTimeout(timer);
          // Cancelled for too many PINGs outstanding (busy beats): not a dead peer; asked again later.
          if (err && (err as { code?: string }).code === "ERR_HTTP2_PING_CANCEL" && !session.destroyed)
            schedule(ping, every);
          else if (err) session.destroy();
          else schedule(ping, every);
        });
      } catch {
        session.destroy();
      }
    };
    schedule(ping, every);
    return () => {
      if (timer) clearTimeout(timer);
    };
  }

  #onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on("error", () => {}); // resets show as close; the call's signal tells its handler
    const ct = String(headers["content-type"] ?? "");
    if (headers[":method"] !== "POST" || !ct.startsWith("application/grpc")) {
      stream.respond({ ":status": 415 }, { endStream: true });
      return;
    }
    const path = String(headers[":path"] ?? "");
    const timeout = headers["grpc-timeout"];
    const call = new ServerCall(stream, path, timeout === undefined ? undefined : String(timeout), headers);
    if (call.done) return; // a malformed grpc-timeout was answered
    const enc = headers["grpc-encoding"];
    if (enc !== undefined && enc !== "identity") {
      call.fail(Status.UNIMPLEMENTED, `grpc-encoding ${String(enc)} is not supported; send identity`);
      return;
    }
    const route = this.#routes.get(path);
    if (!route) {
      call.fail(Status.UNIMPLEMENTED, `the server does not implement the method ${path}`);
      return;
    }
    // Who: only agents of the deployment (transfer-authz.ts); what a Transfer may write is the
    // transfer entry's check (authorizeTransfer), before its sink sees the stream.
    const caller = transferCallerOf(stream, headers, this.#opts.tls.insecure === true, this.#opts.revoked);
    const refusal = dataPlaneRefusal(caller);
    if (refusal) {
      this.#opts.log?.warn("data plane: refused a call", { method: path, reason: refusal.message });
      auditDataPlaneRefusal(this.#opts.audit, caller, path, refusal);
      call.fail(refusal.status, refusal.message);
      return;
    }
    route(call, caller);
  }
}
