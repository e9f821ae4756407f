/**
 * The source's client of the bulk channel: a fresh mutually authenticated TLS connection per transfer
 * to the peer's data-plane port, offering ALPN "rbdbackup-bulk/1" before "h2" (send.ts streams the
 * transfer over it). A peer that picks "h2" (an agent that predates the channel, or has it off) is
 * served by the HTTP/2 Transfer call instead (`fallback`, transfer-client.ts), and remembered as such
 * for `fallbackMs`, so agents of both versions work together without a wasted handshake per transfer.
 *
 * Same files and server-name rule as every channel (src/common/tls.ts), a connect deadline
 * (UNAVAILABLE, like an unreachable peer on HTTP/2), cancellation by AbortSignal while connecting. The
 * server must be the destination agent the transfer's capability names (destinationRefusal), checked
 * on every handshake before anything is sent.
 */
import tls, { type TLSSocket } from "node:tls";
import { AbortError } from "abort-controller-x";
import { ClientError, Status } from "nice-grpc-common";
import { splitHostPort } from "../../../src/common/address";
import { type Logger, logger } from "../../../src/common/log";
import type { Revoked } from "../../../src/common/revocations";
import { type TlsConfig, tlsFiles, tlsServerName } from "../../../src/common/tls";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import type { TransferMessage, TransferSummary } from "../../../src/gen/rbdbackup/v1/transfer";
import type { TransferFeatures } from "../target";
import { destinationRefusal } from "../transfer-authz";
import { CANCEL_WAIT_MS, type TransferClient } from "../transfer-client";
import { type FramePool, framePool } from "../wire";
import { ALPN_BULK, ALPN_H2, BULK_PATH, DEFAULT_IDLE_TIMEOUT_MS } from "./protocol";
import { sendBulk } from "./send";

/** How long a peer that picked h2 is served over HTTP/2 before the bulk channel is offered again. */
const FALLBACK_MS = 5 * 60_000;

export const BULK_FEATURES: TransferFeatures = {
  bulk: true,
  compression: [Compression.COMPRESSION_ZSTD, Compression.COMPRESSION_LZ4],
};
export const H2_FEATURES: TransferFeatures = { bulk: false, compression: [] };

export interface BulkClientOptions {
  idleTimeoutMs?: number;
  connectTimeoutMs?: number;
  cancelWaitMs?: number;
  fallbackMs?: number;
  frames?: FramePool;
  log?: Logger;
  /** Destination certificates refused (the agent's auth.revokedCertificatesFile). */
  revoked?: Revoked;
}

export class BulkClient {
  /** Until when the peer is taken to speak only h2 (0: not known to). */
  #h2Until = 0;
  /** The peer selected the bulk channel last time it was asked. */
  #bulkSeen = false;
  readonly #o: Required<Omit<BulkClientOptions, "revoked">> & Pick<BulkClientOptions, "revoked">;
  readonly #connect: tls.ConnectionOptions;

  constructor(
    readonly address: string,
    tlsConfig: TlsConfig,
    readonly fallback: TransferClient,
    opts: BulkClientOptions = {},
  ) {
    this.#o = {
      idleTimeoutMs: opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
      connectTimeoutMs: opts.connectTimeoutMs ?? 20_000,
      cancelWaitMs: opts.cancelWaitMs ?? CANCEL_WAIT_MS,
      fallbackMs: opts.fallbackMs ?? FALLBACK_MS,
      frames: opts.frames ?? framePool,
      log: opts.log ?? logger({ component: "bulk-client" }),
      ...(opts.revoked ? { revoked: opts.revoked } : {}),
    };
    const [host, port] = splitHostPort(address);
    const servername = tlsServerName(address);
    this.#connect = {
      host: host.startsWith("[") ? host.slice(1, -1) : host,
      port: Number(port),
      // One context for every connection to this peer: the CA, certificate and key are parsed once, not
      // per transfer (~2.5 ms of the JS thread each time); the peer's certificate is verified on every
      // handshake against it all the same.
      secureContext: tls.createSecureContext({ ...tlsFiles(tlsConfig, "transfer client"), minVersion: "TLSv1.2" }),
      ...(servername ? { servername } : {}),
      ALPNProtocols: [ALPN_BULK, ALPN_H2],
    };
  }

  /** Whether the last negotiation picked the bulk channel (false before any, or after a fallback). */
  get negotiated(): boolean {
    return this.#bulkSeen && Date.now() >= this.#h2Until;
  }

  /** What the peer supports: asked once with a handshake, then remembered (fallbacks for `fallbackMs`). */
  async features(signal: AbortSignal): Promise<TransferFeatures> {
    if (Date.now() < this.#h2Until) return H2_FEATURES;
    if (this.#bulkSeen) return BULK_FEATURES;
    const socket = await this.#open(signal);
    this.#judge(socket, undefined); // an agent, not revoked: only then is what it offers remembered
    socket.destroy();
    return this.negotiated ? BULK_FEATURES : H2_FEATURES;
  }

  /**
   * Who answered, before a byte of the volume goes out and before what it offers is remembered
   * (transfer-authz.ts destinationRefusal): throws PERMISSION_DENIED / UNAUTHENTICATED, the socket
   * destroyed, when it is not the destination the capability names.
   */
  #judge(socket: TLSSocket, capability: string | undefined): void {
    const refusal = destinationRefusal(socket, capability, this.#o.revoked);
    if (refusal) {
      socket.destroy();
      this.#o.log.warn("refusing to send to the destination", { peer: this.address, why: refusal.message });
      throw new ClientError(BULK_PATH, refusal.status, `refusing to send to ${this.address}: ${refusal.message}`);
    }
    this.#note(socket.alpnProtocol);
  }

  /** TransferTarget.transfer: over the bulk channel when the peer picks it, else over HTTP/2. */
  async transfer(
    messages: AsyncIterable<TransferMessage>,
    signal: AbortSignal,
    capability?: string,
  ): Promise<TransferSummary> {
    if (signal.aborted) throw new AbortError();
    // An h2 peer: the fallback judges its own connection for each transfer (TransferClient checkDestination).
    if (Date.now() < this.#h2Until) return this.fallback.transfer(messages, signal, capability);
    const socket = await this.#open(signal);
    this.#judge(socket, capability);
    if (socket.alpnProtocol !== ALPN_BULK) {
      socket.destroy();
      return this.fallback.transfer(messages, signal, capability);
    }
    const o = this.#o;
    return sendBulk(socket, messages, signal, capability, {
      frames: o.frames,
      idleTimeoutMs: o.idleTimeoutMs,
      cancelWaitMs: o.cancelWaitMs,
      log: o.log,
      peer: this.address,
    });
  }

  /** A handshaken connection (its ALPN noted); UNAVAILABLE when the peer cannot be reached in time. */
  #open(signal: AbortSignal): Promise<TLSSocket> {
    // An abort listener added to an aborted signal never fires: the handshake would run its course.
    if (signal.aborted) return Promise.reject(new AbortError());
    return new Promise<TLSSocket>((resolve, reject) => {
      const socket = tls.connect(this.#connect);
      socket.allowHalfOpen = true; // closing our side (the end of the stream) leaves the answer's way open
      // No Nagle: a chunk's last TLS record would otherwise wait for the ACK of the previous segment
      // (with delayed ACKs, up to 40 ms per chunk); node:http2 sets the same on its sockets.
      socket.setNoDelay(true);
      const fail = (err: Error) => {
        cleanup();
        socket.destroy();
        reject(err);
      };
      const timer = setTimeout(
        () => fail(this.#unreachable(`connecting took longer than ${this.#o.connectTimeoutMs} ms`)),
        this.#o.connectTimeoutMs,
      );
      const onAbort = () => fail(new AbortError());
      const onError = (e: Error) => fail(this.#unreachable(e.message));
      const cleanup = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        socket.off("error", onError);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      socket.once("error", onError);
      socket.once("secureConnect", () => {
        cleanup();
        socket.on("error", () => {}); // from here on, sendBulk reports failures
        resolve(socket); // what it offers is noted once it is judged (#judge)
      });
    });
  }

  #note(alpn: string | false | null): void {
    if (alpn === ALPN_BULK) {
      this.#bulkSeen = true;
      this.#h2Until = 0;
      return;
    }
    this.#bulkSeen = false;
    this.#h2Until = Date.now() + this.#o.fallbackMs;
    this.#o.log.info("the peer does not offer the bulk channel; transfers to it use HTTP/2", {
      peer: this.address,
      alpn: alpn || "none",
      forMs: this.#o.fallbackMs,
    });
  }

  #unreachable(why: string): ClientError {
    return new ClientError(BULK_PATH, Status.UNAVAILABLE, `cannot reach ${this.address}: ${why}`);
  }
}
