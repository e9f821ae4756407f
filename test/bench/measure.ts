/** What every benchmark here shares: its command-line options, medians, and a process's CPU and memory from /proc. */
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

/** `--name value` from the command line, or `def`. */
export function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? (process.argv[i + 1] as string) : def;
}

/** `--limits '{...}'`: agent limits to try (see agents/agent/config.ts). */
export function limitsArg(): Record<string, number> {
  return JSON.parse(arg("limits", "{}")) as Record<string, number>;
}

/** `x` rounded to `digits` decimals (the figures of a row and of the README table). */
export const round = (x: number, digits: number): number => +x.toFixed(digits);

/** Round `round` of a side-by-side: `first` then `second` on even rounds, the other way on odd ones. */
export async function inTurn(round: number, first: () => Promise<unknown>, second: () => Promise<unknown>) {
  for (const side of round % 2 === 0 ? [first, second] : [second, first]) await side();
}

export function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

const CLK_TCK = 100;
function statFields(pid: number | "self"): string[] {
  return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
}

/** utime + stime of a process, seconds. */
export function cpuOf(pid: number): number {
  const f = statFields(pid);
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/** CPU of this process's waited-for children (e.g. the rbd CLI processes), seconds. */
export function childrenCpu(): number {
  const f = statFields("self");
  return (Number(f[13]) + Number(f[14])) / CLK_TCK;
}

/** A memory line of /proc/<pid>/status (VmHWM = peak RSS, VmRSS = RSS now), MiB. */
export function procMemMiB(pid: number, key: "VmHWM" | "VmRSS"): number {
  const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0) / 1024;
}

/** Starts a new peak-RSS measurement (VmHWM := current RSS). */
export function resetPeakRss(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
}

/** The OSD daemons of a lab cluster (`<labDir>/<site>/run/osd.N.pid`), for their CPU. */
export function osdPids(labDir: string, sites: string[]): number[] {
  const pids: number[] = [];
  for (const site of sites) {
    const run = path.join(labDir, site, "run");
    for (const f of existsSync(run) ? readdirSync(run) : []) {
      if (/^osd\.\d+\.pid$/.test(f)) pids.push(Number(readFileSync(path.join(run, f), "utf8").trim()));
    }
  }
  return pids.filter((p) => Number.isInteger(p) && p > 0 && existsSync(`/proc/${p}`));
}

/** The machine's CPU jiffies so far, all cores (/proc/stat): busy = everything but idle and iowait. */
export function machineJiffies(): { busy: number; total: number } {
  const f = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((t, x) => t + x, 0);
  return { busy: total - (f[3] ?? 0) - (f[4] ?? 0), total };
}
