/**
 * One HTTP/2 connection to one peer agent, shared by the transfers to it: opened on first use with a
 * connect deadline, replaced when it fails or the peer sends GOAWAY, kept alive (ref'ed) only while a
 * transfer runs, and checked with keepalive pings meanwhile — a peer that stops answering fails the
 * connection (and its transfers) instead of blocking them. Left without a transfer for `idleCloseMs`
 * it is closed by this side, before the peer's own idle close (GOAWAY) could race a new transfer.
 */
import http2 from "node:http2";
import type { PeerCertificate } from "node:tls";
import { type TlsConfig, tlsFiles, tlsServerName } from "../../src/common/tls";
import { busyPingStream, CLIENT_IDLE_SESSION_MS } from "./protocol";

export interface PeerConnectionOptions {
  /** Checks the server's certificate in the handshake (transfer-authz.ts peerServerCheck); the host name alone when absent. */
  checkServer?: (host: string, cert: PeerCertificate) => Error | undefined;
  /** Give up connecting after this long. */
  connectTimeoutMs: number;
  /** While a transfer runs: ping every `keepaliveMs`, fail the connection if one is not answered in `keepaliveTimeoutMs`. */
  keepaliveMs: number;
  keepaliveTimeoutMs: number;
  /** Close the connection after this long without a transfer (CLIENT_IDLE_SESSION_MS; tests shorten it). */
  idleCloseMs?: number;
}

export class PeerConnection {
  #session: http2.ClientHttp2Session | null = null;
  readonly #errors = new WeakMap<http2.ClientHttp2Session, Error>();
  readonly #busy = new WeakMap<http2.ClientHttp2Session, Map<http2.ClientHttp2Stream, () => void>>();
  #active = 0;
  #pinger: NodeJS.Timeout | null = null;
  #idle: NodeJS.Timeout | null = null;
  readonly #authority: string;
  readonly #connectOptions: http2.SecureClientSessionOptions;

  constructor(
    readonly address: string,
    tls: TlsConfig,
    readonly o: PeerConnectionOptions,
  ) {
    const insecure = !!tls.insecure;
    this.#authority = `${insecure ? "http" : "https"}://${address}`;
    // The channels' server-name rule (tlsServerName); without one, Node checks the URL's host.
    const servername = tlsServerName(address);
    this.#connectOptions = insecure
      ? {}
      : {
          ...tlsFiles(tls, "transfer client"),
          ...(servername ? { servername } : {}),
          ...(o.checkServer ? { checkServerIdentity: o.checkServer } : {}),
        };
  }

  /** The open session, or a new one (connecting; streams opened on it wait for the connection). */
  session(): http2.ClientHttp2Session {
    const s = this.#session;
    if (s && !s.closed && !s.destroyed) return s;
    const session = http2.connect(this.#authority, this.#connectOptions);
    this.#session = session;
    const forget = () => {
      if (this.#session === session) this.#session = null;
    };
    const timer = setTimeout(() => {
      session.destroy(new Error(`connecting to ${this.address} took longer than ${this.o.connectTimeoutMs} ms`));
    }, this.o.connectTimeoutMs);
    timer.unref();
    session.once("connect", () => {
      clearTimeout(timer);
      // Connected for a transfer that then did not start (refused by the destination check, aborted):
      // idle from now, closed like one whose transfers ended.
      if (this.#active === 0) this.#armIdle(session);
    });
    // The one 'error' listener of the session, however many transfers it carries (a listener per
    // transfer warned MaxListenersExceeded past 10 at once): its error is kept for them (errorOf).
    session.on("error", (e) => {
      if (!this.#errors.has(session)) this.#errors.set(session, e);
      forget();
    });
    session.on("goaway", () => forget());
    // The peer's PINGs saying a transfer's stream is busy (protocol.ts busyPing): one listener per session.
    session.on("ping", (payload: Buffer) => {
      const id = busyPingStream(payload);
      if (id === null) return;
      for (const [stream, onBusy] of this.#busy.get(session) ?? []) if (stream.id === id) onBusy();
    });
    session.on("close", () => {
      clearTimeout(timer);
      forget();
    });
    if (this.#active === 0) session.unref();
    return session;
  }

  /**
   * Calls `onBusy` when the peer says `stream` is busy (a busy PING naming its id) until the returned
   * function is called.
   */
  onBusy(session: http2.ClientHttp2Session, stream: http2.ClientHttp2Stream, onBusy: () => void): () => void {
    let streams = this.#busy.get(session);
    if (!streams) {
      streams = new Map();
      this.#busy.set(session, streams);
    }
    streams.set(stream, onBusy);
    return () => streams.delete(stream);
  }

  /** The first error `session` reported, if any: the transfers on it read it when their streams close. */
  errorOf(session: http2.ClientHttp2Session): Error | undefined {
    return this.#errors.get(session);
  }

  /** A transfer began on `session`: keep the process alive and ping the peer while any runs. */
  began(session: http2.ClientHttp2Session): void {
    if (this.#idle) clearTimeout(this.#idle);
    this.#idle = null;
    if (this.#active++ === 0) {
      session.ref();
      this.#pinger = setInterval(() => this.#ping(), this.o.keepaliveMs);
      this.#pinger.unref();
    }
  }

  /** A transfer ended. */
  ended(): void {
    if (--this.#active > 0) return;
    if (this.#pinger) clearInterval(this.#pinger);
    this.#pinger = null;
    const session = this.#session;
    session?.unref();
    if (session) this.#armIdle(session);
  }

  /** Closes `session` after idleCloseMs unless a transfer begins on it first (began clears the timer). */
  #armIdle(session: http2.ClientHttp2Session): void {
    if (this.#idle) clearTimeout(this.#idle);
    this.#idle = setTimeout(() => {
      this.#idle = null;
      if (this.#active > 0 || this.#session !== session) return;
      this.#session = null;
      session.close();
    }, this.o.idleCloseMs ?? CLIENT_IDLE_SESSION_MS);
    this.#idle.unref();
  }

  #ping(): void {
    const session = this.#session;
    // A connection the peer sent GOAWAY on is closed and forgotten (transfers already on it finish there):
    // Node cancels any ping on a closed session at once (ERR_HTTP2_PING_CANCEL, measured 2026-12-04), so
    // those transfers are bounded by their own idle limits (transfer-client.ts), not by pings.
    if (!session || session.closed || session.destroyed || session.connecting) return;
    const timer = setTimeout(() => {
      session.destroy(
        new Error(`the peer ${this.address} did not answer a keepalive ping within ${this.o.keepaliveTimeoutMs} ms`),
      );
    }, this.o.keepaliveTimeoutMs);
    timer.unref();
    try {
      session.ping((err) => {
        clearTimeout(timer);
        if (err && !session.destroyed) session.destroy(err);
      });
    } catch {
      clearTimeout(timer);
    }
  }

  close(): void {
    if (this.#idle) clearTimeout(this.#idle);
    this.#idle = null;
    if (this.#pinger) clearInterval(this.#pinger);
    this.#pinger = null;
    this.#session?.close();
    this.#session = null;
  }
}
