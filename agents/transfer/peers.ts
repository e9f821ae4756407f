/**
 * Reaching the destination of a transfer: a peer agent over gRPC (mutual TLS, kept open per address:
 * a grpc-js channel for the small calls, a TransferClient — node:http2, owning its buffers — for the
 * bulk Transfer stream), or this agent's own sink in-process when the destination is the same cluster
 * (the shortcut: no network, no serialization, same engine).
 */
import { type Channel, type ChannelOptions, createChannel, createClient, Metadata } from "nice-grpc";
import { CAPABILITY_HEADER } from "../../src/common/capability";
import type { Logger } from "../../src/common/log";
import { channelCredentials, type TlsConfig, tlsChannelOptions } from "../../src/common/tls";
import { Compression } from "../../src/gen/rbdbackup/v1/common";
import { type TransferServiceClient, TransferServiceDefinition } from "../../src/gen/rbdbackup/v1/transfer";
import { MAX_MESSAGE_BYTES } from "./protocol";
import type { TransferTarget } from "./target";
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
const UNARY_DEADLINE_MS = 30_000;

function withDeadline(signal: AbortSignal, ms: number): AbortSignal {
  return AbortSignal.any([signal, AbortSignal.timeout(ms)]);
}

export function remoteTarget(address: string, client: TransferServiceClient, bulk: TransferClient): TransferTarget {
  return {
    label: `agent ${address}`,
    transfer: (messages, signal, capability) => bulk.transfer(messages, signal, capability),
    // TEMPORARY (r2-compress, until r1's bulk channel negotiates features): every peer of this build
    // decompresses chunks on the HTTP/2 Transfer call too (sink/decompress.ts). r1 replaces this with
    // the negotiated answer (bulk ⇒ [ZSTD, LZ4]); a peer of an older build would fail such a transfer (DATA_LOSS).
    features: async () => ({ bulk: false, compression: [Compression.COMPRESSION_ZSTD, Compression.COMPRESSION_LZ4] }),
    listChains: (pool, namespace, volumeImage, signal) =>
      client.listChains({ pool, namespace, volumeImage }, { signal: withDeadline(signal, UNARY_DEADLINE_MS) }),
    resumePoint: (header, signal, capability) =>
      client.resumePoint(
        { header },
        {
          signal: withDeadline(signal, UNARY_DEADLINE_MS),
          ...(capability ? { metadata: Metadata({ [CAPABILITY_HEADER]: capability }) } : {}),
        },
      ),
  };
}

export class Peers {
  #clients = new Map<string, { channel: Channel; client: TransferServiceClient; bulk: TransferClient }>();

  constructor(
    readonly tls: TlsConfig,
    readonly local: TransferTarget,
    readonly log?: Logger,
  ) {}

  target(address: string): TransferTarget {
    if (address === "") return this.local;
    let c = this.#clients.get(address);
    if (!c) {
      const channel = createChannel(address, channelCredentials(this.tls), {
        ...peerChannelOptions,
        ...tlsChannelOptions(address, this.tls),
      });
      c = {
        channel,
        client: createClient(TransferServiceDefinition, channel),
        bulk: new TransferClient(address, this.tls, this.log ? { log: this.log.child({ peer: address }) } : {}),
      };
      this.#clients.set(address, c);
    }
    return remoteTarget(address, c.client, c.bulk);
  }

  close(): void {
    for (const { channel, bulk } of this.#clients.values()) {
      channel.close();
      bulk.close();
    }
    this.#clients.clear();
  }
}
