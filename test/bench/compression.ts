/**
 * Wire compression's cost and gain per algorithm and level, side by side in one run: the addon's codecs
 * (agents/ceph/codec.ts) on the transfer's chunks (default 2 MiB), `inFlight` at once on libuv's pool
 * as compressStream runs them, over (a) random data, (b) text-like data (logs), (c) mostly zeros with
 * random 4 KiB blocks (a sparse volume's allocated objects). Figures: ratio (wire / raw bytes), wall
 * MiB/s and CPU-seconds per GiB of raw data (the whole process: the pool's threads included) to
 * compress and to decompress. Compare rows of one run, never absolute figures across runs.
 *
 *   node dist/test/bench/compression.js [--mib 512] [--chunk-kib 2048] [--in-flight 4] [--json]
 */
import { randomBytes } from "node:crypto";
import { type CodecAlgorithm, compress, decompress } from "../../agents/ceph";
import { worthItBelow } from "../../agents/transfer/shaping/compress";
import { arg } from "./measure";

const MiB = 1 << 20;
const GiB = 1024 * MiB;
const totalMiB = Number(arg("mib", "512"));
const chunk = Number(arg("chunk-kib", "2048")) * 1024;
const inFlight = Number(arg("in-flight", "4"));
const json = process.argv.includes("--json");

function textChunk(n: number, seed: number): Buffer {
  let s = "";
  for (let i = 0; s.length < n; i++) {
    s += `${new Date(1_700_000_000_000 + (seed * 100_000 + i) * 997).toISOString()} host-${(i * 7 + seed) % 13} rbd: wrote object rbd_data.${(seed * 7919 + i).toString(16)} off ${i * 4096} len 4096 ok\n`;
  }
  return Buffer.from(s).subarray(0, n);
}

function sparseChunk(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let off = 0; off + 4096 <= n; off += 4096) if (Math.random() < 0.1) randomBytes(4096).copy(b, off);
  return b;
}

const DISTINCT = 16;
const datasets: Record<string, Buffer[]> = {
  random: Array.from({ length: DISTINCT }, () => randomBytes(chunk)),
  text: Array.from({ length: DISTINCT }, (_, i) => textChunk(chunk, i)),
  "zeros+noise": Array.from({ length: DISTINCT }, () => sparseChunk(chunk)),
};

interface Row {
  algorithm: string;
  level: number;
  data: string;
  ratio: number;
  sentRawChunks: number;
  compressMiBs: number;
  compressCpuSPerGiB: number;
  decompressMiBs: number;
  decompressCpuSPerGiB: number;
}

/** Runs `fn(i)` for i < n with `inFlight` at once; returns wall seconds and process CPU seconds. */
async function timed(n: number, fn: (i: number) => Promise<void>): Promise<{ wall: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < n) await fn(next++);
    }),
  );
  const c = process.cpuUsage(c0);
  return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

async function measure(algorithm: CodecAlgorithm, level: number, data: string, mib: number): Promise<Row> {
  const chunks = datasets[data] as Buffer[];
  const n = Math.max(inFlight, Math.round((mib * MiB) / chunk));
  const out: Array<Buffer | null> = new Array(DISTINCT).fill(null);
  let wire = 0;
  let raw = 0;
  const c = await timed(n, async (i) => {
    const src = chunks[i % DISTINCT] as Buffer;
    const z = await compress(algorithm, level, src, worthItBelow(src.length));
    out[i % DISTINCT] = z;
    wire += z ? z.length : src.length;
    raw += src.length;
  });
  const seen = out.slice(0, Math.min(n, DISTINCT));
  const sentRaw = seen.filter((z) => z === null).length / seen.length;
  const bytes = n * chunk;
  const into = Array.from({ length: inFlight * 2 }, () => Buffer.allocUnsafe(chunk));
  const d = await timed(n, async (i) => {
    const z = out[i % DISTINCT];
    if (z) await decompress(algorithm, z, chunk, into[i % into.length]);
  });
  return {
    algorithm,
    level,
    data,
    ratio: wire / raw,
    sentRawChunks: sentRaw,
    compressMiBs: bytes / MiB / c.wall,
    compressCpuSPerGiB: (c.cpu * GiB) / bytes,
    // Over the chunks that went compressed (none: nothing to decompress).
    decompressMiBs: sentRaw === 1 ? 0 : (bytes * (1 - sentRaw)) / MiB / d.wall,
    decompressCpuSPerGiB: sentRaw === 1 ? 0 : (d.cpu * GiB) / (bytes * (1 - sentRaw)),
  };
}

async function main(): Promise<void> {
  const configs: Array<[CodecAlgorithm, number, number]> = [
    ["lz4", 1, totalMiB],
    ["zstd", 1, totalMiB],
    ["zstd", 3, totalMiB],
    ["zstd", 9, totalMiB / 4],
    ["zstd", 19, totalMiB / 32],
  ];
  const rows: Row[] = [];
  for (const data of Object.keys(datasets)) {
    for (const [a, level, mib] of configs) rows.push(await measure(a, level, data, mib));
  }
  if (json) {
    console.log(JSON.stringify({ chunkBytes: chunk, inFlight, rows }, null, 2));
    return;
  }
  console.log(`chunks of ${chunk / 1024} KiB, ${inFlight} in flight; ratio = wire/raw bytes (lower is better)`);
  console.log("data         algo  level  ratio   raw-chunks  compress MiB/s  CPU-s/GiB   decompress MiB/s  CPU-s/GiB");
  for (const r of rows) {
    console.log(
      `${r.data.padEnd(12)} ${r.algorithm.padEnd(5)} ${String(r.level).padStart(5)}  ${r.ratio.toFixed(3).padStart(5)}  ${(r.sentRawChunks * 100).toFixed(0).padStart(9)}%  ${r.compressMiBs.toFixed(0).padStart(14)}  ${r.compressCpuSPerGiB.toFixed(2).padStart(9)}   ${(r.decompressMiBs ? r.decompressMiBs.toFixed(0) : "-").padStart(16)}  ${(r.decompressMiBs ? r.decompressCpuSPerGiB.toFixed(2) : "-").padStart(9)}`,
    );
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
