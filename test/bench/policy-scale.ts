/**
 * Policy scale bench (issue 13, Bench): what the coordinator costs when it protects 1,000 volumes by
 * itself. A real coordinator process (SQLite catalog, mutual TLS on loopback) and simulated agents
 * (sim-agents.ts: the agent's real session stack over gRPC, simulated clusters behind it) — 4 for the
 * source cluster, 2 for the destination. 10 policies select the volumes (8 by pool + image regex through
 * discovery, 2 by explicit lists of 100), retention keep_last 2 (so retention DELETE jobs run), jitter
 * spreading each slot's runs over 90% of the interval. Each phase gets a fresh coordinator:
 *
 *   idle    agents connected, no policies: the floor (sessions, heartbeats, scheduler ticks)
 *   static  the policies of `hourly`, but their first slot half an hour away: what 1,000 protected
 *           volumes cost with no backup running (runner ticks and full passes, discovery, scrapes)
 *   hourly  interval 3600 s = 1,000 backups/hour, the aim's rate (< 1% of one core)
 *   fast    interval --fast-interval (60 s) = 60,000 backups/hour: CPU per 1,000 backups, tick under load
 *
 * A phase's window (idle: 2 min at most) is split in two halves: quiet (only a Prometheus-like /metrics scrape every 15 s) and
 * loaded (an API client calling GetVolumeProtection, ListVolumeProtection, ListBackups and GetJob in a
 * loop, ~4 calls per 250 ms pause): coordinator CPU from /proc/<pid>/stat (utime+stime) before/after each
 * half, RSS (VmRSS, VmHWM), latency p50/p99 per call, /metrics scrape time, and the session messages
 * per backup by kind (counted by the simulated agents: heartbeats and their answers apart, since they
 * do not follow backups). Figures only — no assertions.
 * `--agent-features none` plays agents of before Register.features (the coordinator must fall back).
 *
 *   node dist/test/bench/policy-scale.js [--volumes 1000] [--minutes 4] [--fast-interval 60]
 *        [--backup-ms 1000] [--phases idle,static,hourly,fast] [--json-out FILE] [--agent-features none]
 *        [--coordinator-node-args "--cpu-prof --cpu-prof-dir=DIR"] [--coordinator-main OTHER/dist/src/coordinator/main.js]
 *
 * Before/after: `--coordinator-main A/dist/src/coordinator/main.js,B/dist/src/coordinator/main.js` runs
 * each phase with each build in turn (idle A, idle B, static A, static B, …; `--rounds N` repeats the
 * whole sequence), so both see the same machine; each build's marginal column uses its own idle floor.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { TlsConfig } from "../../src/common/tls";
import { BackupMode } from "../../src/gen/rbdbackup/v1/agent";
import type { BackupServiceClient } from "../../src/gen/rbdbackup/v1/backup_service";
import { Policy } from "../../src/gen/rbdbackup/v1/policy";
import { repoRoot } from "../../src/lab/agent-process";
import { apiClient } from "../../src/lab/coordinator-process";
import { startDaemon } from "../../src/lab/daemon";
import { waitFor } from "../helpers/wait";
import { arg, cpuOf, procMemMiB } from "./measure";
import { type SimAgent, SimWorld, startSimAgent } from "./sim-agents";

const VOLUMES = Number(arg("volumes", "1000"));
const MINUTES = Number(arg("minutes", "4"));
const FAST_INTERVAL = Number(arg("fast-interval", "60"));
const BACKUP_MS = Number(arg("backup-ms", "1000"));
const PHASES = arg("phases", "idle,hourly,fast").split(",");
const JSON_OUT = arg("json-out", "");
/** Node options for the coordinator process (e.g. "--cpu-prof --cpu-prof-dir=DIR"), space-separated. */
const COORD_NODE_ARGS = arg("coordinator-node-args", "").split(" ").filter(Boolean);
/** The coordinators' entry points (other builds' dist/src/coordinator/main.js, comma-separated: alternated). */
const COORD_MAINS = arg("coordinator-main", path.join(repoRoot, "dist/src/coordinator/main.js")).split(",");
const ROUNDS = Number(arg("rounds", "1"));
/** "none": the simulated agents name no features in Register (an older agent); "" = their own. */
const AGENT_FEATURES = arg("agent-features", "");
/** A build's label in the report: its tree (the path before /dist/). */
const buildOf = (main: string) => main.replace(/\/dist\/src\/coordinator\/main\.js$/, "");
const SRC = "site-a";
const DST = "site-b";
const SRC_AGENTS = 4;
const DST_AGENTS = 2;
const CAPACITY = 32;
const SCRAPE_MS = 15_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Volumes per policy; policy k selects group k: images "g<k>-<n>". */
const PER = Math.ceil(VOLUMES / 10);
const imageName = (i: number) => `g${Math.floor(i / PER)}-${String(i).padStart(5, "0")}`;

/** TLS material for this run: a new CA, the coordinator, every simulated agent and an admin client. */
function makeTls(dir: string, agents: Array<{ id: string; cluster: string }>): (name: string) => TlsConfig {
  const specs = [
    "coordinator=rbdbackup://coordinator/bench",
    "bench-client=rbdbackup://client/admin/bench",
    ...agents.map((a) => `${a.id}=rbdbackup://agent/${a.cluster}/${a.id}`),
  ];
  execFileSync(path.join(repoRoot, "deploy/tls/gen-certs.sh"), [dir, ...specs], { stdio: "ignore" });
  return (n) => ({ ca: path.join(dir, "ca.pem"), cert: path.join(dir, `${n}.pem`), key: path.join(dir, `${n}.key`) });
}

/** Ten policies over the volumes: 8 by regex over the pool (discovery), 2 by explicit lists. */
function policies(interval: number, nowMs: number, lead = 20): Policy[] {
  // lead: seconds until the first slot
  const schedule = {
    intervalSeconds: interval,
    cron: "",
    timeZone: "",
    startOffsetSeconds: (Math.floor(nowMs / 1000) + lead) % interval,
    jitterSeconds: Math.floor(interval * 0.9),
    window: undefined,
  };
  return Array.from({ length: 10 }, (_, k) => {
    const ids = Array.from({ length: PER }, (_, i) => k * PER + i).filter((i) => i < VOLUMES);
    const explicit = k >= 8;
    return Policy.fromPartial({
      name: `bench-${k}`,
      description: "policy-scale bench",
      selector: explicit
        ? {
            volumes: ids.map((i) => ({ cluster: SRC, pool: "rbd", namespace: "", image: imageName(i) })),
            cluster: "",
            pool: "",
            namespace: "",
            imageRegex: "",
          }
        : { volumes: [], cluster: SRC, pool: "rbd", namespace: "", imageRegex: `g${k}-\\d+` },
      destination: { cluster: DST, pool: "backups", namespace: "" },
      mode: BackupMode.BACKUP_MODE_AUTO,
      maxSnapshots: 0,
      volumeMetadata: { policy: "{policy}" },
      schedule,
      retention: { keepLast: 2, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0, minAgeSeconds: 0 },
    });
  });
}

/** Sums of a metric's samples from /metrics text, by the value of one label ("" = all). */
function metricSum(text: string, name: string, label = ""): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const v = Number(line.slice(line.lastIndexOf(" ") + 1));
    const l = label ? (new RegExp(`${label}="([^"]*)"`).exec(line)?.[1] ?? "") : "";
    out[l] = (out[l] ?? 0) + v;
  }
  return out;
}

function pct(xs: number[], p: number): number {
  if (!xs.length) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number;
}

interface Half {
  seconds: number;
  cpuSeconds: number;
  backups: number;
  deletes: number;
  latency: Record<string, number[]>;
  scrapeMs: number[];
  /** Session messages in this half by "sent:<kind>" / "received:<kind>" (the agents' view). */
  messages: Record<string, number>;
}

/** Runs the API probe loop (when `load`) and the /metrics scrape until `ms` passed. */
async function half(
  ms: number,
  load: boolean,
  ctx: { pid: number; world: SimWorld; client: BackupServiceClient; metrics: string },
): Promise<Half> {
  const { pid, world, client } = ctx;
  const latency: Record<string, number[]> = {
    GetVolumeProtection: [],
    ListVolumeProtection: [],
    ListBackups: [],
    GetJob: [],
  };
  const scrapeMs: number[] = [];
  const t0 = performance.now();
  const cpu0 = cpuOf(pid);
  const b0 = world.counts.backups;
  const m0 = new Map(world.messages);
  const d0 = world.counts.deletes;
  const end = t0 + ms;
  const timed = async <T>(what: string, f: () => Promise<T>): Promise<T | undefined> => {
    const s = performance.now();
    try {
      return await f();
    } catch (e) {
      // No policies yet (the idle phase): NOT_FOUND is an answer like any other.
      if ((e as { code?: number }).code !== 5) throw e;
      return undefined;
    } finally {
      latency[what]?.push(performance.now() - s);
    }
  };
  const scraper = (async () => {
    while (performance.now() < end) {
      const s = performance.now();
      const r = await fetch(`http://${ctx.metrics}/metrics`, { signal: AbortSignal.timeout(10_000) });
      await r.text();
      scrapeMs.push(performance.now() - s);
      await sleep(Math.min(SCRAPE_MS, Math.max(0, end - performance.now())));
    }
  })();
  const prober = (async () => {
    if (!load) return;
    let jobIds: string[] = [];
    for (let i = 0; performance.now() < end; i++) {
      const vol = { cluster: SRC, pool: "rbd", namespace: "", image: imageName(i % VOLUMES) };
      await timed("GetVolumeProtection", () => client.getVolumeProtection({ volume: vol, policy: "" }));
      const page = await timed("ListVolumeProtection", () =>
        client.listVolumeProtection({ policy: "", state: 0, cluster: "", pageSize: 100, pageToken: "" }),
      );
      if (page?.volumes.length) jobIds = page.volumes.map((v) => v.lastJobId).filter(Boolean);
      await timed("ListBackups", () => client.listBackups({ cluster: SRC, pageSize: 100 } as never));
      const id = jobIds[i % Math.max(1, jobIds.length)];
      if (id) await timed("GetJob", () => client.getJob({ jobId: id }));
      await sleep(250);
    }
  })();
  await Promise.all([scraper, prober]);
  return {
    seconds: (performance.now() - t0) / 1000,
    cpuSeconds: cpuOf(pid) - cpu0,
    backups: world.counts.backups - b0,
    deletes: world.counts.deletes - d0,
    latency,
    scrapeMs,
    messages: Object.fromEntries(
      [...world.messages].map(([k, n]) => [k, n - (m0.get(k) ?? 0)] as const).filter(([, n]) => n > 0),
    ),
  };
}

interface PhaseResult {
  phase: string;
  build: string;
  interval: number;
  quiet: Half;
  loaded: Half;
  rssMiB: number;
  peakRssMiB: number;
  missedRuns: number;
  jobsFinished: Record<string, number>;
  protectedByState: Record<string, number>;
  warnings: number;
}

async function phase(
  name: string,
  tlsOf: (n: string) => TlsConfig,
  ids: string[][],
  main: string,
): Promise<PhaseResult> {
  const interval = name === "hourly" || name === "static" ? 3600 : FAST_INTERVAL;
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-policy-bench-"));
  const world = new SimWorld();
  world.images.set(
    `${SRC}/rbd/`,
    Array.from({ length: VOLUMES }, (_, i) => imageName(i)),
  );
  const config = {
    listen: "127.0.0.1:0",
    metricsListen: "127.0.0.1:0",
    tls: tlsOf("coordinator"),
    auth: { tokensFile: "", auditLog: "" },
    catalog: { path: path.join(dir, "catalog.sqlite") },
    // Enough room for 60,000 backups/hour of 1 s each (the default of 4 per cluster is for real data).
    scheduler: { perClusterLimit: 64 },
    policy: { minIntervalSeconds: Math.min(30, FAST_INTERVAL) },
    shutdownGraceSeconds: 2,
  };
  writeFileSync(path.join(dir, "coordinator.json"), JSON.stringify(config));
  const daemon = await startDaemon<{ address: string; metricsAddress: string }>(
    "the coordinator",
    [...COORD_NODE_ARGS, main, "--config", path.join(dir, "coordinator.json")],
    { timeoutMs: 30_000 },
  );
  const pid = daemon.proc.pid as number;
  const { client, channel } = apiClient(daemon.serving.address, tlsOf("bench-client"));
  const agents: SimAgent[] = [];
  try {
    for (const [id, cluster] of ids) {
      const a = { agentId: id as string, cluster: cluster as string, coordinator: daemon.serving.address };
      const features = AGENT_FEATURES === "none" ? { features: [] } : {};
      agents.push(
        startSimAgent(world, { ...a, tls: tlsOf(a.agentId), capacity: CAPACITY, backupMs: BACKUP_MS, ...features }),
      );
    }
    await waitFor(async () => (await client.listAgents({})).agents.filter((a) => a.connected).length === ids.length, {
      what: () => `${ids.length} simulated agents connected`,
      timeoutMs: 30_000,
    });
    if (name !== "idle") {
      const lead = name === "static" ? 1800 : 20;
      for (const p of policies(interval, Date.now(), lead)) await client.createPolicy({ policy: p });
      // Every volume has its record (discovery listed the pool) before the window starts.
      await waitFor(
        async () => {
          let n = 0;
          let pageToken = "";
          do {
            const r = await client.listVolumeProtection({
              policy: "",
              state: 0,
              cluster: "",
              pageSize: 1000,
              pageToken,
            });
            n += r.volumes.length;
            pageToken = r.nextPageToken;
          } while (pageToken);
          return n >= VOLUMES;
        },
        { what: () => `${VOLUMES} volumes under protection`, timeoutMs: 60_000 },
      );
      await sleep(20_000); // to the first slot (policies() puts it 20 s after creation; static: 30 min)
    } else await sleep(5_000);
    const windowMs = (name === "idle" ? Math.min(MINUTES, 2) : MINUTES) * 60_000;
    const ctx = { pid, world, client, metrics: daemon.serving.metricsAddress };
    const quiet = await half(windowMs / 2, false, ctx);
    const loaded = await half(windowMs / 2, true, ctx);
    const text = await (await fetch(`http://${ctx.metrics}/metrics`)).text();
    return {
      phase: name,
      build: buildOf(main),
      interval: name === "idle" ? 0 : interval,
      quiet,
      loaded,
      rssMiB: procMemMiB(pid, "VmRSS"),
      peakRssMiB: procMemMiB(pid, "VmHWM"),
      missedRuns: metricSum(text, "rbdbackup_policy_missed_runs_total")[""] ?? 0,
      jobsFinished: metricSum(text, "rbdbackup_jobs_finished_total", "result"),
      protectedByState: metricSum(text, "rbdbackup_volumes_protected", "state"),
      warnings: world.counts.warnings,
    };
  } finally {
    await Promise.all(agents.map((a) => a.session.stop(1_000)));
    channel.close();
    await daemon.stop("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "-");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "-");

function report(all: PhaseResult[]): void {
  const builds = [...new Set(all.map((r) => r.build))];
  for (const b of builds) reportBuild(all.filter((r) => r.build === b));
  if (builds.length > 1) {
    console.log("\nSide by side (quiet halves, mean over rounds): % of one core, and marginal s per 1,000 backups:");
    for (const name of [...new Set(all.map((r) => r.phase))]) {
      const cells = builds.map((b) => {
        const rs = all.filter((r) => r.build === b && r.phase === name);
        const pct = rs.reduce((a, r) => a + (100 * r.quiet.cpuSeconds) / r.quiet.seconds, 0) / rs.length;
        const idle = all.filter((r) => r.build === b && r.phase === "idle");
        const floor = idle.reduce((a, r) => a + r.quiet.cpuSeconds / r.quiet.seconds, 0) / (idle.length || Number.NaN);
        const bk = rs.reduce((a, r) => a + r.quiet.backups, 0);
        const over = rs.reduce((a, r) => a + r.quiet.cpuSeconds - floor * r.quiet.seconds, 0);
        return `${b}: ${f2(pct)} %${bk ? `, marginal ${f2((over / bk) * 1000)} s/1k` : ""}`;
      });
      console.log(`  ${name}: ${cells.join("  |  ")}`);
    }
  }
}

function reportBuild(results: PhaseResult[]): void {
  console.log(
    `\npolicy-scale [${results[0]?.build}]: ${VOLUMES} volumes, 10 policies, ${SRC_AGENTS}+${DST_AGENTS} simulated agents, backup ${BACKUP_MS} ms, window ${MINUTES} min per phase (half quiet, half with API load)\n`,
  );
  // The idle phase's quiet half is the floor (sessions, heartbeats, ticks, scrapes with no policies):
  // what a phase costs above it, per backup, is the tick and dispatch CPU of its runs.
  const idle = results.find((r) => r.phase === "idle");
  const floor = idle ? idle.quiet.cpuSeconds / idle.quiet.seconds : Number.NaN;
  const head = [
    "phase",
    "half",
    "s",
    "backups",
    "deletes",
    "cpu s",
    "% core",
    "cpu s/1k bk",
    "marginal s/1k bk*",
    "%core@1k/h*",
  ];
  const rows: string[][] = [];
  for (const r of results) {
    for (const [h, x] of [
      ["quiet", r.quiet],
      ["API load", r.loaded],
    ] as const) {
      const perK = x.backups ? (x.cpuSeconds / x.backups) * 1000 : Number.NaN;
      const marginal = x.backups ? ((x.cpuSeconds - floor * x.seconds) / x.backups) * 1000 : Number.NaN;
      rows.push([
        r.interval ? `${r.phase} (${r.interval} s)` : r.phase,
        h,
        f1(x.seconds),
        String(x.backups),
        String(x.deletes),
        f2(x.cpuSeconds),
        f2((100 * x.cpuSeconds) / x.seconds),
        f2(perK),
        f2(marginal),
        f2((100 * marginal) / 3600),
      ]);
    }
  }
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(w[i] as number)).join("  ");
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  console.log(
    "* tick and dispatch CPU: the phase's CPU above the idle floor (idle phase, quiet half), per 1,000 backups, and as % of one core for 1,000 backups spread over an hour (needs the idle phase in --phases)",
  );
  console.log("\nAPI latency under load, ms (p50 / p99 / n) and /metrics scrape, ms (p50 / max):");
  for (const r of results) {
    const lat = Object.entries(r.loaded.latency)
      .map(([k, xs]) => `${k} ${f1(pct(xs, 50))}/${f1(pct(xs, 99))}/${xs.length}`)
      .join("  ");
    const sc = [...r.quiet.scrapeMs, ...r.loaded.scrapeMs];
    console.log(`  ${r.phase}: ${lat || "-"}  scrape ${f1(pct(sc, 50))}/${f1(Math.max(...sc))}`);
  }
  console.log("\nRSS, MiB (now / peak), missed runs, jobs finished by result, volumes by state:");
  for (const r of results)
    console.log(
      `  ${r.phase}: ${f1(r.rssMiB)} / ${f1(r.peakRssMiB)}  missed ${r.missedRuns}  ${JSON.stringify(r.jobsFinished)}  ${JSON.stringify(r.protectedByState)}${r.warnings ? `  agent warnings ${r.warnings}` : ""}`,
    );
  console.log("\nSession messages per backup (quiet half; heartbeats and their acks left out of the total):");
  for (const r of results) {
    const x = r.quiet;
    if (!x.backups) continue;
    const m = x.messages;
    // An outcome's ack is a HeartbeatAck too: those beyond one per heartbeat follow backups.
    const acks = (m["received:heartbeatAck"] ?? 0) - (m["sent:heartbeat"] ?? 0);
    const kinds = Object.entries(m)
      .filter(([k]) => k !== "sent:heartbeat" && k !== "received:heartbeatAck")
      .concat([["received:heartbeatAck (beyond heartbeats)", acks]]);
    const total = kinds.reduce((a, [, n]) => a + n, 0);
    const per = kinds
      .sort((a, b) => (a[0] < b[0] ? -1 : 1))
      .map(([k, n]) => `${k} ${f2(n / x.backups)}`)
      .join(", ");
    console.log(`  ${r.phase}: ${f2(total / x.backups)} per backup (${x.backups} backups): ${per}`);
  }
  const hourly = results.find((r) => r.phase === "hourly");
  if (hourly) {
    const pctCore = (100 * hourly.quiet.cpuSeconds) / hourly.quiet.seconds;
    console.log(
      `\nAim: < 1% of one core at 1,000 backups/hour. Measured (hourly, quiet half): ${f2(pctCore)}% of one core (idle floor ${f2(100 * floor)}%).`,
    );
  }
}

async function main(): Promise<void> {
  const ids = [
    ...Array.from({ length: SRC_AGENTS }, (_, i) => [`sim-a-${i + 1}`, SRC]),
    ...Array.from({ length: DST_AGENTS }, (_, i) => [`sim-b-${i + 1}`, DST]),
  ];
  const tlsDir = mkdtempSync(path.join(tmpdir(), "rbdbackup-policy-bench-tls-"));
  try {
    const tlsOf = makeTls(
      tlsDir,
      ids.map(([id, cluster]) => ({ id: id as string, cluster: cluster as string })),
    );
    const results: PhaseResult[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      for (const p of PHASES) {
        for (const main of COORD_MAINS) {
          console.error(`policy-scale: phase ${p} (${MINUTES} min), ${buildOf(main)}, round ${round + 1}…`);
          results.push(await phase(p, tlsOf, ids, main));
        }
      }
    }
    report(results);
    if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify(results, null, 2));
  } finally {
    rmSync(tlsDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
