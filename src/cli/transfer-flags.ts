/**
 * `--compression none|zstd|lz4` and `--bandwidth-limit RATE`: a job's TransferOptions (common.proto) on
 * `backup create`, `backup restore` and `policy create|update`. A rate is bytes per second with an
 * optional binary suffix (K, M, G, T: powers of 1024; "100M" = 100 MiB/s; 0 = no cap of its own);
 * the coordinator checks the range (0, or at least 1 MiB/s).
 */
import { Compression, type TransferOptions } from "../gen/rbdbackup/v1/common";
import { parseChoice, UsageError } from "./args";

export const transferFlags = {
  compression: { type: "string" },
  "bandwidth-limit": { type: "string" },
} as const;

export const TRANSFER_SYNOPSIS = "[--compression none|zstd|lz4] [--bandwidth-limit RATE]";

export const transferFlagHelp: [string, string][] = [
  [
    "--compression none|zstd|lz4",
    "compress the data between the agents (when the receiving agent can decompress it; default none)",
  ],
  [
    "--bandwidth-limit RATE",
    "cap on the bytes per second this job puts on the wire: a number with an optional K, M, G or T (powers of 1024), e.g. 100M; at least 1M; 0 = none",
  ],
];

const compressions = {
  none: Compression.COMPRESSION_NONE,
  zstd: Compression.COMPRESSION_ZSTD,
  lz4: Compression.COMPRESSION_LZ4,
};

const SUFFIX: Record<string, number> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** "8388608", "100M", "1.5G", "512KiB", "10M/s" → bytes per second; undefined when the flag is absent. */
export function parseRate(value: string | undefined, flag = "bandwidth-limit"): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?(?:\/s)?$/i.exec(value.trim());
  const n = m ? Math.round(Number(m[1]) * (SUFFIX[(m[2] ?? "").toLowerCase()] ?? Number.NaN)) : Number.NaN;
  if (!Number.isSafeInteger(n)) {
    throw new UsageError(`--${flag} must be bytes per second like 8388608, 100M or 1G (0 = no cap), got "${value}"`);
  }
  return n;
}

/**
 * The TransferOptions of the flags, on top of `base` (a flag not given keeps its field); undefined when
 * neither flag is given and there is no base.
 */
export function parseTransfer(
  values: { compression?: string; "bandwidth-limit"?: string },
  base?: TransferOptions,
): TransferOptions | undefined {
  const compression = parseChoice(values.compression, "compression", compressions);
  const rate = parseRate(values["bandwidth-limit"]);
  if (compression === undefined && rate === undefined) return base;
  return {
    compression: compression ?? base?.compression ?? Compression.COMPRESSION_NONE,
    bandwidthLimitBytesPerSecond: rate ?? base?.bandwidthLimitBytesPerSecond ?? 0,
  };
}

/** `{ transfer }` for a request when a flag was given, else nothing. */
export function transferField(values: { compression?: string; "bandwidth-limit"?: string }): {
  transfer?: TransferOptions;
} {
  const transfer = parseTransfer(values);
  return transfer ? { transfer } : {};
}

/** "zstd, at most 100 MiB/s"; undefined for options that ask for nothing. */
export function transferText(t: TransferOptions | undefined): string | undefined {
  if (!t) return undefined;
  const parts: string[] = [];
  if (t.compression !== Compression.COMPRESSION_NONE) {
    parts.push(Compression[t.compression]?.replace("COMPRESSION_", "").toLowerCase() ?? String(t.compression));
  }
  const bw = t.bandwidthLimitBytesPerSecond;
  if (bw > 0) parts.push(`at most ${bw % 2 ** 20 === 0 ? `${bw / 2 ** 20} MiB/s` : `${bw} bytes/s`}`);
  return parts.length ? parts.join(", ") : undefined;
}
