/**
 * One side-by-side comparison of the suite: rbdbackup and the CLI pipe doing the same work, alternating who
 * goes first each round, and the table row made of their medians.
 *
 * Ours is measured from outside the agents: CPU of each agent (/proc/<pid>/stat, utime + stime, before and
 * after), the agents' peak RSS (VmHWM, reset before), the OSDs' CPU, and the machine's busy share
 * (/proc/stat) over the same interval. The CLI's CPU is each rbd process's own rusage (ceph-cli.ts).
 *
 * `bound` (what limited ours, boundOf): "CPU" when the machine was ≥ 90% busy over the run (on the lab
 * the OSDs, both agents and whatever else runs share its cores), or when one agent process used ≥ 90% of
 * a core; "OSD" when the OSD processes used ≥ 90% of a core; none when neither (our round trips, our own
 * pipeline): the column then says nothing.
 */
import { cpus } from "node:os";
import type { CliPipeCpu } from "./ceph-cli";
import { cpuOf, inTurn, machineJiffies, median, procMemMiB, round as r, resetPeakRss } from "./measure";
import type { Row } from "./scenarios/types";

const MiB = 1 << 20;
const GiB = 1 << 30;
export const BUSY_CPU = 0.9;

export interface OursSample {
  seconds: number;
  sourceCpu: number;
  destinationCpu: number;
  osdCpu: number;
  /** Share of all cores busy over the run (0..1). */
  machineBusy: number;
  peakRssMiB: number;
  wireBytes?: number;
}

export interface CliSample {
  seconds: number;
  exportCpu: number;
  importCpu: number;
}

export interface Processes {
  source: number;
  destination: number;
  osds: number[];
}

/** Runs ours once, reading the processes around it; `f` resolves with the bytes it sent (if known). */
export async function timeOurs(procs: Processes, f: () => Promise<number | undefined>): Promise<OursSample> {
  const agents = [procs.source, procs.destination];
  for (const p of agents) resetPeakRss(p);
  const cpu0 = [...agents, ...procs.osds].map(cpuOf);
  const m0 = machineJiffies();
  const t = process.hrtime.bigint();
  const wireBytes = await f();
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  const m1 = machineJiffies();
  const used = [...agents, ...procs.osds].map((p, i) => cpuOf(p) - (cpu0[i] as number));
  return {
    seconds,
    sourceCpu: used[0] as number,
    destinationCpu: used[1] as number,
    osdCpu: used.slice(2).reduce((a, b) => a + b, 0),
    machineBusy: m1.total > m0.total ? (m1.busy - m0.busy) / (m1.total - m0.total) : 0,
    peakRssMiB: Math.max(...agents.map((p) => procMemMiB(p, "VmHWM"))),
    wireBytes,
  };
}

export async function timeCli(f: () => Promise<CliPipeCpu>): Promise<CliSample> {
  const t = process.hrtime.bigint();
  const cpu = await f();
  return {
    seconds: Number(process.hrtime.bigint() - t) / 1e9,
    exportCpu: cpu.exportSeconds,
    importCpu: cpu.importSeconds,
  };
}

/** Round `round` of a comparison: both sides, the CLI first on even rounds. */
export async function alternate(
  round: number,
  cli: () => Promise<CliSample>,
  ours: () => Promise<OursSample>,
  into: { cli: CliSample[]; ours: OursSample[] },
): Promise<void> {
  await inTurn(
    round,
    async () => into.cli.push(await cli()),
    async () => into.ours.push(await ours()),
  );
}

/**
 * What bound one of our runs, with evidence only: CPU when the machine was ≥ 90% busy or one agent
 * process used ≥ 90% of a core; OSD when the OSD processes together used ≥ 90% of a core (memstore keeps
 * them on the CPU); undefined when neither (our own pipeline, round trips: the column then says nothing).
 */
export function boundOf(s: OursSample): "CPU" | "OSD" | undefined {
  const oneCore = Math.max(s.sourceCpu, s.destinationCpu) / s.seconds;
  if (s.machineBusy >= BUSY_CPU || oneCore >= BUSY_CPU) return "CPU";
  return s.osdCpu / s.seconds >= BUSY_CPU ? "OSD" : undefined;
}

/** The bound most rounds had; none on a tie or when most rounds had none. */
export function boundOfRounds(bounds: Array<"CPU" | "OSD" | undefined>): "CPU" | "OSD" | undefined {
  for (const b of ["CPU", "OSD"] as const) if (bounds.filter((x) => x === b).length * 2 > bounds.length) return b;
  return undefined;
}

/** The row of a comparison moving `bytes` of image data: medians of each column over the rounds. */
export function comparisonRow(scenario: string, bytes: number, s: { cli: CliSample[]; ours: OursSample[] }): Row {
  const perGiB = (xs: number[]) => r((median(xs) / bytes) * GiB, 2);
  const cliSeconds = s.cli.length ? median(s.cli.map((x) => x.seconds)) : null;
  const oursSeconds = median(s.ours.map((x) => x.seconds));
  const bound = boundOfRounds(s.ours.map(boundOf));
  const wire = s.ours.flatMap((x) => (x.wireBytes === undefined ? [] : [x.wireBytes]));
  const busy = median(s.ours.map((x) => x.machineBusy));
  return {
    scenario,
    cliSeconds: cliSeconds === null ? null : r(cliSeconds, 3),
    oursSeconds: r(oursSeconds, 3),
    ratio: cliSeconds === null ? null : r(cliSeconds / oursSeconds, 2),
    oursMiBps: r(bytes / MiB / oursSeconds, 1),
    ...(wire.length ? { wireMiB: r(median(wire) / MiB, 1) } : {}),
    agentPeakRssMiB: Math.round(Math.max(...s.ours.map((x) => x.peakRssMiB))),
    cpuPerGiB: {
      sourceAgent: perGiB(s.ours.map((x) => x.sourceCpu)),
      destinationAgent: perGiB(s.ours.map((x) => x.destinationCpu)),
      ...(s.cli.length
        ? { cliExport: perGiB(s.cli.map((x) => x.exportCpu)), cliImport: perGiB(s.cli.map((x) => x.importCpu)) }
        : {}),
    },
    ...(bound ? { bound } : {}),
    note:
      `machine ${Math.round(busy * 100)}% busy of ${cpus().length} cores; ` +
      `OSDs ${perGiB(s.ours.map((x) => x.osdCpu))} CPU-s/GiB`,
  };
}
