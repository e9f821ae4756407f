/**
 * Reaching the destination of a transfer: a peer agent over gRPC (mutual TLS, kept open per address:
 * a grpc-js channel for the small calls; for the data, the bulk channel — bulk/client.ts, a TLS
 * connection per transfer without HTTP/2 — when `transfer.bulk` is "auto" and the peer offers it,
 * else a TransferClient — node:http2, owning its buffers — for the Transfer call), or this agent's own
 * sink in-process when the destination is the same cluster (the shortcut: no network, no
 * serialization, same engine). Insecure mode (tests) has no bulk channel.
 */

import type { TLSSocket } from "node:tls";
import { ChannelCredentials } from "@grpc/grpc-js";
import { type Channel, type ChannelOptions, createChannel, createClient, Metadata } from "nice-grpc";
import { Status } from "nice-grpc-common";
import { CAPABILITY_HEADER } from "../../src/common/capability";
import { AppError } from "../../src/common/errors";
import type { Logger } from "../../src/common/log";
import type { Revoked } from "../../src/common/revocations";
import { linkSignals } from "../../src/common/signals";
import { channelCredentials, type TlsConfig, tlsChannelOptions, tlsFiles } from "../../src/common/tls";
import { type TransferServiceClient, TransferServiceDefinition } from "../../src/gen/rbdbackup/v1/transfer";
import { BulkClient, H2_FEATURES } from "./bulk/client";
import { MAX_MESSAGE_BYTES } from "./protocol";
import type { TransferTarget } from "./target";
import { destinationRefusal, peerServerCheck } from "./transfer-authz";
import { TransferClient } from "./transfer-client";

/** Channel settings for agent ↔ agent: large messages, keepalives so a dead peer is noticed. */
export const peerChannelOptions: ChannelOptions = {
  "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
  "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  "grpc.keepalive_time_ms": 15_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
};

/** Deadline for the small unary calls to a peer. */
export const UNARY_DEADLINE_MS = 30_000;

/**
 * A unary call to the peer, bounded by `ms`. Its deadline passing is DEADLINE_EXCEEDED naming the peer
 * and the call: the timeout's own reason (a DOMException "TimeoutError", which nice-grpc rejects with)
 * would reach the job as INTERNAL "internal error (see the server's log)". The caller's own abort stays
 * what it was.
 */
async function bounded<T>(
  label: string,
  what: string,
  ms: number,
  signal: AbortSignal,
  call: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const timeout = AbortSignal.timeout(ms);
  const linked = linkSignals(signal, timeout);
  try {
    return await call(linked.signal);
  } catch (e) {
    if (timeout.aborted && !signal.aborted) {
      throw new AppError(Status.DEADLINE_EXCEEDED, `${label} did not answer ${what} within ${ms / 1000} s`, {
        cause: e,
      });
    }
    throw e;
  } finally {
    linked.dispose();
  }
}

/** A unary call's options: its signal, and the capability as `rbdbackup-capability` metadata when there is one. */
const withCapability = (signal: AbortSignal, capability: string | undefined) => ({
  signal,
  ...(capability ? { metadata: Metadata({ [CAPABILITY_HEADER]: capability }) } : {}),
});

/** The data's way to a peer: the bulk channel (falling back to HTTP/2 by itself), or HTTP/2 only. */
type DataClient = TransferClient | BulkClient;

export function remoteTarget(
  address: string,
  client: TransferServiceClient,
  bulk: DataClient,
  unaryDeadlineMs = UNARY_DEADLINE_MS,
): TransferTarget {
  const label = `agent ${address}`;
  return {
    label,
    transfer: (messages, signal, capability) => bulk.transfer(messages, signal, capability),
    features: async (signal) => (bulk instanceof BulkClient ? bulk.features(signal) : H2_FEATURES),
    listChains: (pool, namespace, volumeImage, signal, capability) =>
      bounded(label, "ListChains", unaryDeadlineMs, signal, (s) =>
        client.listChains({ pool, namespace, volumeImage }, withCapability(s, capability)),
      ),
    resumePoint: (header, signal, capability) =>
      bounded(label, "ResumePoint", unaryDeadlineMs, signal, (s) =>
        client.resumePoint({ header }, withCapability(s, capability)),
      ),
  };
}

export interface PeersOptions {
  /** transfer.bulk: "auto" uses the bulk channel with peers that offer it; "off" only HTTP/2. */
  bulk?: "auto" | "off";
  /** transfer.bulkIdleTimeoutMs. */
  bulkIdleTimeoutMs?: number;
  /** Destination certificates refused on the bulk channel (the agent's auth.revokedCertificatesFile). */
  revoked?: Revoked;
}

/** The peers' gRPC channel credentials: mutual TLS whose server check is `checkServer` (plaintext in insecure mode). */
function peerCredentials(tls: TlsConfig, checkServer: ReturnType<typeof peerServerCheck>): ChannelCredentials {
  if (tls.insecure) return channelCredentials(tls);
  const f = tlsFiles(tls, "peer channel");
  return ChannelCredentials.createSsl(f.ca, f.key, f.cert, { checkServerIdentity: checkServer });
}

export class Peers {
  #clients = new Map<
    string,
    {
      channel: Channel;
      client: TransferServiceClient;
      h2: TransferClient;
      bulk: DataClient;
    }
  >();

  constructor(
    readonly tls: TlsConfig,
    readonly local: TransferTarget,
    readonly log?: Logger,
    readonly opts: PeersOptions = {},
  ) {}

  target(address: string): TransferTarget {
    if (address === "") return this.local;
    let c = this.#clients.get(address);
    if (!c) {
      // Who is at the address: the channel of ListChains and ResumePoint checks in its handshake that the
      // server is an agent whose certificate is not revoked (peerServerCheck); every transfer, over the
      // bulk channel or HTTP/2, that it is the very agent its capability names (destinationRefusal, with
      // the list as it is then) — exact statuses, before a byte of the volume goes out.
      const revoked = this.opts.revoked;
      const checkServer = peerServerCheck(revoked);
      const channel = createChannel(address, peerCredentials(this.tls, checkServer), {
        ...peerChannelOptions,
        ...tlsChannelOptions(address, this.tls),
      });
      const log = this.log ? { log: this.log.child({ peer: address }) } : {};
      const idle = this.opts.bulkIdleTimeoutMs ? { idleTimeoutMs: this.opts.bulkIdleTimeoutMs } : {};
      const h2 = new TransferClient(address, this.tls, {
        ...log,
        ...idle,
        ...(this.tls.insecure
          ? {}
          : {
              checkDestination: (socket: TLSSocket, cap: string | undefined) =>
                destinationRefusal(socket, cap, revoked),
            }),
      });
      const useBulk = (this.opts.bulk ?? "auto") === "auto" && !this.tls.insecure;
      c = {
        channel,
        client: createClient(TransferServiceDefinition, channel),
        h2,
        bulk: useBulk
          ? new BulkClient(address, this.tls, h2, { ...log, ...idle, ...(revoked ? { revoked } : {}) })
          : h2,
      };
      this.#clients.set(address, c);
    }
    return remoteTarget(address, c.client, c.bulk);
  }

  close(): void {
    for (const { channel, h2 } of this.#clients.values()) {
      channel.close();
      h2.close();
    }
    this.#clients.clear();
  }
}
