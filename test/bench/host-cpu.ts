/**
 * How busy the whole machine's CPUs were over an interval (from /proc/stat), to tell which resource
 * bound a run: a box ≥ 90% busy was CPU-bound whatever the scenario meant to emulate.
 */
import { readFileSync } from "node:fs";

export interface CpuSnapshot {
  busy: number;
  total: number;
}

export function hostCpu(): CpuSnapshot {
  const f = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

/** Fraction of all CPUs busy between two snapshots (0..1). */
export function busyFraction(a: CpuSnapshot, b: CpuSnapshot): number {
  return b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : 0;
}
