/**
 * API load bench (issue 15, Scale): what a control plane sees when it polls hard. A real coordinator
 * process (SQLite catalog, mutual TLS on loopback, as in production) with `--backups` AVAILABLE backups
 * seeded in its catalog file, simulated agents (sim-agents.ts: the agent's real session stack) running
 * `--jobs` backups that last the whole window (so their heartbeats and progress reports are written
 * throughout), and `--clients` API clients (each its own TLS connection) calling GetBackup, GetJob,
 * ListBackups (first page, 100) and ListJobs (first page, 100) in turn, each paced at rate / clients
 * calls per second (a client behind its pace calls at once, it does not burst to catch up).
 *
 * Prints achieved calls/s, p50/p99/max and errors per method, and the coordinator's CPU. Figures only —
 * no assertions. `--coordinator DIST` runs another build's coordinator (e.g. a worktree of main built
 * with `npm run build:ts`) for a before/after in one command: `--compare DIST` runs both, one after the
 * other on fresh catalogs, and prints them side by side. `--cpu-prof DIR` writes the coordinator's V8 CPU
 * profile there (open in Chrome DevTools; `node dist/test/bench/api-load.js --profile-top FILE` prints
 * the top self-time functions of one).
 *
 *   node dist/test/bench/api-load.js [--clients 20] [--rate 2000] [--seconds 30] [--jobs 50]
 *        [--backups 92] [--compare DIST] [--coordinator DIST] [--cpu-prof DIR]
 */
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import type { TlsConfig } from "../../src/common/tls";
import { SqliteCatalog } from "../../src/coordinator/catalog/sqlite";
import { BackupMode } from "../../src/gen/rbdbackup/v1/agent";
import { type BackupServiceClient, JobState } from "../../src/gen/rbdbackup/v1/backup_service";
import { repoRoot } from "../../src/lab/agent-process";
import { apiClient } from "../../src/lab/coordinator-process";
import { startDaemon } from "../../src/lab/daemon";
import { pagingBackup } from "../helpers/catalog-cases/paging";
import { waitFor } from "../helpers/wait";
import { arg, cpuOf } from "./measure";
import { type SimAgent, SimWorld, startSimAgent } from "./sim-agents";

const CLIENTS = Number(arg("clients", "20"));
const RATE = Number(arg("rate", "2000"));
const SECONDS = Number(arg("seconds", "30"));
const JOBS = Number(arg("jobs", "50"));
const BACKUPS = Number(arg("backups", "92"));
const COMPARE = arg("compare", "");
const COORDINATOR = arg("coordinator", "");
const CPU_PROF = arg("cpu-prof", "");
const WORKERS = Number(arg("workers", "4"));
const SRC = "site-a";
const DST = "site-b";
const AGENTS: Array<[string, string]> = [
  ["sim-a-1", SRC],
  ["sim-a-2", SRC],
  ["sim-b-1", DST],
  ["sim-b-2", DST],
];
const METHODS = ["GetBackup", "GetJob", "ListBackups", "ListJobs"] as const;
type Method = (typeof METHODS)[number];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pct(xs: number[], p: number): number {
  if (!xs.length) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number;
}

/** TLS material for this run: a new CA, the coordinator, every simulated agent and an admin client. */
function makeTls(dir: string): (name: string) => TlsConfig {
  const specs = [
    "coordinator=rbdbackup://coordinator/bench",
    "bench-client=rbdbackup://client/admin/bench",
    ...AGENTS.map(([id, cluster]) => `${id}=rbdbackup://agent/${cluster}/${id}`),
  ];
  execFileSync(path.join(repoRoot, "deploy/tls/gen-certs.sh"), [dir, ...specs], { stdio: "ignore" });
  return (n) => ({ ca: path.join(dir, "ca.pem"), cert: path.join(dir, `${n}.pem`), key: path.join(dir, `${n}.key`) });
}

interface RunResult {
  label: string;
  seconds: number;
  calls: number;
  coordinatorCpu: number;
  /** An fsync of 4 KiB on the catalog's disk, every 100 ms of the window, ms (what a catalog commit waits for). */
  fsync: number[];
  /** How busy the client threads' event loops were (0..1, mean): near 1 = the bench limits the rate. */
  clientBusy: number;
  /** The coordinator's CPU with the jobs running and no API calls, seconds per second. */
  floor: number;
  running: number;
  latency: Record<Method, number[]>;
  errors: Record<Method, Record<string, number>>;
}

/** One client's loop: the four methods in turn, paced at `perSecond`, until `end`. */
async function client(
  c: BackupServiceClient,
  perSecond: number,
  end: number,
  ids: { backups: string[]; jobs: string[] },
  r: RunResult,
  offset: number,
): Promise<void> {
  const gap = 1000 / perSecond;
  let next = performance.now() + Math.random() * gap;
  for (let i = offset; performance.now() < end; i++) {
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
    next = Math.max(next + gap, performance.now());
    const m = METHODS[i % METHODS.length] as Method;
    const s = performance.now();
    try {
      if (m === "GetBackup") await c.getBackup({ backupId: ids.backups[i % ids.backups.length] as string });
      else if (m === "GetJob") await c.getJob({ jobId: ids.jobs[i % ids.jobs.length] as string });
      else if (m === "ListBackups")
        await c.listBackups({
          cluster: "",
          pool: "",
          image: "",
          volumeId: "",
          locationCluster: "",
          status: 0,
          pageSize: 100,
          pageToken: "",
        });
      else await c.listJobs({ state: 0, kind: 0, backupId: "", pageSize: 100, pageToken: "" });
      r.latency[m].push(performance.now() - s);
    } catch (e) {
      const code = String((e as { code?: number }).code ?? (e as Error).message);
      r.errors[m][code] = (r.errors[m][code] ?? 0) + 1;
    }
    r.calls++;
  }
}

interface WorkerTask {
  address: string;
  tls: TlsConfig;
  clients: number;
  perSecond: number;
  seconds: number;
  ids: { backups: string[]; jobs: string[] };
  first: number;
}

/** A worker thread's part of the load: its clients (each its own connection), warmed, then the window. */
async function workerMain(t: WorkerTask): Promise<void> {
  const conns = Array.from({ length: t.clients }, () => apiClient(t.address, t.tls));
  try {
    await Promise.all(conns.map((c) => c.client.listAgents({})));
    parentPort?.postMessage({ ready: true });
    await new Promise((r) => parentPort?.once("message", r));
    const r = newResult("");
    const t0 = performance.now();
    const end = t0 + t.seconds * 1000;
    const elu0 = performance.eventLoopUtilization();
    await Promise.all(conns.map((c, i) => client(c.client, t.perSecond, end, t.ids, r, t.first + i)));
    parentPort?.postMessage({ result: r, busy: performance.eventLoopUtilization(elu0).utilization });
  } finally {
    for (const c of conns) c.channel.close();
  }
}

const newResult = (label: string): RunResult => ({
  label,
  seconds: 0,
  calls: 0,
  coordinatorCpu: 0,
  clientBusy: 0,
  fsync: [],
  floor: 0,
  running: 0,
  latency: { GetBackup: [], GetJob: [], ListBackups: [], ListJobs: [] },
  errors: { GetBackup: {}, GetJob: {}, ListBackups: {}, ListJobs: {} },
});

/** Runs the clients in WORKERS worker threads (the bench's own event loop would be the bottleneck). */
async function load(t: Omit<WorkerTask, "clients" | "first">, r: RunResult, pid: number): Promise<void> {
  const workers = Array.from({ length: WORKERS }, (_, w) => {
    const clients = Math.floor(CLIENTS / WORKERS) + (w < CLIENTS % WORKERS ? 1 : 0);
    const first = w * Math.ceil(CLIENTS / WORKERS);
    return new Worker(__filename, { workerData: { ...t, clients, first }, argv: process.argv.slice(2) });
  });
  try {
    const ready = workers.map((w) => new Promise((res, rej) => w.once("message", res).once("error", rej)));
    await Promise.all(ready);
    const done = workers.map(
      (w) => new Promise<{ result: RunResult; busy: number }>((res, rej) => w.once("message", res).once("error", rej)),
    );
    const cpu0 = cpuOf(pid);
    const t0 = performance.now();
    for (const w of workers) w.postMessage("go");
    for (const { result, busy } of await Promise.all(done)) {
      r.calls += result.calls;
      r.clientBusy += busy / workers.length;
      for (const m of METHODS) {
        r.latency[m].push(...result.latency[m]);
        for (const [k, n] of Object.entries(result.errors[m])) r.errors[m][k] = (r.errors[m][k] ?? 0) + n;
      }
    }
    r.seconds = (performance.now() - t0) / 1000;
    r.coordinatorCpu = cpuOf(pid) - cpu0;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

/** Times a 4 KiB write + fsync in `file` every 100 ms until stopped. */
function fsyncProbe(file: string, out: number[]): { stop(): void } {
  const fd = openSync(file, "w");
  const block = Buffer.alloc(4096, 1);
  const timer = setInterval(() => {
    const s = performance.now();
    writeSync(fd, block, 0, block.length, 0);
    fsyncSync(fd);
    out.push(performance.now() - s);
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      closeSync(fd);
    },
  };
}

/** A fresh coordinator from `dist` (its dist/ directory's parent), the agents, the jobs, the load. */
async function run(label: string, dist: string, tlsOf: (n: string) => TlsConfig): Promise<RunResult> {
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-api-load-"));
  const world = new SimWorld();
  const jobVolumes = Array.from({ length: JOBS }, (_, i) => `job-${i}`);
  world.images.set(`${SRC}/rbd/`, jobVolumes);
  const catalogFile = path.join(dir, "catalog.sqlite");
  const backups: string[] = [];
  const seed = new SqliteCatalog(catalogFile);
  seed.transaction(() => {
    for (let i = 0; i < BACKUPS; i++) {
      const b = pagingBackup(Date.now() - (BACKUPS - i) * 60_000, {
        volume: { cluster: SRC, pool: "rbd", namespace: "", image: `seed-${i % 30}` },
        volumeMetadata: { "cinder:volume_id": randomUUID(), "display-name": `seed volume ${i % 30}` },
        snapshot: `backup.x.snap.${i}`,
        completedAt: new Date(),
      });
      seed.insertBackup(b);
      backups.push(b.id);
    }
  });
  seed.close();
  const config = {
    listen: "127.0.0.1:0",
    metricsListen: "127.0.0.1:0",
    tls: tlsOf("coordinator"),
    auth: { tokensFile: "", auditLog: "" },
    catalog: { path: catalogFile },
    scheduler: { perClusterLimit: Math.max(64, JOBS + 8) },
    shutdownGraceSeconds: 1,
  };
  writeFileSync(path.join(dir, "coordinator.json"), JSON.stringify(config));
  const node = [
    ...(CPU_PROF ? [`--cpu-prof`, `--cpu-prof-dir=${CPU_PROF}`, `--cpu-prof-name=${label}.cpuprofile`] : []),
  ];
  const daemon = await startDaemon<{ address: string; metricsAddress: string }>(
    "the coordinator",
    [...node, path.join(dist, "dist/src/coordinator/main.js"), "--config", path.join(dir, "coordinator.json")],
    { timeoutMs: 30_000 },
  );
  const pid = daemon.proc.pid as number;
  const admin = apiClient(daemon.serving.address, tlsOf("bench-client"));
  const agents: SimAgent[] = [];
  try {
    const backupMs = (SECONDS + 120) * 1000;
    for (const [agentId, cluster] of AGENTS)
      agents.push(
        startSimAgent(world, {
          agentId,
          cluster,
          coordinator: daemon.serving.address,
          tls: tlsOf(agentId),
          capacity: Math.max(1, JOBS),
          backupMs,
        }),
      );
    await waitFor(async () => (await admin.client.listAgents({})).agents.filter((a) => a.connected).length === 4, {
      what: () => "4 simulated agents connected",
      timeoutMs: 30_000,
    });
    const jobs: string[] = [];
    for (const image of jobVolumes) {
      const r = await admin.client.createBackup({
        volume: { cluster: SRC, pool: "rbd", namespace: "", image },
        location: { cluster: DST, pool: "backups", namespace: "" },
        mode: BackupMode.BACKUP_MODE_FULL,
        volumeId: "",
        volumeMetadata: {},
        idempotencyKey: "",
        maxSnapshots: 0,
      });
      jobs.push(r.id);
    }
    const runningCount = async () =>
      (
        await admin.client.listJobs({
          state: JobState.JOB_STATE_RUNNING,
          kind: 0,
          backupId: "",
          pageSize: 1000,
          pageToken: "",
        })
      ).jobs.length;
    await waitFor(async () => (await runningCount()) === JOBS, {
      what: () => `${JOBS} jobs running`,
      timeoutMs: 60_000,
    });
    await sleep(4_000); // a heartbeat round with progress for every job
    const r = newResult(label);
    const f0 = cpuOf(pid);
    const ft = performance.now();
    await sleep(10_000);
    r.floor = (cpuOf(pid) - f0) / ((performance.now() - ft) / 1000);
    const tls = tlsOf("bench-client");
    const task = {
      address: daemon.serving.address,
      tls,
      perSecond: RATE / CLIENTS,
      seconds: SECONDS,
      ids: { backups, jobs },
    };
    const probe = fsyncProbe(path.join(dir, "fsync-probe"), r.fsync);
    await load(task, r, pid);
    probe.stop();
    r.running = await runningCount();
    return r;
  } finally {
    await Promise.all(agents.map((a) => a.session.stop(1_000)));
    admin.channel.close();
    await daemon.stop("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "-");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "-");
/** The coordinator's CPU per API call, ms: the window's CPU less the floor's (jobs alone), per call. */
const perCall = (r: RunResult) => ((r.coordinatorCpu - r.floor * r.seconds) * 1000) / r.calls;

function report(results: RunResult[]): void {
  console.log(
    `\napi-load: ${CLIENTS} clients aiming at ${RATE} calls/s for ${SECONDS} s, ${JOBS} jobs running, ${BACKUPS} backups in the catalog (SQLite, mutual TLS)\n`,
  );
  const head = ["run", "method", "calls", "calls/s", "p50 ms", "p99 ms", "max ms", "errors"];
  const rows: string[][] = [];
  for (const r of results) {
    for (const m of METHODS) {
      const xs = r.latency[m];
      const errs = Object.entries(r.errors[m]);
      rows.push([
        r.label,
        m,
        String(xs.length),
        f1(xs.length / r.seconds),
        f1(pct(xs, 50)),
        f1(pct(xs, 99)),
        f1(Math.max(...xs)),
        errs.length ? errs.map(([k, n]) => `${k}:${n}`).join(" ") : "0",
      ]);
    }
    const all = METHODS.flatMap((m) => r.latency[m]);
    rows.push([
      r.label,
      "all",
      String(r.calls),
      f1(r.calls / r.seconds),
      f1(pct(all, 50)),
      f1(pct(all, 99)),
      f1(Math.max(...all)),
      `cpu ${f1((100 * r.coordinatorCpu) / r.seconds)}% · ${f2(perCall(r))} ms/call · clients busy ${f1(100 * r.clientBusy)}% · running ${r.running}`,
    ]);
  }
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((x) => (x[i] as string).length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < 2 ? c.padEnd(w[i] as number) : c.padStart(w[i] as number))).join("  ");
  console.log(line(head));
  for (const x of rows) console.log(line(x));
  console.log(
    "\ncpu: the coordinator's utime+stime over the window, % of one core; ms/call: that less its floor with the jobs alone, per call (1000 / ms/call = calls/s one core could serve); clients busy: the client threads' event loops (near 100% = the bench limits the rate); running: RUNNING jobs at the end",
  );
  for (const r of results)
    console.log(
      `  ${r.label}: floor (jobs alone) ${f1(100 * r.floor)}% of a core, ~${Math.round(1000 / perCall(r))} calls/s per core; fsync on the catalog's disk p50 ${f1(pct(r.fsync, 50))} / p99 ${f1(pct(r.fsync, 99))} / max ${f1(Math.max(...r.fsync))} ms`,
    );
}

/** The functions with the most self time in a .cpuprofile (V8's format), as % of samples. */
function profileTop(file: string, n = 25): void {
  const p = JSON.parse(readFileSync(file, "utf8")) as {
    nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number } }>;
    samples: number[];
  };
  const byId = new Map(p.nodes.map((x) => [x.id, x]));
  const self = new Map<string, number>();
  for (const s of p.samples) {
    const f = byId.get(s)?.callFrame;
    const k = f ? `${f.functionName || "(anonymous)"} ${path.basename(f.url)}:${f.lineNumber + 1}` : "?";
    self.set(k, (self.get(k) ?? 0) + 1);
  }
  const total = p.samples.length;
  for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, n))
    console.log(`${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`);
}

async function main(): Promise<void> {
  const top = arg("profile-top", "");
  if (top) return profileTop(top);
  const tlsDir = mkdtempSync(path.join(tmpdir(), "rbdbackup-api-load-tls-"));
  try {
    const tlsOf = makeTls(tlsDir);
    const results: RunResult[] = [];
    if (COMPARE) {
      console.error("api-load: before (--compare build)…");
      results.push(await run("before", COMPARE, tlsOf));
    }
    console.error(`api-load: ${COMPARE ? "after (this build)" : "run"}…`);
    results.push(
      await run(COMPARE ? "after" : COORDINATOR ? "that build" : "this build", COORDINATOR || repoRoot, tlsOf),
    );
    report(results);
  } finally {
    rmSync(tlsDir, { recursive: true, force: true });
  }
}

if (!isMainThread) {
  workerMain(workerData as WorkerTask).then(
    () => process.exit(0),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
} else
  main().then(
    () => process.exit(0),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
