/**
 * Reaching the destination of a transfer: a peer agent over gRPC (mutual TLS, one channel per address,
 * kept open), or this agent's own sink in-process when the destination is the same cluster (the
 * shortcut: no network, no serialization, same engine).
 */
import { type Channel, type ChannelOptions, createChannel, createClient } from "nice-grpc";
import { channelCredentials, type TlsConfig, tlsChannelOptions } from "../../src/common/tls";
import type { TransferServiceClient } from "../../src/gen/rbdbackup/v1/transfer";
import type { TransferTarget } from "../engine/context";
import { MAX_MESSAGE_BYTES } from "./protocol";
import { FastTransferServiceDefinition } from "./wire";

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

export function remoteTarget(address: string, client: TransferServiceClient): TransferTarget {
  return {
    label: `agent ${address}`,
    transfer: (messages, signal) => client.transfer(messages, { signal }),
    listChains: (pool, namespace, volumeImage, signal) =>
      client.listChains({ pool, namespace, volumeImage }, { signal: withDeadline(signal, UNARY_DEADLINE_MS) }),
  };
}

export class Peers {
  #clients = new Map<string, { channel: Channel; client: TransferServiceClient }>();

  constructor(
    readonly tls: TlsConfig,
    readonly local: TransferTarget,
  ) {}

  target(address: string): TransferTarget {
    if (address === "") return this.local;
    let c = this.#clients.get(address);
    if (!c) {
      const channel = createChannel(address, channelCredentials(this.tls), {
        ...peerChannelOptions,
        ...tlsChannelOptions(address, this.tls),
      });
      c = { channel, client: createClient(FastTransferServiceDefinition, channel) };
      this.#clients.set(address, c);
    }
    return remoteTarget(address, c.client);
  }

  close(): void {
    for (const { channel } of this.#clients.values()) channel.close();
    this.#clients.clear();
  }
}
