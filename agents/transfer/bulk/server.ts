/**
 * The destination's side of the bulk channel: one TLS connection that negotiated "rbdbackup-bulk/1"
 * (data-plane-server.ts hands it here) carries one transfer — BulkOpen, the TransferMessages, the
 * client's close — and gets one BulkResult back, then the connection is closed.
 *
 * - Framing and buffers as the Transfer call's (message-reader.ts): chunks assembled in ReceivePool
 *   buffers — the TLS layer decrypts straight into them (the reader's `direct` mode) — released by the
 *   sink once written; at most a couple of messages queued, then the socket
 *   is paused (TCP's window closes, the source's writes stop draining) — backpressure end to end.
 * - Who: the caller's verified certificate must name an agent and not be revoked (transfer-authz.ts
 *   dataPlaneRefusal, audited like the HTTP/2 path); its BulkOpen.capability is what Transfer takes as the
 *   rbdbackup-capability header — the entry checks it against the header (authorizeTransfer), so the
 *   entry is the very function the Transfer call feeds (same admission, same sink).
 * - Bounded: receiving nothing for `idleTimeoutMs` while this side wants bytes (not paused by
 *   backpressure) ends the transfer with DEADLINE_EXCEEDED; the entry's signal is aborted (it cleans
 *   up) when that happens or the connection is lost. After the answer the server reads on (dropping
 *   what still arrives, so the client's close is seen even by a socket paused by backpressure), and the
 *   client has LINGER_MS to close.
 */
import type { TLSSocket } from "node:tls";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { Logger } from "../../../src/common/log";
import { abortError } from "../../../src/common/retry";
import type { Revoked } from "../../../src/common/revocations";
import { BulkOpen, TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import type { AuthzAudit } from "../authz-audit";
import { beatWhileBusy, failUnlessOpened, MessageReader, type ReceivePool, watchIdle } from "../message-reader";
import {
  auditDataPlaneRefusal,
  callerOfSocket,
  dataPlaneRefusal,
  TRANSFER_METHOD,
  type TransferCaller,
} from "../transfer-authz";
import type { TransferEntry } from "../transfer-server";
import { RELEASE, type Releasable } from "../wire";
import { BULK_VERSION, BUSY_FRAME, resultFrame } from "./protocol";

/** Busy frames are not written while this much is already waiting to go out (a source not reading). */
const BUSY_BACKLOG_BYTES = 64 * 1024;

/** After the answer: how long the client may take to close before the connection is destroyed. */
const LINGER_MS = 10_000;

export interface BulkServerOptions {
  /** The transfer entry, with the server's admission (the same one the Transfer call feeds). */
  entry: TransferEntry;
  maxMessageBytes: number;
  pool: ReceivePool;
  idleTimeoutMs: number;
  /** Whether to send the busy frames a BulkOpen asks for (default true; false: as agents before them). */
  busyBeats?: boolean;
  /** Certificates refused whatever they name (the agent's auth.revokedCertificatesFile). */
  revoked?: Revoked;
  log?: Logger;
  audit?: AuthzAudit;
  /**
   * A place among the bulk connections of agents, taken once the certificate was judged (an AppError: too
   * many open, answered before anything the connection sends is read) and given back at its close.
   */
  places?: { take(): AppError | null; give(): void };
}

type Incoming = TransferMessage | { open: BulkOpen };

function decoder() {
  let first = true;
  return (bytes: Buffer, release: (() => void) | null): Incoming => {
    const what = first ? "a BulkOpen" : "a TransferMessage";
    try {
      if (first) {
        first = false;
        return { open: BulkOpen.decode(bytes) };
      }
      const m = TransferMessage.decode(bytes);
      if (release && m.body?.$case === "chunk") (m as Releasable)[RELEASE] = release;
      return m;
    } catch (e) {
      throw new AppError(Status.INVALID_ARGUMENT, `a message that is not ${what}: ${(e as Error).message}`);
    }
  };
}

/** The largest BulkOpen accepted (the first frame of a connection). */
const MAX_OPEN_BYTES = 64 * 1024;

/** Serves one bulk connection; resolves once it is closed. `insecure`: no certificate checks (tests). */
export function serveBulk(socket: TLSSocket, o: BulkServerOptions, insecure = false): Promise<void> {
  socket.allowHalfOpen = true; // the client's close ends its side only: the answer still goes back
  socket.setNoDelay(true); // no Nagle: the answer (and TLS records ending a chunk) leave at once
  const ac = new AbortController();
  const reader = new MessageReader<Incoming>(socket, {
    maxMessageBytes: o.maxMessageBytes,
    // The BulkOpen: a version and a capability (a few KiB); no caller gets a big buffer for it.
    maxFirstMessageBytes: MAX_OPEN_BYTES,
    pool: o.pool,
    decode: decoder(),
    direct: true,
  });
  /** Why the source's time ran out (the idle bound, or the opening's), if it did. */
  let timedOut: string | null = null;
  const idle = watchIdle(socket, reader, o.idleTimeoutMs, (what) => {
    timedOut = `the source sent ${what}`;
    const e = new AppError(Status.DEADLINE_EXCEEDED, `the source sent ${what} (transfer.bulkIdleTimeoutMs)`);
    // The bulk channel has no pings: a silent source may be a dead host or a cut network, so the stream
    // is aborted like one cut short — a resumable transfer is kept for its retry (transfer.proto).
    reader.fail(e);
    ac.abort(e);
  });
  // The BulkOpen and the transfer's header whole within the same bound, however their bytes trickle in.
  const opening = failUnlessOpened(reader, 2, o.idleTimeoutMs, () => {
    timedOut = `the source's BulkOpen and header did not arrive whole within ${o.idleTimeoutMs} ms`;
    const e = new AppError(
      Status.DEADLINE_EXCEEDED,
      `the source's BulkOpen and header did not arrive whole within ${o.idleTimeoutMs} ms (transfer.bulkIdleTimeoutMs)`,
    );
    reader.fail(e);
    ac.abort(e);
  });
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  socket.on("error", (err) => o.log?.debug("bulk channel: connection failed", { err }));
  socket.once("close", () => {
    idle.stop();
    opening.stop();
    if (!reader.ended) reader.fail(new AppError(Status.UNAVAILABLE, "the source's connection was lost"));
    ac.abort(abortError());
  });

  // Asked for by the BulkOpen: empty frames while this side is busy (beatWhileBusy), until the answer.
  let busy: { stop(): void } | null = null;
  const beatFor = (open: BulkOpen) => {
    if (!open.busyIntervalMs || o.busyBeats === false || socket.destroyed) return;
    busy = beatWhileBusy(socket, reader, open.busyIntervalMs, () => {
      // A source that does not read its beats gets no more of them (nothing piles up in memory).
      if (!socket.destroyed && !socket.writableEnded && socket.writableLength < BUSY_BACKLOG_BYTES)
        socket.write(BUSY_FRAME);
    });
  };
  socket.once("close", () => busy?.stop());

  const answer = (outcome: Parameters<typeof resultFrame>[0]) => {
    idle.stop();
    opening.stop();
    busy?.stop();
    if (socket.destroyed) return;
    socket.end(resultFrame(outcome));
    reader.discard(); // a reader paused by backpressure would never see the client's close
    const t = setTimeout(() => socket.destroy(), LINGER_MS);
    t.unref();
    socket.once("close", () => clearTimeout(t));
  };

  // Who calls is known from the TLS handshake: anyone but an agent is refused before a byte is read.
  // (callerOfSocket: revocation is asked again when the BulkOpen's capability and the header are judged.)
  const peer: Pick<TransferCaller, "identity" | "revoked" | "revokedNow"> = insecure
    ? { identity: null, revoked: null }
    : callerOfSocket(socket, o.revoked);
  const caller = { checked: !insecure, ...peer, capability: undefined };
  const refusal = dataPlaneRefusal(caller);
  if (refusal) {
    o.log?.warn("data plane: refused a bulk connection", { reason: refusal.message });
    auditDataPlaneRefusal(o.audit, caller, TRANSFER_METHOD, refusal);
    answer({ error: new AppError(refusal.status, refusal.message) });
    return closed;
  }
  const full = o.places?.take() ?? null;
  if (full) {
    // Not a warning each: a flood of connections would flood the log (the source's job says it).
    o.log?.debug("data plane: refused a bulk connection", { reason: full.message });
    answer({ error: full });
    return closed;
  }
  if (o.places) {
    const places = o.places;
    socket.once("close", () => places.give());
  }
  const who = {
    checked: !insecure,
    identity: peer.identity,
    ...(peer.revokedNow ? { revokedNow: peer.revokedNow } : {}),
  };
  run(reader, ac.signal, o, who, beatFor).then(
    (summary) => answer({ summary }),
    (error) =>
      answer({
        error: timedOut
          ? new AppError(Status.DEADLINE_EXCEEDED, timedOut, {
              cause: error,
            })
          : error,
      }),
  );
  return closed;
}

/** BulkOpen checked, then the rest of the stream to the entry, as `who` (an agent, admitted by serveBulk). */
async function run(
  reader: MessageReader<Incoming>,
  signal: AbortSignal,
  o: BulkServerOptions,
  who: Omit<TransferCaller, "capability">,
  opened: (open: BulkOpen) => void,
) {
  const it = reader[Symbol.asyncIterator]();
  const first = await it.next();
  const open = first.done ? null : "open" in first.value ? first.value.open : null;
  if (!open) throw new AppError(Status.INVALID_ARGUMENT, "the bulk channel must start with a BulkOpen");
  if (open.version !== BULK_VERSION) {
    throw new AppError(
      Status.UNIMPLEMENTED,
      `bulk protocol version ${open.version} is not supported (this agent speaks ${BULK_VERSION})`,
    );
  }
  opened(open);
  // Who it is was judged before the BulkOpen was read (serveBulk); the capability is the entry's to judge.
  const caller: TransferCaller = { ...who, capability: open.capability || undefined };
  const messages: AsyncIterable<TransferMessage> = {
    [Symbol.asyncIterator]: () => it as AsyncIterator<TransferMessage>,
  };
  return o.entry(messages, signal, caller);
}
