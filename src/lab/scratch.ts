/**
 * What the lab helpers make for a caller that did not say where, and clean up when this process ends:
 * temporary directories (an agent's state, a coordinator's catalog, a test's scratch files) and attached
 * child processes (daemons, a Prometheus). At exit — normal end, an uncaught error, `process.exit`, or
 * SIGINT/SIGTERM/SIGHUP when nobody else handles them — children still running get SIGKILL, then the
 * directories are removed. So a test file leaves nothing in /tmp even when it fails half-way.
 *
 * A daemon's stop() and kill() leave its directory in place on purpose: a test restarts a daemon on the
 * directory of the one it killed. Detached daemons (the demo's) and directories a caller chose are never
 * touched.
 *
 * Under the suite (RBDBACKUP_TEST_STRAYS_FAIL=1, test/run.sh), a child still running at exit is a test
 * that did not stop what it started: it is named and the process exits 1. Node's runner ends each file's
 * process once its tests are done (--test-force-exit), so such a child no longer holds the file open for
 * ever — without this, killing it here would turn that leak into a silent pass.
 */
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const dirs = new Set<string>();
const children = new Set<ChildProcess>();
let installed = false;

/** A new directory under the system's temporary directory (`<prefix>XXXXXX`), removed at exit. */
export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  dirs.add(dir);
  installExitHook();
  return dir;
}

/** Removes a scratch directory now (it would be removed at exit anyway). */
export function removeScratchDir(dir: string): void {
  dirs.delete(dir);
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Kills `proc` at exit if it is still running then (it is forgotten once it exits by itself). */
export function killAtExit(proc: ChildProcess): void {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  children.add(proc);
  proc.once("exit", () => children.delete(proc));
  installExitHook();
}

function cleanup(): void {
  if (children.size > 0 && process.env.RBDBACKUP_TEST_STRAYS_FAIL === "1") {
    const named = [...children].map((p) => `pid ${p.pid} (${p.spawnargs.slice(0, 3).join(" ")})`).join(", ");
    process.stderr.write(`rbdbackup lab: the tests left these child processes running (killed now): ${named}\n`);
    process.exitCode = 1;
  }
  for (const p of children) {
    try {
      p.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  children.clear();
  for (const d of dirs) {
    try {
      rmSync(d, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // best effort: exiting anyway
    }
  }
  dirs.clear();
}

function installExitHook(): void {
  if (installed) return;
  installed = true;
  process.once("exit", cleanup);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    // Only where nobody else handles the signal: ours would otherwise stop its default action (exit).
    if (process.listenerCount(sig) > 0) continue;
    const onSignal = () => {
      cleanup();
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig); // the default action: exit
    };
    process.once(sig, onSignal);
  }
}
