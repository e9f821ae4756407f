/**
 * A job's TransferOptions applied on the sending agent: `shapedTarget` wraps the TransferTarget the
 * engine sends to, so every operation (backup, restore, failback, resume) gets compression and
 * bandwidth caps the same way, whatever the transport underneath.
 *
 * Compression needs the destination's support (TransferTarget.features(): an agent that speaks the
 * bulk channel); without it the data goes uncompressed and the log says why. The agent-wide limiter
 * (`limits.bandwidthBytesPerSecond`) applies to every transfer to a peer, the job's own on top of it.
 * The same-cluster shortcut (this agent's own sink) is neither compressed nor capped: nothing crosses
 * a network.
 */
import type { Logger } from "../../../src/common/log";
import { Compression, type TransferOptions } from "../../../src/gen/rbdbackup/v1/common";
import type { TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import type { TransferTarget } from "../target";
import { type CompressDeps, compressStream } from "./compress";
import { limitStream, type RateLimiter } from "./rate-limit";

export interface ShapingDeps extends CompressDeps {
  /** The agent-wide cap (absent: none). */
  agentLimiter?: RateLimiter;
  /** A job's own cap, made per transfer. */
  jobLimiter?(bytesPerSecond: number): RateLimiter;
  log?: Logger;
}

export function shapedTarget(
  inner: TransferTarget,
  options: TransferOptions | undefined,
  deps: ShapingDeps,
  local: boolean,
): TransferTarget {
  const compression = options?.compression ?? Compression.COMPRESSION_NONE;
  const jobCap = options?.bandwidthLimitBytesPerSecond ?? 0;
  if (local || (compression === Compression.COMPRESSION_NONE && jobCap === 0 && !deps.agentLimiter)) return inner;
  return {
    ...inner,
    label: inner.label,
    listChains: inner.listChains.bind(inner),
    resumePoint: inner.resumePoint.bind(inner),
    ...(inner.features ? { features: inner.features.bind(inner) } : {}),
    async transfer(messages: AsyncIterable<TransferMessage>, signal: AbortSignal, capability?: string) {
      let c = compression;
      if (c !== Compression.COMPRESSION_NONE) {
        const f = inner.features ? await inner.features(signal) : undefined;
        if (!f?.compression.includes(c)) {
          deps.log?.warn("the destination cannot decompress; sending uncompressed", {
            peer: inner.label,
            compression: Compression[c],
          });
          c = Compression.COMPRESSION_NONE;
        }
      }
      const limiters: RateLimiter[] = [];
      if (jobCap > 0 && deps.jobLimiter) limiters.push(deps.jobLimiter(jobCap));
      if (deps.agentLimiter) limiters.push(deps.agentLimiter);
      const shaped = limitStream(compressStream(messages, c, deps), limiters, signal);
      return inner.transfer(shaped, signal, capability);
    },
  };
}
