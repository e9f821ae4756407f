/**
 * One agent per state directory: its recovery journal, checkpoints and spent capabilities describe this
 * agent's own transfers only. The claim is `agent.pid` in the directory, naming the holder by pid, the
 * process's start time (/proc/<pid>/stat, clock ticks since boot) and the boot id — a pid alone names
 * whoever got that number next: after a reboot or a crash, a pid file naming a reused pid (another
 * node process, the coordinator) refused the agent's start for good. A claim whose process is gone, or
 * whose pid now belongs to a process that started at another time or in another boot, is stale and taken
 * over — moved aside with rename(2) first, so that of two agents taking over one stale claim only one
 * can. The file is made with link(2) (atomic: of two agents starting at once, one gets it), and removed
 * by a clean stop. A claim naming this very pid is stale (no other live process has it).
 *
 * A file of the earlier format (the pid alone) is honoured only while that pid runs `rbdbackup agent`.
 */
import { linkSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import path from "node:path";

export const PID_FILE = "agent.pid";

/** The state directory is claimed by a live agent. */
export class StateDirInUseError extends Error {
  override readonly name = "StateDirInUseError";
}

/** Who holds a claim: what agent.pid says. */
export interface Holder {
  pid: number;
  /** Field 22 of /proc/<pid>/stat; absent in the earlier format. */
  startTime?: string;
  bootId?: string;
}

/** How to look at processes (tests pass their own). */
export interface ProcessView {
  /** The start time (clock ticks since boot) of a running pid, or undefined when none runs. */
  startTime(pid: number): string | undefined;
  bootId(): string;
  /** The command line's arguments of a running pid (empty when none runs). */
  args(pid: number): string[];
}

export const procView: ProcessView = {
  startTime(pid) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      // "pid (comm) state ppid …": comm may hold spaces and parentheses; the fields after it are plain.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return fields[19]; // field 22: fields[0] is field 3 (state)
    } catch {
      return undefined;
    }
  },
  bootId() {
    try {
      return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    } catch {
      return "";
    }
  },
  args(pid) {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
    } catch {
      return [];
    }
  },
};

/** agent.pid's text for a holder: "pid startTime bootId". */
export function formatHolder(h: Holder): string {
  return `${[h.pid, h.startTime, h.bootId].filter((x) => x !== undefined && x !== "").join(" ")}\n`;
}

/** What agent.pid says, or null when it says nothing usable (a torn or foreign file: stale). */
export function parseHolder(text: string): Holder | null {
  const [pid, startTime, bootId] = text.trim().split(/\s+/);
  const n = Number(pid);
  if (!Number.isSafeInteger(n) || n <= 0) return null;
  return { pid: n, ...(startTime ? { startTime } : {}), ...(bootId ? { bootId } : {}) };
}

/** Whether the process a claim names still runs (the same process, not a later one with its pid). */
export function holderAlive(h: Holder, view: ProcessView): boolean {
  const started = view.startTime(h.pid);
  if (started === undefined) return false;
  if (h.startTime === undefined) return view.args(h.pid).includes("agent"); // the earlier format
  return started === h.startTime && (h.bootId === undefined || h.bootId === view.bootId());
}

/** Links `tmp` as `file`, taking a stale claim over; throws StateDirInUseError when it cannot. */
function claim(dir: string, file: string, tmp: string, self: number, view: ProcessView): void {
  // A few rounds at most: each round either links the claim, or finds a live holder (refused), or moves
  // a stale claim aside; a claim that keeps changing means another agent is starting on this directory.
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      linkSync(tmp, file);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") continue; // removed in between: link again
      throw new StateDirInUseError(
        `stateDir: cannot read ${file} (${(e as Error).message}); remove it if no agent runs with this stateDir`,
      );
    }
    const holder = parseHolder(text);
    // This process's own pid cannot be another live process: a file from before a restart that got the
    // same pid again (a container's pid 1) is stale.
    if (holder && holder.pid !== self && holderAlive(holder, view)) {
      throw new StateDirInUseError(
        `stateDir: ${dir} is in use by another agent (pid ${holder.pid}); give each agent its own stateDir`,
      );
    }
    // Stale: moved aside atomically (of two agents taking it over, one renames it), then judged again —
    // a claim another agent made in between is put back, and this one gives up.
    const aside = `${file}.stale.${self}`;
    try {
      renameSync(file, aside);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw e;
    }
    const moved = readFileSync(aside, "utf8");
    if (moved !== text) {
      try {
        linkSync(aside, file);
      } catch {
        // a third claim took the place meanwhile: it stands
      }
      rmSync(aside, { force: true });
      throw new StateDirInUseError(`stateDir: ${dir} was claimed by another agent while this one started`);
    }
    rmSync(aside, { force: true });
  }
  throw new StateDirInUseError(
    `stateDir: ${dir}: its ${PID_FILE} kept changing while this agent claimed it; another agent is starting with this stateDir`,
  );
}

/**
 * Claims `dir` for this process (`self`, this process by default) and returns the release (a clean
 * stop's: removes the file if it is still ours). Throws StateDirInUseError when a live agent holds it.
 */
export function claimStateDir(dir: string, view: ProcessView = procView, self = process.pid): () => void {
  const file = path.join(dir, PID_FILE);
  const me: Holder = { pid: self, startTime: view.startTime(self) ?? "0", bootId: view.bootId() };
  const mine = formatHolder(me);
  const tmp = `${file}.${self}.tmp`;
  writeFileSync(tmp, mine, { mode: 0o600 });
  try {
    claim(dir, file, tmp, self, view);
  } finally {
    rmSync(tmp, { force: true });
  }
  return () => {
    try {
      if (readFileSync(file, "utf8") === mine) unlinkSync(file);
    } catch {
      // already gone
    }
  };
}
