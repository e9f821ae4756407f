/**
 * The destination of a transfer as the source sees it, wherever it runs: a peer agent over gRPC
 * (peers.ts) or this agent's own sink in-process (the same-cluster shortcut).
 */
import type { Compression } from "../../src/gen/rbdbackup/v1/common";
import type {
  ListChainsResponse,
  ResumePointResponse,
  TransferHeader,
  TransferMessage,
  TransferSummary,
} from "../../src/gen/rbdbackup/v1/transfer";

export interface TransferTarget {
  /**
   * Streams `messages` to the destination; resolves with its summary once it committed. `capability`
   * (the coordinator's transfer capability for this stream) goes to a peer as the rbdbackup-capability
   * header; this agent's own sink (the same-cluster shortcut) needs none.
   */
  transfer(
    messages: AsyncIterable<TransferMessage>,
    signal: AbortSignal,
    capability?: string,
  ): Promise<TransferSummary>;
  /**
   * The destination's backup chains of `volumeImage` (TransferService.ListChains). A peer requires
   * `capability`, the backup's transfer capability (it covers the volume's chains in that pool).
   */
  listChains(
    pool: string,
    namespace: string,
    volumeImage: string,
    signal: AbortSignal,
    capability?: string,
  ): Promise<ListChainsResponse>;
  /** Where a retry with `header` may resume (TransferService.ResumePoint; the same capability as its Transfer). */
  resumePoint(header: TransferHeader, signal: AbortSignal, capability?: string): Promise<ResumePointResponse>;
  /** For messages: "this agent" or the peer's address. */
  readonly label: string;
  /**
   * What the destination supports, learnt when connecting (the bulk channel's ALPN): absent or
   * `bulk: false` = an agent that only speaks the HTTP/2 Transfer call (no compression).
   */
  features?(signal: AbortSignal): Promise<TransferFeatures>;
}

export interface TransferFeatures {
  /** The destination speaks the bulk channel (transfer.proto BulkOpen). */
  bulk: boolean;
  /** Chunk compressions it decompresses (none when !bulk). */
  compression: readonly Compression[];
}
