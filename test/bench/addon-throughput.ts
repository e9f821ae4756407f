/**
 * Raw throughput of the addon against `rbd bench` on the same cluster, same image, same run:
 * 4 MiB I/Os, 16 in flight, sequential, alternating the contenders for several rounds. A third
 * contender is a small C program doing the same with librbd's C API (the API the addon binds), so the
 * addon's own overhead shows apart from the API's: rbd bench uses the C++ API, whose reads hand over
 * librbd's buffers, while the C API copies every read into the caller's memory (and Debian ships no
 * usable C++ headers: librbd.hpp includes a rados/buffer.h that librados-dev lacks).
 * All figures exclude process start and connection time (each times its own I/O phase).
 *
 *   node dist/test/bench/addon-throughput.js [--cluster site-a] [--mib 1024] [--rounds 3] [--json]
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { promisify } from "node:util";
import type { Image } from "../../agents/ceph";
import { connectLab, labCluster, uniqueName } from "../helpers/lab";
import { arg, median } from "./measure";

const execFileP = promisify(execFile);
const cBench = path.resolve(__dirname, "c-api-bench");
const MiB = 1 << 20;
const IO_SIZE = 4 * MiB;
const INFLIGHT = 16;

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

async function cApiBench(image: string, type: "read" | "write"): Promise<number> {
  const c = labCluster(clusterName);
  const args = [c.conf, "rbd", image, type, String(total), String(IO_SIZE), String(INFLIGHT)];
  const { stdout } = await execFileP(cBench, args, { timeout: 600_000 });
  return Number(stdout.trim());
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

async function main(): Promise<void> {
  const cluster = await connectLab(clusterName);
  const io = await cluster.openIoCtx("rbd");
  const name = uniqueName("bench-addon");
  await io.imageCreate(name, total);
  const image = await io.imageOpen(name);
  const buffers = Array.from({ length: INFLIGHT }, () => randomBytes(IO_SIZE));
  const spec = `rbd/${name}`;
  const results: Record<string, { cli: number[]; capi: number[]; addon: number[] }> = {
    write: { cli: [], capi: [], addon: [] },
    read: { cli: [], capi: [], addon: [] },
  };
  try {
    // Warm-up: allocate every object once so later rounds measure overwrites on both sides.
    await addonBench(image, "write", buffers);
    for (let r = 0; r < rounds; r++) {
      for (const type of ["write", "read"] as const) {
        // Rotate who goes first so no contender always runs on a warmer or colder OSD.
        const order = ["cli", "capi", "addon"];
        for (let i = 0; i < r % 3; i++) order.push(order.shift() as string);
        for (const who of order) {
          const res = results[type] as { cli: number[]; capi: number[]; addon: number[] };
          if (who === "cli") res.cli.push(await cliBench(spec, type));
          else if (who === "capi") res.capi.push(await cApiBench(name, type));
          else res.addon.push(await addonBench(image, type, buffers));
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
    cApiMiBps: Number(median(r.capi).toFixed(1)),
    addonMiBps: Number(median(r.addon).toFixed(1)),
    ratio: Number((median(r.addon) / median(r.cli)).toFixed(2)),
    ratioToCApi: Number((median(r.addon) / median(r.capi)).toFixed(2)),
    rounds: r.cli.length,
  }));
  console.log(`\naddon vs rbd bench on ${clusterName} (medians of ${rounds} rounds, alternating)\n`);
  const cols = ["rbd bench", "C API", "addon", "addon/rbd bench", "addon/C API"];
  console.log(`${"scenario".padEnd(42)} ${cols.map((h) => h.padStart(15)).join(" ")}`);
  for (const row of rows) {
    const cells = [
      `${row.rbdBenchMiBps} MiB/s`,
      `${row.cApiMiBps} MiB/s`,
      `${row.addonMiBps} MiB/s`,
      `${row.ratio.toFixed(2)}x`,
      `${row.ratioToCApi.toFixed(2)}x`,
    ];
    console.log(`${row.scenario.padEnd(42)} ${cells.map((c) => c.padStart(15)).join(" ")}`);
  }
  console.log(`\nJSON ${JSON.stringify({ bench: "addon-throughput", cluster: clusterName, results: rows })}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
