/**
 * What the backup-latency scenarios share (incremental.ts, live-writes.ts, sparse.ts): a deployment (a
 * coordinator and one agent per site on mutual TLS), images written in scattered extents, one backup
 * through the API timed from the client, and where its milliseconds went — taken from the processes' own
 * log lines (monotonic phase timers in the agents, wall-clock `time` fields across processes on this one
 * host) and grouped as issue 16 names them (API, lease, snapshot, chain listing, transfer, commit,
 * hygiene, outcome, confirmation).
 */
import { randomBytes } from "node:crypto";
import type { IoCtx } from "../../../agents/ceph";
import { parseBackupSnap } from "../../../src/common/ids";
import type { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import type { BackupServiceClient, Job } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { CoordinatorProcess } from "../../../src/lab/coordinator-process";
import { type RunningAgent, startAgent } from "../../helpers/agents";
import { backupRequest, startCoordinator, waitAgents } from "../../helpers/coordinator";
import { rbd } from "../../helpers/lab";
import { waitFor } from "../../helpers/wait";
import { cpuOf, median } from "../measure";
import { follow } from "../rig";
import type { ScenarioContext } from "./types";

export const MiB = 1 << 20;
export const GiB = 1 << 30;

export interface Deployment {
  api: BackupServiceClient;
  coord: CoordinatorProcess;
  a: RunningAgent;
  b: RunningAgent;
  /** CPU seconds of [source agent, destination agent] so far. */
  agentCpu(): [number, number];
}

/** Runs `fn` with a coordinator and agents of site-a and site-b (ctx.limits), stopping them after. */
export async function withDeployment<T>(ctx: ScenarioContext, fn: (d: Deployment) => Promise<T>): Promise<T> {
  const coord = await startCoordinator();
  const agents: RunningAgent[] = [];
  try {
    for (const site of ["site-a", "site-b"])
      agents.push(await startAgent(site, { coordinator: coord.address, limits: ctx.limits }));
    await waitAgents(coord.client, 2);
    const [a, b] = agents as [RunningAgent, RunningAgent];
    const agentCpu = (): [number, number] => [cpuOf(a.proc.pid as number), cpuOf(b.proc.pid as number)];
    return await fn({ api: coord.client, coord, a, b, agentCpu });
  } finally {
    await Promise.all(agents.map((x) => x.stop()));
    await coord.stop();
  }
}

/** Writes `count` random extents of `len` bytes at distinct `len`-aligned offsets below `size`. */
export async function scatterExtents(io: IoCtx, image: string, size: number, count: number, len: number) {
  const slots = Math.floor(size / len);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(Math.floor(Math.random() * slots));
  const img = await io.imageOpen(image);
  try {
    const offs = [...picked];
    for (let i = 0; i < offs.length; i += 32)
      await Promise.all(offs.slice(i, i + 32).map((s) => img.write(randomBytes(len), s * len)));
    await img.flush();
  } finally {
    await img.close();
  }
}

/** Writes `bytes` of random data from offset 0. */
export async function fill(io: IoCtx, image: string, bytes: number): Promise<void> {
  const img = await io.imageOpen(image);
  try {
    const buf = randomBytes(4 * MiB);
    for (let off = 0; off < bytes; off += 64 * MiB)
      await Promise.all(
        Array.from({ length: 16 }, (_, i) => (off + i * 4 * MiB < bytes ? img.write(buf, off + i * 4 * MiB) : 0)),
      );
    await img.flush();
  } finally {
    await img.close();
  }
}

export interface Timed {
  seconds: number;
  job: Job;
  /** Epoch ms: the call, its reply, the client seeing SUCCEEDED. */
  t0: number;
  created: number;
  done: number;
}

/** One backup of site-a's rbd/<image> through the API, timed from the client; its id goes into `ids` at once (cleanup). */
export async function backupTimed(
  api: BackupServiceClient,
  image: string,
  mode: BackupMode,
  ids: string[],
): Promise<Timed> {
  const t0 = Date.now();
  const h0 = process.hrtime.bigint();
  const created = await api.createBackup(
    backupRequest({ cluster: "site-a", pool: "rbd", namespace: "", image }, { mode }),
  );
  const tc = Date.now();
  ids.push(created.backupId);
  const job = await follow(api, created, 300_000);
  const seconds = Number(process.hrtime.bigint() - h0) / 1e9;
  return { seconds, job, t0, created: tc, done: Date.now() };
}

/**
 * Waits (after a timed backup, untimed) until the coordinator's snapshot hygiene has left only the
 * named backup's snapshot among the volume's backup snapshots (none, with `backupId` null: after the
 * delete of its last backup) — so its removals do not run during the next measurement, where the sweep
 * would hold the volume's lock and delay the next job (the CLI's `snap rm` of its previous snapshot is
 * outside its timing too). Seconds waited.
 */
export async function hygieneSettled(io: IoCtx, image: string, backupId: string | null): Promise<number> {
  const t = process.hrtime.bigint();
  let seen: string[] = [];
  await waitFor(
    async () => {
      const img = await io.imageOpen(image, { readOnly: true });
      try {
        seen = (await img.snapList()).map((x) => x.name).filter((n) => parseBackupSnap(n));
      } finally {
        await img.close();
      }
      if (backupId === null) return seen.length === 0;
      return seen.length === 1 && parseBackupSnap(seen[0] as string)?.backupId === backupId;
    },
    {
      what: () =>
        `the hygiene to leave ${backupId === null ? "no backup snapshot" : `only backup ${backupId}'s snapshot`} on ${image} (seen ${seen})`,
      timeoutMs: 120_000,
      intervalMs: 20,
    },
  );
  return Number(process.hrtime.bigint() - t) / 1e9;
}

/** Deletes the backups (newest first) and the named images with their snapshots; failures are ignored. */
export async function cleanUp(api: BackupServiceClient, backupIds: string[], images: Array<[string, string]>) {
  for (const id of [...backupIds].reverse())
    await api
      .deleteBackup({ backupId: id, idempotencyKey: "" })
      .then((job) => follow(api, job))
      .catch(() => {}); // a refused delete (its backup's job still active) must not hide the scenario's own error
  for (const [cluster, spec] of images) {
    await rbd(cluster, ["snap", "purge", "--no-progress", spec]).catch(() => {});
    await rbd(cluster, ["rm", "--no-progress", spec]).catch(() => {});
  }
}

interface LogLine {
  time: string;
  msg: string;
  job?: string;
  backup?: string;
  phases?: Record<string, number>;
  [k: string]: unknown;
}

export function parseLogs(text: string): LogLine[] {
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

/** Milliseconds per phase of one job (detailed keys), from the client's clock and the processes' logs. */
export function breakdown(r: Timed, d: Deployment): Record<string, number> {
  const jobId = r.job.id;
  const mine = (x: LogLine) => x.job === jobId || x.backup === r.job.backupId;
  const at = (lines: LogLine[], msg: string) => {
    const l = lines.find((x) => x.msg === msg && mine(x));
    return l ? Date.parse(l.time) : Number.NaN;
  };
  const c = parseLogs(d.coord.logs());
  const la = parseLogs(d.a.logs());
  const lb = parseLogs(d.b.logs());
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
  // A new snapshot is made while the header is on its way (inside the transfer phase, overlapping the
  // destination's prepare): its time is not a phase of its own.
  if (typeof doneLine?.snapshotMsDuringTransfer === "number")
    out["  source: snapshot made during the transfer's start"] = doneLine.snapshotMsDuringTransfer;
  for (const [k, v] of Object.entries((doneLine?.sourceMs as Record<string, number>) ?? {}))
    out[`  source transfer: ${k} (from the stream's start)`] = v;
  if (typeof doneLine?.readWindowPeak === "number") out["  source: reads in flight, peak"] = doneLine.readWindowPeak;
  for (const [k, v] of Object.entries(sink?.phases ?? {})) out[`  destination: ${k}`] = v;
  for (const [k, v] of Object.entries((sink?.receiveWaits as Record<string, number>) ?? {}))
    out[`  destination: receive waiting for ${k}`] = v;
  for (const [k, v] of Object.entries((sink?.writes as Record<string, number>) ?? {}))
    out[`  destination: writes ${k}`] = v;
  out["outcome: backup done → coordinator has it"] = reported - agentDone;
  out["confirm: → job succeeded"] = succeeded - reported;
  out["watch: succeeded → client sees it"] = r.done - succeeded;
  return out;
}

/** The detailed phases folded into issue 16's groups (ms). */
export function grouped(p: Record<string, number>): Record<string, number> {
  const g = (...keys: string[]) => keys.reduce((t, k) => t + (Number.isFinite(p[k]) ? (p[k] as number) : 0), 0);
  const dest = (k: string) => p[`  destination: ${k}`] ?? 0;
  const transfer = p["source: transfer"] ?? 0;
  const commit = dest("drainFlush") + dest("digestsWrite") + dest("commit") + dest("close");
  return {
    api: g("api: call → job queued", "api: job queued → reply"),
    lease: g("dispatch: queued → leased", "lease: leased → agent received"),
    open: g("source: open"),
    chainListing: g("source: listChains", "source: plan"),
    snapshotCreate: g("source: snapCreate", "source: snapshot"),
    destPrepare: dest("header") + dest("poolChecks") + dest("prepare") + dest("digestsStart"),
    diffTransfer: dest("receive"),
    commit,
    // What the source's transfer phase spent beyond the destination's own phases (stream set-up, summary).
    transferOther: Math.max(0, transfer - dest("receive") - commit - dest("prepare") - dest("poolChecks")),
    hygiene: g("source: prune"),
    outcome: g("outcome: backup done → coordinator has it"),
    confirmation: g("confirm: → job succeeded"),
    watch: g("watch: succeeded → client sees it"),
  };
}

/** p50 of every key over the runs, e.g. "api 103, lease 31, …" (ms). */
export function p50s(runs: Array<Record<string, number>>): Record<string, number> {
  const keys = [...new Set(runs.flatMap((x) => Object.keys(x)))];
  const out: Record<string, number> = {};
  for (const k of keys) {
    const xs = runs.map((x) => x[k]).filter((x): x is number => typeof x === "number" && Number.isFinite(x));
    if (xs.length) out[k] = Math.round(median(xs) * 10) / 10;
  }
  return out;
}

/** One line: "api 103 · lease 31 · …" of the grouped p50s. */
export function groupedNote(runs: Array<Record<string, number>>): string {
  const p = p50s(runs.map(grouped));
  return Object.entries(p)
    .map(([k, v]) => `${k} ${Math.round(v)}`)
    .join(" · ");
}

/** The detailed p50 [min–max] of every phase, for a person reading the log. */
export function detailLines(runs: Array<Record<string, number>>): string[] {
  const keys = [...new Set(runs.flatMap((p) => Object.keys(p)))];
  const lines: string[] = [];
  for (const k of keys) {
    const xs = runs.map((p) => p[k]).filter((x): x is number => typeof x === "number" && Number.isFinite(x));
    if (!xs.length) continue;
    const m = median(xs).toFixed(1).padStart(8);
    lines.push(`  ${k.padEnd(52)}${m}  [${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}]`);
  }
  return lines;
}

/** Lets the log lines of the coordinator's follow-up work arrive. */
export const settleLogs = () => new Promise((res) => setTimeout(res, 300));
