/**
 * Scenario "memory" (issue 16: agent peak RSS ≤ 192 MiB at any image size): a FULL backup of an image fully
 * written with random data (`--mib`) site-a → site-b, then a restore of it to a new volume on site-a, through
 * the API; no CLI side. While each runs, both agents' resident memory is sampled from /proc every 20 ms and
 * their heap (V8 used and total), external memory (Buffers) and resident memory from their /metrics every
 * 250 ms; the row gives each agent's peak RSS (VmHWM, reset before the run), its resident memory at rest
 * before it, and what made up its memory at its highest scraped sample: heap, external, and the rest
 * (native: malloc arenas of librados/librbd, thread stacks, code). The source image is removed before the
 * restore so a 4 GiB run fits an 8G lab. RBDBACKUP_BENCH_REST_S=N lets the agents rest N s between the two.
 */
import { execFileSync } from "node:child_process";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import type { RunningAgent } from "../../helpers/agents";
import { scrape } from "../../helpers/coordinator";
import { uniqueName } from "../../helpers/lab";
import { cpuOf, median, procMemMiB, resetPeakRss } from "../measure";
import { fill, startRig } from "../rig";
import type { Row, Scenario, ScenarioContext } from "./types";

const MiB = 1 << 20;
const GiB = 1 << 30;

interface Composition {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
}

interface AgentMemory {
  /** Resident MiB before the run. */
  rest: number;
  /** VmHWM after the run (peak resident MiB during it). */
  peak: number;
  /** Seconds into the run at which the highest /proc sample was seen. */
  peakAt: number;
  /** The scraped sample with the highest resident memory. */
  atPeak?: Composition;
  cpu: number;
  /** Resident MiB once it is over, and after glibc's malloc_trim(0) (RBDBACKUP_BENCH_TRIM=1: through gdb). */
  after?: number;
  trimmed?: number;
}

/**
 * With RBDBACKUP_BENCH_TRIM=1 (needs gdb and ptrace rights): calls malloc_trim(0) in each agent and reads its
 * resident memory before and after — how much of what stays resident after a transfer is free memory glibc
 * keeps (what a malloc_trim in the agent after each transfer would give back).
 */
function trimProbe(pids: number[], mem: AgentMemory[]): void {
  pids.forEach((p, i) => {
    const m = mem[i] as AgentMemory;
    m.after = procMemMiB(p, "VmRSS");
    if (process.env.RBDBACKUP_BENCH_TRIM !== "1") return;
    execFileSync("gdb", ["-p", String(p), "-batch", "-ex", "call (int) malloc_trim(0)"], {
      stdio: "ignore",
      timeout: 60_000,
    });
    m.trimmed = procMemMiB(p, "VmRSS");
  });
}

const gauge = (text: string, name: string) => {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, "m").exec(text);
  return m ? Number(m[1]) / MiB : Number.NaN;
};

/** Runs `f` while sampling both agents; resolves with its seconds and each agent's memory. */
async function sampled(
  agents: RunningAgent[],
  f: () => Promise<void>,
): Promise<{ seconds: number; mem: AgentMemory[] }> {
  const pids = agents.map((a) => a.proc.pid as number);
  const mem: AgentMemory[] = pids.map((p) => ({ rest: procMemMiB(p, "VmRSS"), peak: 0, peakAt: 0, cpu: cpuOf(p) }));
  const highest = pids.map(() => 0);
  for (const p of pids) resetPeakRss(p);
  const t0 = process.hrtime.bigint();
  const since = () => Number(process.hrtime.bigint() - t0) / 1e9;
  const fast = setInterval(() => {
    pids.forEach((p, i) => {
      const r = procMemMiB(p, "VmRSS");
      if (r > (highest[i] as number)) {
        highest[i] = r;
        (mem[i] as AgentMemory).peakAt = since();
      }
    });
  }, 20);
  let scraping = true;
  const scrapes = (async () => {
    while (scraping) {
      await Promise.all(
        agents.map(async (a, i) => {
          const text = await scrape(a.metricsAddress).catch(() => "");
          if (!text) return;
          const c: Composition = {
            rss: gauge(text, "process_resident_memory_bytes"),
            heapUsed: gauge(text, "nodejs_heap_size_used_bytes"),
            heapTotal: gauge(text, "nodejs_heap_size_total_bytes"),
            external: gauge(text, "nodejs_external_memory_bytes"),
          };
          const m = mem[i] as AgentMemory;
          if (!m.atPeak || c.rss > m.atPeak.rss) m.atPeak = c;
        }),
      );
      await new Promise((res) => setTimeout(res, 250));
    }
  })();
  try {
    await f();
  } finally {
    clearInterval(fast);
    scraping = false;
    await scrapes;
  }
  const seconds = since();
  pids.forEach((p, i) => {
    const m = mem[i] as AgentMemory;
    m.peak = procMemMiB(p, "VmHWM");
    m.cpu = cpuOf(p) - m.cpu;
  });
  trimProbe(pids, mem);
  return { seconds, mem };
}

const r0 = (x: number) => Math.round(x);

function describe(who: string, m: AgentMemory): string {
  const c = m.atPeak;
  const parts = c
    ? `heap ${r0(c.heapUsed)}/${r0(c.heapTotal)}, external ${r0(c.external)}, rest ${r0(c.rss - c.heapTotal - c.external)} of ${r0(c.rss)}`
    : "no scrape";
  const after =
    m.after === undefined
      ? ""
      : `; after ${r0(m.after)}${m.trimmed === undefined ? "" : `, ${r0(m.trimmed)} after malloc_trim`}`;
  return `${who} peak ${r0(m.peak)} MiB at ${m.peakAt.toFixed(1)} s (at rest ${r0(m.rest)}${after}; at its highest scrape ${parts})`;
}

function row(label: string, bytes: number, runs: Array<{ seconds: number; mem: AgentMemory[] }>): Row {
  const seconds = median(runs.map((x) => x.seconds));
  const peakRun = runs.reduce((a, b) =>
    Math.max(...b.mem.map((m) => m.peak)) > Math.max(...a.mem.map((m) => m.peak)) ? b : a,
  );
  const [src, dst] = peakRun.mem as [AgentMemory, AgentMemory];
  return {
    scenario: label,
    cliSeconds: null,
    oursSeconds: +seconds.toFixed(3),
    ratio: null,
    oursMiBps: +(bytes / MiB / seconds).toFixed(1),
    agentPeakRssMiB: r0(Math.max(...runs.flatMap((x) => x.mem.map((m) => m.peak)))),
    cpuPerGiB: {
      sourceAgent: +((median(runs.map((x) => (x.mem[0] as AgentMemory).cpu)) / bytes) * GiB).toFixed(2),
      destinationAgent: +((median(runs.map((x) => (x.mem[1] as AgentMemory).cpu)) / bytes) * GiB).toFixed(2),
    },
    note: `MiB; highest run: ${describe("source", src)}; ${describe("destination", dst)}; peaks per run ${runs
      .map((x) => x.mem.map((m) => r0(m.peak)).join("/"))
      .join(", ")}`,
  };
}

export const memory: Scenario = {
  name: "memory",
  describe: "both agents' peak RSS and what it is made of during a full backup and a restore of --mib",
  // Each round: the volume and its restore on site-a, the base image on site-b.
  writes: (ctx) => [
    { site: "site-a", mib: 2 * ctx.mib * ctx.rounds },
    { site: "site-b", mib: ctx.mib * ctx.rounds },
  ],
  async run(ctx: ScenarioContext): Promise<Row[]> {
    const rig = await startRig(ctx);
    const a = rig.agents["site-a"];
    const b = rig.agents["site-b"];
    const backups: Array<{ seconds: number; mem: AgentMemory[] }> = [];
    const restores: Array<{ seconds: number; mem: AgentMemory[] }> = [];
    try {
      for (let round = 0; round < ctx.rounds; round++) {
        const vol = uniqueName("bench-mem");
        const restored = uniqueName("bench-memr");
        const ids: string[] = [];
        try {
          await rig.volumes.imageCreate(vol, ctx.mib * MiB);
          await fill(rig.volumes, vol, ctx.mib * MiB);
          backups.push(
            await sampled([a, b], async () => {
              ids.push((await rig.backup(vol, BackupMode.BACKUP_MODE_FULL)).id);
            }),
          );
          await rig.removeImages([["site-a", `rbd/${vol}`]]);
          // RBDBACKUP_BENCH_REST_S: the agents rest this long between the roles (an agent gives memory
          // back after 250–500 ms of a quiet data plane: quiet-release.ts); 0 runs the restore at once.
          const rest = Number(process.env.RBDBACKUP_BENCH_REST_S ?? 0);
          if (rest > 0) await new Promise((res) => setTimeout(res, rest * 1000));
          restores.push(
            await sampled([b, a], async () => {
              await rig.restoreNew(ids[0] as string, restored);
            }),
          );
          ctx.log(
            `memory ${round + 1}: backup ${backups
              .at(-1)
              ?.mem.map((m) => r0(m.peak))
              .join("/")} MiB, restore ${restores
              .at(-1)
              ?.mem.map((m) => r0(m.peak))
              .join("/")} MiB (source/destination peak RSS)`,
          );
        } finally {
          for (const id of ids) await rig.deleteBackup(id).catch((e) => ctx.log(`delete backup ${id}: ${e}`));
          await rig.removeImages([
            ["site-a", `rbd/${vol}`],
            ["site-a", `rbd/${restored}`],
          ]);
        }
      }
    } finally {
      await rig.stop();
    }
    return [
      row(`memory: full backup ${ctx.mib} MiB`, ctx.mib * MiB, backups),
      row(`memory: restore ${ctx.mib} MiB`, ctx.mib * MiB, restores),
    ];
  },
};
