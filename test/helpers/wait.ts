/**
 * Tests wait on conditions, never on time: `waitFor` polls a real condition (a state, a file, a log
 * line, a status) until it holds or its deadline passes, and names what it waited for when it fails.
 * `exited` waits for a child process to end. `tempDir` gives a test scratch directory that is removed
 * when the test process exits (src/lab/scratch.ts), also when the test fails half-way.
 */
import type { ChildProcess } from "node:child_process";
import { delay } from "../../src/common/retry";
import { removeScratchDir, scratchDir } from "../../src/lab/scratch";

export interface WaitOptions {
  /** What is awaited, for the error ("the transfer to start"); a function can tell what it saw last. */
  what: string | (() => string);
  /** Deadline, ms (default 30 s). */
  timeoutMs?: number;
  /** Poll interval, ms (default 100). */
  intervalMs?: number;
}

/** What a truthy result leaves of `T`. */
export type Truthy<T> = Exclude<T, false | 0 | "" | null | undefined>;

/**
 * Polls `condition` until it returns a truthy value (returned) or the deadline passes (throws, naming
 * `what`). An error thrown by `condition` ends the wait at once: a condition can
 * assert that the awaited thing is still possible ("the job has not ended early").
 */
export async function waitFor<T>(condition: () => T | Promise<T>, opts: WaitOptions): Promise<Truthy<T>> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await condition();
    if (v) return v as Truthy<T>;
    if (Date.now() >= deadline) {
      const what = typeof opts.what === "function" ? opts.what() : opts.what;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await delay(Math.min(opts.intervalMs ?? 100, Math.max(1, deadline - Date.now())));
  }
}

/**
 * `waitFor` for the synchronous conditions of unit tests: polls `cond` every 2 ms until it holds;
 * throws naming `what` after `ms`.
 */
export async function until(cond: () => boolean, what: string, ms = 5_000): Promise<void> {
  await waitFor(cond, { what, timeoutMs: ms, intervalMs: 2 });
}

/** Waits until `proc` has exited (bounded); returns its exit code or signal. */
export async function exited(proc: ChildProcess, what: string, timeoutMs = 30_000): Promise<number | string> {
  const status = () => proc.exitCode ?? proc.signalCode;
  if (status() !== null) return status() as number | string;
  let timer: NodeJS.Timeout | undefined;
  try {
    return await new Promise<number | string>((resolve, reject) => {
      proc.once("exit", (code, signal) => resolve((code ?? signal) as number | string));
      timer = setTimeout(() => reject(new Error(`${what} did not exit within ${timeoutMs} ms`)), timeoutMs);
    });
  } finally {
    clearTimeout(timer);
  }
}

/** A scratch directory for a test (`/tmp/<prefix>XXXXXX`), removed when the test process exits. */
export const tempDir = scratchDir;

/** Removes a `tempDir` now. */
export const removeTempDir = removeScratchDir;
