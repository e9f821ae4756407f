/**
 * The Ceph CLI doing what the benchmarks compare against: the copy of a diff between clusters as the
 * Cinder driver runs it (`rbd export-diff … - | rbd import-diff - …`), and a cluster's raw write
 * bandwidth (`rbd bench`).
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import type { Readable } from "node:stream";
import { promisify } from "node:util";
import type { IoCtx } from "../../agents/ceph";
import { labCluster, uniqueName } from "../helpers/lab";

/** `rbd bench --io-type write --io-size 4M --io-threads 16` over `mib` MiB of a new image in io's pool; MiB/s. */
export async function rawWriteMiBps(cluster: string, io: IoCtx, mib: number): Promise<number> {
  const name = uniqueName("bench-raw");
  await io.imageCreate(name, mib * 2 ** 20);
  try {
    const { stdout } = await promisify(execFile)(
      "rbd",
      [
        "-c",
        labCluster(cluster).conf,
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4M",
        "--io-threads",
        "16",
        "--io-total",
        String(mib * 2 ** 20),
        `${io.pool}/${name}`,
      ],
      { timeout: CLI_DEADLINE_MS, killSignal: "SIGKILL" },
    );
    // "ops/sec: 333.3" of 4 MiB writes (its bytes/sec is humanized, e.g. "1.3 GiB/s").
    const ops = /ops\/sec:\s*([\d.]+)/.exec(stdout)?.[1];
    if (!ops) throw new Error(`rbd bench printed no ops/sec: ${stdout.slice(-300)}`);
    return Number(ops) * 4;
  } finally {
    await io.imageRemove(name);
  }
}

/** CPU seconds (user + system) each process of the CLI pipe used. */
export interface CliPipeCpu {
  exportSeconds: number;
  importSeconds: number;
}

/**
 * Each rbd runs under `bash -c 'rbd "$@"; rc=$?; times >&3; exit $rc'`: bash waits for rbd, so its `times`
 * builtin prints rbd's exact rusage (children's user and system time) on fd 3 — no race with Node reaping
 * the process (reading /proc/<pid>/stat would), no extra package (/usr/bin/time). Bash itself adds ~1 ms.
 */
const TIMED = 'rbd "$@"; rc=$?; times >&3; exit $rc';

/**
 * No rbd of a bench runs longer than this (RBDBACKUP_BENCH_CLI_DEADLINE_S, default 600 s): a full OSD
 * makes `import-diff` wait forever, and a bench must fail, not hang.
 */
const CLI_DEADLINE_MS = Number(process.env.RBDBACKUP_BENCH_CLI_DEADLINE_S ?? 600) * 1000;

/** The children line of bash's `times` ("0m1.234s 0m0.056s" after the shell's own line), seconds. */
export function parseBashTimes(out: string): number {
  const line = out.trim().split("\n")[1] ?? "";
  let secs = 0;
  for (const m of line.matchAll(/(\d+)m([\d.]+)s/g)) secs += Number(m[1]) * 60 + Number(m[2]);
  return secs;
}

function timedRbd(args: string[], stdio: ["ignore", "pipe"] | [Readable, "ignore"]) {
  const p = spawn("bash", ["-c", TIMED, "rbd", ...args], {
    stdio: [...stdio, "inherit", "pipe"],
    detached: true, // its own process group, so the deadline kills rbd with its bash
  });
  let times = "";
  (p.stdio[3] as Readable).on("data", (b: Buffer) => {
    times += b.toString();
  });
  let timedOut = false;
  const deadline = setTimeout(() => {
    timedOut = true;
    if (p.pid) process.kill(-p.pid, "SIGKILL");
  }, CLI_DEADLINE_MS);
  const cpu = new Promise<number>((resolve, reject) => {
    p.on("error", reject);
    p.on("close", (code) => {
      clearTimeout(deadline);
      if (timedOut)
        reject(
          new Error(`rbd ${args.slice(2, 3).join("")} ran past ${CLI_DEADLINE_MS / 1000} s (is an OSD full?): killed`),
        );
      else if (code !== 0) reject(new Error(`rbd ${args.slice(2, 3).join("")} exited ${code}`));
      else resolve(parseBashTimes(times));
    });
  });
  return { p, cpu };
}

/**
 * `rbd export-diff [--from-snap S] SRC - | rbd import-diff - DST` between two lab clusters, as the Cinder
 * driver runs it; resolves with each side's CPU.
 */
export async function cliPipe(
  srcCluster: string,
  src: string,
  fromSnap: string | null,
  dstCluster: string,
  dst: string,
): Promise<CliPipeCpu> {
  const exp = timedRbd(
    [
      "-c",
      labCluster(srcCluster).conf,
      "export-diff",
      "--no-progress",
      ...(fromSnap ? ["--from-snap", fromSnap] : []),
      src,
      "-",
    ],
    ["ignore", "pipe"],
  );
  // The export's pipe is the import's stdin, as a shell's `|` (and Cinder's Popen(stdin=p1.stdout)) makes
  // it: no byte passes through this process (relayed by Node, 1 GiB cost the bench ~0.5 CPU-s beside the CLI).
  const imp = timedRbd(
    ["-c", labCluster(dstCluster).conf, "import-diff", "--no-progress", "-", dst],
    [exp.p.stdout as Readable, "ignore"],
  );
  (exp.p.stdout as Readable).destroy();
  const [exportSeconds, importSeconds] = await Promise.all([exp.cpu, imp.cpu]);
  return { exportSeconds, importSeconds };
}

/** `rbd bench` 4 KiB random writes to `spec` on site-a (16 threads) until `totalBytes` are written or it is killed. */
export function randomWriter(spec: string, totalBytes: number): ChildProcess {
  const args = ["bench", "--io-type", "write", "--io-size", "4K", "--io-pattern", "rand", "--io-threads", "16"];
  return spawn("rbd", ["-c", labCluster("site-a").conf, ...args, "--io-total", String(totalBytes), spec], {
    stdio: ["ignore", "ignore", "inherit"],
  });
}
