/**
 * Raw throughput of the addon against `rbd bench` on the same cluster, same image, same run:
 * 4 MiB I/Os, 16 in flight, sequential, alternating CLI and addon for several rounds.
 * Both figures exclude process start and connection time (rbd bench reports its own I/O phase;
 * ours is timed from first submission to last completion).
 *
 *   node dist/test/bench/addon-throughput.js [--cluster site-a] [--mib 1024] [--rounds 3] [--json]
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import type { Image } from "../../agents/ceph";
import { connectLab, labCluster, uniqueName } from "../helpers/lab";

const execFileP = promisify(execFile);
const MiB = 1 << 20;
const IO_SIZE = 4 * MiB;
const INFLIGHT = 16;

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? (process.argv[i + 1] as string) : def;
}

const clusterName = arg("cluster", "site-a");
const totalMiB = Number(arg("mib", "1024"));
const rounds = Number(arg("rounds", "3"));
const total = totalMiB * MiB;

async function cliBench(spec: string, type: "read" | "write"): Promise<number> {
  const c = labCluster(clusterName);
  const { stdout } = await execFileP(
    "rbd",
    ["-c", c.conf, "bench", "--io-type", type, "--io-size", String(IO_SIZE), "--io-threads", String(INFLIGHT)].concat([
      "--io-total",
      String(total),
      "--io-pattern",
      "seq",
      spec,
    ]),
    { timeout: 600_000 },
  );
  const m = /ops\/sec:\s*([\d.]+)/.exec(stdout);
  if (!m) throw new Error(`cannot parse rbd bench output: ${stdout}`);
  return (Number(m[1]) * IO_SIZE) / MiB; // MiB/s
}

async function addonBench(image: Image, type: "read" | "write", buffers: Buffer[]): Promise<number> {
  let next = 0;
  const started = process.hrtime.bigint();
  async function lane(k: number): Promise<void> {
    const buf = buffers[k] as Buffer;
    for (;;) {
      const off = next;
      if (off >= total) return;
      next += IO_SIZE;
      if (type === "write") await image.write(buf, off);
      else await image.read(buf, off);
    }
  }
  await Promise.all(Array.from({ length: INFLIGHT }, (_, k) => lane(k)));
  if (type === "write") await image.flush();
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  return total / MiB / secs;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

async function main(): Promise<void> {
  const cluster = await connectLab(clusterName);
  const io = await cluster.openIoCtx("rbd");
  const name = uniqueName("bench-addon");
  await io.imageCreate(name, total);
  const image = await io.imageOpen(name);
  const buffers = Array.from({ length: INFLIGHT }, () => randomBytes(IO_SIZE));
  const spec = `rbd/${name}`;
  const results: Record<string, { cli: number[]; addon: number[] }> = {
    write: { cli: [], addon: [] },
    read: { cli: [], addon: [] },
  };
  try {
    // Warm-up: allocate every object once so later rounds measure overwrites on both sides.
    await addonBench(image, "write", buffers);
    for (let r = 0; r < rounds; r++) {
      for (const type of ["write", "read"] as const) {
        // The image is opened by us too; rbd bench needs the exclusive lock, so release ours by closing.
        const order = r % 2 === 0 ? ["cli", "addon"] : ["addon", "cli"];
        for (const who of order) {
          if (who === "cli") results[type]?.cli.push(await cliBench(spec, type));
          else results[type]?.addon.push(await addonBench(image, type, buffers));
        }
      }
    }
  } finally {
    await image.close();
    await io.imageRemove(name);
    await io.close();
    await cluster.close();
  }
  const rows = Object.entries(results).map(([type, r]) => ({
    scenario: `${type} ${totalMiB} MiB, 4 MiB I/O, ${INFLIGHT} in flight`,
    rbdBenchMiBps: Number(median(r.cli).toFixed(1)),
    addonMiBps: Number(median(r.addon).toFixed(1)),
    ratio: Number((median(r.addon) / median(r.cli)).toFixed(2)),
    rounds: r.cli.length,
  }));
  console.log(`\naddon vs rbd bench on ${clusterName} (medians of ${rounds} rounds, alternating)\n`);
  console.log(`${"scenario".padEnd(44)} ${"rbd bench".padStart(12)} ${"addon".padStart(12)} ${"ratio".padStart(7)}`);
  for (const row of rows) {
    console.log(
      `${row.scenario.padEnd(44)} ${`${row.rbdBenchMiBps} MiB/s`.padStart(12)} ${`${row.addonMiBps} MiB/s`.padStart(12)} ${`${row.ratio}x`.padStart(7)}`,
    );
  }
  console.log(`\nJSON ${JSON.stringify({ bench: "addon-throughput", cluster: clusterName, results: rows })}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
