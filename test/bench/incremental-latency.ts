/**
 * Where the milliseconds of a small incremental go (issue 16): N incrementals of a 1 GiB image, each
 * after ~2% of it changed in 64 KiB extents, through the coordinator's API (site-a → site-b, real
 * coordinator and agents on mutual TLS), against the CLI doing the same work on the same clusters in
 * the same run (`rbd snap create` + `rbd export-diff --from-snap | rbd import-diff` into its own copy),
 * alternating who goes first. Prints the p50 of every phase — taken from the processes' own log lines
 * (monotonic phase timers in the agents, wall-clock `time` fields across processes on this one host) —
 * then both totals and the ratio.
 *
 * And the sparse case: a 4 GiB image with 64 MiB written in scattered extents, full backup, ours vs the
 * CLI pipe, with the CPU seconds of each side (both agents vs the two rbd processes).
 *
 *   node dist/test/bench/incremental-latency.js [--mib 1024] [--runs 7] [--extent-kib 64]
 *                                              [--sparse-mib 4096] [--sparse-runs 3] [--only incr|sparse]
 *                                              [--limits '{"readsInFlight":8}']
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import type { IoCtx } from "../../agents/ceph";
import { BackupMode } from "../../src/gen/rbdbackup/v1/agent";
import { type BackupServiceClient, type Job, JobState } from "../../src/gen/rbdbackup/v1/backup_service";
import type { CoordinatorProcess } from "../../src/lab/coordinator-process";
import { type RunningAgent, startAgent } from "../helpers/agents";
import { backupRequest, startCoordinator, waitAgents } from "../helpers/coordinator";
import { connectLab, labCluster, uniqueName } from "../helpers/lab";
import { cliPipe } from "./ceph-cli";
import { arg, childrenCpu, cpuOf, limitsArg, median } from "./measure";

const execFileP = promisify(execFile);
const MiB = 1 << 20;
const mib = Number(arg("mib", "1024"));
const runs = Number(arg("runs", "7"));
const extent = Number(arg("extent-kib", "64")) * 1024;
const sparseMiB = Number(arg("sparse-mib", "4096"));
const sparseRuns = Number(arg("sparse-runs", "3"));
const only = arg("only", "");
const limits = limitsArg();

const rbd = (cluster: string, args: string[]) => execFileP("rbd", ["-c", labCluster(cluster).conf, ...args]);

interface LogLine {
  time: string;
  msg: string;
  job?: string;
  backup?: string;
  transfer?: string;
  phases?: Record<string, number>;
  [k: string]: unknown;
}

function parseLogs(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const l of text.split("\n")) {
    if (!l.startsWith("{")) continue;
    try {
      out.push(JSON.parse(l) as LogLine);
    } catch {
      // a partial line at the end
    }
  }
  return out;
}

/** Writes `count` random extents of `len` bytes at distinct `len`-aligned offsets below `size`. */
async function scatterExtents(io: IoCtx, image: string, size: number, count: number, len: number): Promise<void> {
  const slots = Math.floor(size / len);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(Math.floor(Math.random() * slots));
  const img = await io.imageOpen(image);
  const offs = [...picked];
  for (let i = 0; i < offs.length; i += 32)
    await Promise.all(offs.slice(i, i + 32).map((s) => img.write(randomBytes(len), s * len)));
  await img.flush();
  await img.close();
}

async function fill(io: IoCtx, image: string, bytes: number): Promise<void> {
  const img = await io.imageOpen(image);
  const buf = randomBytes(4 * MiB);
  for (let off = 0; off < bytes; off += 64 * MiB)
    await Promise.all(
      Array.from({ length: 16 }, (_, i) => (off + i * 4 * MiB < bytes ? img.write(buf, off + i * 4 * MiB) : 0)),
    );
  await img.flush();
  await img.close();
}

/** Follows a job to its end; a job that takes over 5 minutes fails the bench (e.g. a full pool retrying). */
async function follow(api: BackupServiceClient, job: Job): Promise<Job> {
  let last = job;
  for await (const e of api.watchJob({ jobId: job.id }, { signal: AbortSignal.timeout(300_000) }))
    if (e.job) last = e.job;
  if (last.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`job ${last.id}: ${last.errorMessage}`);
  return last;
}

/** One backup through the API, with its timeline (epoch ms) from the client and every process's log. */
async function oursTimed(
  api: BackupServiceClient,
  image: string,
  mode: BackupMode,
): Promise<{ seconds: number; job: Job; t0: number; created: number; done: number }> {
  const t0 = Date.now();
  const h0 = process.hrtime.bigint();
  const created = await api.createBackup(
    backupRequest({ cluster: "site-a", pool: "rbd", namespace: "", image }, { mode }),
  );
  const tc = Date.now();
  const job = await follow(api, created);
  const seconds = Number(process.hrtime.bigint() - h0) / 1e9;
  return { seconds, job, t0, created: tc, done: Date.now() };
}

/** The per-phase milliseconds of one job, from the client's clock and the processes' log lines. */
function breakdown(
  r: { job: Job; t0: number; created: number; done: number },
  coord: CoordinatorProcess,
  a: RunningAgent,
  b: RunningAgent,
): Record<string, number> {
  const jobId = r.job.id;
  const at = (lines: LogLine[], msg: string) => {
    const l = lines.find((x) => x.msg === msg && (x.job === jobId || x.backup === r.job.backupId));
    return l ? Date.parse(l.time) : Number.NaN;
  };
  const c = parseLogs(coord.logs());
  const la = parseLogs(a.logs());
  const lb = parseLogs(b.logs());
  const queued = at(c, "job queued");
  const leased = at(c, "job leased");
  const received = at(la, "lease received");
  const doneLine = la.find((x) => x.msg === "backup done" && x.backup === r.job.backupId);
  const agentDone = doneLine ? Date.parse(doneLine.time) : Number.NaN;
  const reported = at(c, "backup reported done; confirming it with the cluster that holds it");
  const succeeded = at(c, "job succeeded");
  const sink = lb.find((x) => x.msg === "transfer committed" && x.job === jobId);
  const out: Record<string, number> = {
    "api: call → job queued": queued - r.t0,
    "api: job queued → reply": r.created - queued,
    "dispatch: queued → leased": leased - queued,
    "lease: leased → agent received": received - leased,
  };
  for (const [k, v] of Object.entries(doneLine?.phases ?? {})) out[`source: ${k}`] = v;
  out["source: lease received → backup done (wall)"] = agentDone - received;
  for (const [k, v] of Object.entries(sink?.phases ?? {})) out[`  destination: ${k}`] = v;
  const outcome = doneLine?.outcomeMs;
  if (typeof outcome === "number") out["source: backup done → outcome sent"] = outcome;
  out["outcome: backup done → coordinator has it"] = reported - agentDone;
  out["confirm: → job succeeded"] = succeeded - reported;
  out["watch: succeeded → client sees it"] = r.done - succeeded;
  return out;
}

/** p50 [min–max] of every phase seen. */
function printPhases(phases: Array<Record<string, number>>): void {
  const keys = [...new Set(phases.flatMap((p) => Object.keys(p)))];
  for (const k of keys) {
    const xs = phases.map((p) => p[k]).filter((x): x is number => typeof x === "number" && Number.isFinite(x));
    if (!xs.length) continue;
    console.log(
      `  ${k.padEnd(52)}${median(xs).toFixed(1).padStart(8)}  [${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}]`,
    );
  }
}

async function incremental(api: BackupServiceClient, coord: CoordinatorProcess, a: RunningAgent, b: RunningAgent) {
  const ca = await connectLab("site-a");
  const cb = await connectLab("site-b");
  const ioA = await ca.openIoCtx("rbd");
  const ioB = await cb.openIoCtx("backups");
  const vol = uniqueName("bench-lat");
  const cliTarget = uniqueName("bench-latcli");
  const count = Math.round((mib * MiB * 0.02) / extent);
  const phases: Array<Record<string, number>> = [];
  const ours: number[] = [];
  const cli: number[] = [];
  const ids: string[] = [];
  try {
    await ioA.imageCreate(vol, mib * MiB);
    await fill(ioA, vol, mib * MiB);
    await ioB.imageCreate(cliTarget, mib * MiB);
    await rbd("site-a", ["snap", "create", `rbd/${vol}@c0`]);
    await cliPipe("site-a", `rbd/${vol}@c0`, null, "site-b", `backups/${cliTarget}`);
    ids.push((await oursTimed(api, vol, BackupMode.BACKUP_MODE_FULL)).job.backupId);
    // One untimed incremental: sessions, peer connections and caches warm, as in steady state.
    await scatterExtents(ioA, vol, mib * MiB, count, extent);
    ids.push((await oursTimed(api, vol, BackupMode.BACKUP_MODE_INCREMENTAL)).job.backupId);
    await rbd("site-a", ["snap", "create", `rbd/${vol}@c1`]);
    await cliPipe("site-a", `rbd/${vol}@c1`, "c0", "site-b", `backups/${cliTarget}`);
    let prev = "c1";
    for (let i = 0; i < runs; i++) {
      await scatterExtents(ioA, vol, mib * MiB, count, extent);
      const snap = `c${i + 2}`;
      const runCli = async () => {
        const t = process.hrtime.bigint();
        await rbd("site-a", ["snap", "create", `rbd/${vol}@${snap}`]);
        await cliPipe("site-a", `rbd/${vol}@${snap}`, prev, "site-b", `backups/${cliTarget}`);
        cli.push(Number(process.hrtime.bigint() - t) / 1e9);
      };
      const runOurs = async () => {
        const r = await oursTimed(api, vol, BackupMode.BACKUP_MODE_INCREMENTAL);
        ours.push(r.seconds);
        ids.push(r.job.backupId);
        // Let the log lines of the coordinator's follow-up work arrive.
        await new Promise((res) => setTimeout(res, 300));
        phases.push(breakdown(r, coord, a, b));
      };
      if (i % 2 === 0) {
        await runCli();
        await runOurs();
      } else {
        await runOurs();
        await runCli();
      }
      // The CLI keeps one snapshot, as our chain does.
      await rbd("site-a", ["snap", "rm", `rbd/${vol}@${prev}`]);
      prev = snap;
      process.stderr.write(
        `incremental ${i + 1}/${runs}: ours ${ours.at(-1)?.toFixed(3)} s, cli ${cli.at(-1)?.toFixed(3)} s\n`,
      );
    }
  } finally {
    for (const id of ids.reverse())
      await follow(api, await api.deleteBackup({ backupId: id, idempotencyKey: "" })).catch(() => {});
    for (const [cluster, spec] of [
      ["site-a", `rbd/${vol}`],
      ["site-b", `backups/${cliTarget}`],
    ] as const) {
      await rbd(cluster, ["snap", "purge", "--no-progress", spec]).catch(() => {});
      await rbd(cluster, ["rm", "--no-progress", spec]).catch(() => {});
    }
    await ioA.close();
    await ioB.close();
    await ca.close();
    await cb.close();
  }
  console.log(
    `\nincremental of ${mib} MiB, ${count} extents of ${extent / 1024} KiB (${((count * extent) / MiB).toFixed(1)} MiB), ${runs} runs — p50 ms [min–max]`,
  );
  printPhases(phases);
  const o = median(ours);
  const c = median(cli);
  console.log(
    `  ${"TOTAL ours (API call → client sees SUCCEEDED)".padEnd(52)}${(o * 1000).toFixed(1).padStart(8)}  [${(Math.min(...ours) * 1000).toFixed(0)}–${(Math.max(...ours) * 1000).toFixed(0)}]`,
  );
  console.log(
    `  ${"TOTAL CLI (snap create + export-diff | import-diff)".padEnd(52)}${(c * 1000).toFixed(1).padStart(8)}  [${(Math.min(...cli) * 1000).toFixed(0)}–${(Math.max(...cli) * 1000).toFixed(0)}]`,
  );
  console.log(`  ratio CLI/ours: ${(c / o).toFixed(2)}×  (>1: we are faster)`);
  return { oursSeconds: ours, cliSeconds: cli, phases };
}

async function sparse(api: BackupServiceClient, coord: CoordinatorProcess, agents: RunningAgent[]) {
  const ca = await connectLab("site-a");
  const cb = await connectLab("site-b");
  const ioA = await ca.openIoCtx("rbd");
  const ioB = await cb.openIoCtx("backups");
  const pids = agents.map((x) => x.proc.pid as number);
  const agentCpu = () => pids.reduce((t, p) => t + cpuOf(p), 0);
  const ours: number[] = [];
  const cli: number[] = [];
  const cpuOurs: number[] = [];
  const cpuCli: number[] = [];
  const cpuEach: number[][] = [];
  const phases: Array<Record<string, number>> = [];
  for (let i = 0; i < sparseRuns; i++) {
    const vol = uniqueName("bench-sparse");
    const target = uniqueName("bench-sparsecli");
    let id = "";
    try {
      await ioA.imageCreate(vol, sparseMiB * MiB);
      // 64 MiB in 256 KiB extents scattered over the whole image.
      await scatterExtents(ioA, vol, sparseMiB * MiB, 256, 256 * 1024);
      await ioB.imageCreate(target, sparseMiB * MiB);
      const runCli = async () => {
        const cpu0 = childrenCpu();
        const t = process.hrtime.bigint();
        await rbd("site-a", ["snap", "create", `rbd/${vol}@c1`]);
        await cliPipe("site-a", `rbd/${vol}@c1`, null, "site-b", `backups/${target}`);
        cli.push(Number(process.hrtime.bigint() - t) / 1e9);
        cpuCli.push(childrenCpu() - cpu0);
      };
      const runOurs = async () => {
        const cpu0 = agentCpu();
        const each0 = pids.map(cpuOf);
        const r = await oursTimed(api, vol, BackupMode.BACKUP_MODE_FULL);
        ours.push(r.seconds);
        cpuOurs.push(agentCpu() - cpu0);
        cpuEach.push(pids.map((p, k) => cpuOf(p) - (each0[k] as number)));
        id = r.job.backupId;
        await new Promise((res) => setTimeout(res, 300));
        phases.push(breakdown(r, coord, agents[0] as RunningAgent, agents[1] as RunningAgent));
      };
      if (i % 2 === 0) {
        await runCli();
        await runOurs();
      } else {
        await runOurs();
        await runCli();
      }
      process.stderr.write(
        `sparse ${i + 1}/${sparseRuns}: ours ${ours.at(-1)?.toFixed(3)} s, cli ${cli.at(-1)?.toFixed(3)} s\n`,
      );
    } finally {
      if (id) await follow(api, await api.deleteBackup({ backupId: id, idempotencyKey: "" })).catch(() => {});
      for (const [cluster, spec] of [
        ["site-a", `rbd/${vol}`],
        ["site-b", `backups/${target}`],
      ] as const) {
        await rbd(cluster, ["snap", "purge", "--no-progress", spec]).catch(() => {});
        await rbd(cluster, ["rm", "--no-progress", spec]).catch(() => {});
      }
    }
  }
  await ioA.close();
  await ioB.close();
  await ca.close();
  await cb.close();
  const range = (xs: number[]) => `[${Math.min(...xs).toFixed(3)}–${Math.max(...xs).toFixed(3)}]`;
  console.log(
    `\nsparse: full backup of a ${sparseMiB} MiB image with 64 MiB written (256 KiB extents), ${sparseRuns} runs`,
  );
  console.log(
    `  ours ${median(ours).toFixed(3)} s ${range(ours)}, agents ${median(cpuOurs).toFixed(2)} CPU-s ${range(cpuOurs)}`,
  );
  console.log(
    `  CLI  ${median(cli).toFixed(3)} s ${range(cli)}, rbd processes ${median(cpuCli).toFixed(2)} CPU-s ${range(cpuCli)}`,
  );
  console.log(
    `  CPU-s source agent ${median(cpuEach.map((x) => x[0] as number)).toFixed(2)}, destination agent ${median(cpuEach.map((x) => x[1] as number)).toFixed(2)}`,
  );
  console.log(`  ratio CLI/ours: ${(median(cli) / median(ours)).toFixed(2)}×  (>1: we are faster)`);
  printPhases(phases);
  return { oursSeconds: ours, cliSeconds: cli, cpuOurs, cpuCli, cpuEach, phases };
}

async function main(): Promise<void> {
  const coord = await startCoordinator();
  const agents = await Promise.all([
    startAgent("site-a", { coordinator: coord.address, limits }),
    startAgent("site-b", { coordinator: coord.address, limits }),
  ]);
  const [a, b] = agents as [RunningAgent, RunningAgent];
  try {
    await waitAgents(coord.client, 2);
    const incr = only === "sparse" ? null : await incremental(coord.client, coord, a, b);
    const sp = only === "incr" ? null : await sparse(coord.client, coord, agents);
    console.log(
      `\nJSON ${JSON.stringify({ bench: "incremental-latency", at: new Date().toISOString(), incr, sparse: sp })}`,
    );
  } finally {
    await Promise.all(agents.map((x) => x.stop()));
    await coord.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
