/**
 * The contract between the performance suite (test/bench/suite.ts, `npm run bench`) and its scenarios:
 * each scenario module under test/bench/scenarios/ exports a `Scenario`; the suite runs the ones asked
 * for, prints their rows side by side, writes them as JSON, and `npm run bench:readme` rewrites the
 * README's table (between `<!-- bench:table:begin -->` and `<!-- bench:table:end -->`) from them.
 *
 * A scenario measures rbdbackup and the Ceph CLI doing the same work in the same run (alternating who
 * goes first, `rounds` rounds, medians), sets up and removes everything it needs (clusters of the lab
 * it is given, agents, coordinator, network namespaces), and never asserts a time.
 */

import type { SiteWrite } from "../lab-room";

/** CPU seconds per GiB moved, per process (what each side of the work cost). */
export interface CpuPerGiB {
  sourceAgent?: number;
  destinationAgent?: number;
  /** `rbd export-diff` (or `rbd export`) of the CLI pipe. */
  cliExport?: number;
  /** `rbd import-diff` (or `rbd import`). */
  cliImport?: number;
}

/** One line of the table. */
export interface Row {
  /** What was measured, e.g. "full 1 GiB random", "WAN 20 ms RTT 1 Gbit/s, zstd". */
  scenario: string;
  /** The CLI doing the same (median seconds); null where there is no CLI equivalent. */
  cliSeconds: number | null;
  oursSeconds: number;
  /** cliSeconds / oursSeconds (> 1: we are faster); null without a CLI figure. */
  ratio: number | null;
  /** Throughput of ours, MiB of image data per second (omitted for small changes). */
  oursMiBps?: number;
  /** MiB of data that crossed the network (after compression). */
  wireMiB?: number;
  /** Highest peak RSS of an agent during the scenario (VmHWM, reset before it). */
  agentPeakRssMiB?: number;
  cpuPerGiB?: CpuPerGiB;
  /** What bound the run (the busiest resource): "CPU", "OSD", "network". */
  bound?: "CPU" | "OSD" | "network";
  /** Anything a reader needs (a breakdown, the spread of rounds, a limit that held). */
  note?: string;
}

export interface ScenarioContext {
  /** Image size for the scenarios that scale with it (default 1024). */
  mib: number;
  rounds: number;
  /** Agent `limits` overrides (--limits JSON). */
  limits: Record<string, number>;
  /** The lab directory (RBDBACKUP_LAB_DIR) with clusters site-a and site-b. */
  labDir: string;
  /** Progress lines for a person watching (stderr). */
  log(line: string): void;
}

export interface Scenario {
  /** Short id used on the command line (`--scenarios full,wan`). */
  name: string;
  /** One line: what it measures. */
  describe: string;
  /** Needs root (network namespaces, tc); the suite skips it, saying so, without. */
  needsRoot?: boolean;
  /**
   * What it writes into the shared lab's clusters at most, MiB per site over all its rounds (removed
   * snapshots keep their data until the suite's trim): the suite skips it at once when a cluster has
   * less room (lab-room.ts). Absent: it writes nothing there (a lab of its own).
   */
  writes?(ctx: ScenarioContext): SiteWrite[];
  run(ctx: ScenarioContext): Promise<Row[]>;
}
