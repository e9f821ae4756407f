/**
 * The logs of the daemons a test process started, kept for when the test fails: at exit with a
 * non-zero code, each attached daemon's output (stdout then stderr, the last LIMIT bytes) is written to
 * `$RBDBACKUP_FAILURE_LOG_DIR/<test file>.<daemon>.<pid>.log`, and test/run.sh prints those files after
 * a failed run — so a stalled agent in CI leaves its own account, not only the test's timeout.
 * Without that variable nothing is written.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

const LIMIT = 256 * 1024;
const kept: { name: string; pid: number; output: () => string }[] = [];
let installed = false;

/** Keeps `output` of daemon `name` (pid) for writing out if this process exits failed. */
export function keepLogsOnFailure(name: string, pid: number | undefined, output: () => string): void {
  if (!process.env.RBDBACKUP_FAILURE_LOG_DIR) return;
  kept.push({ name, pid: pid ?? 0, output });
  if (installed) return;
  installed = true;
  process.once("exit", (code) => {
    if (!code && !process.exitCode) return;
    writeFailureLogs();
  });
}

function writeFailureLogs(): void {
  const dir = process.env.RBDBACKUP_FAILURE_LOG_DIR;
  if (!dir) return;
  try {
    mkdirSync(dir, { recursive: true });
    const test = path.basename(process.argv[1] ?? "process").replace(/\.js$/, "");
    for (const d of kept) {
      const text = d.output();
      const tail = text.length > LIMIT ? `[… ${text.length - LIMIT} bytes before]\n${text.slice(-LIMIT)}` : text;
      const name = d.name.replace(/[^A-Za-z0-9_.-]+/g, "-");
      writeFileSync(path.join(dir, `${test}.${name}.${d.pid}.log`), tail);
    }
  } catch {
    // best effort: exiting anyway
  }
}
