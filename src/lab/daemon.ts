/**
 * Starting a daemon of ours (agent, coordinator) as a child process for the lab: waits (bounded) for
 * its {"event":"serving",...} line on stdout. Attached: its output is piped to us and it dies with us.
 * Detached (`logFile`): stdout and stderr go to that file and it outlives us (the demo leaves its
 * daemons running; `deploy/lab/lab.sh down` stops them).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, statSync } from "node:fs";

export interface Daemon<S> {
  proc: ChildProcess;
  serving: S;
  logs(): string;
  /** Sends the signal and waits for the exit (bounded). */
  stop(signal: NodeJS.Signals): Promise<void>;
}

export async function startDaemon<S>(
  name: string,
  args: string[],
  opts: { env?: Record<string, string>; verbose?: boolean; logFile?: string; timeoutMs?: number },
): Promise<Daemon<S>> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const env = { ...process.env, ...(opts.env ?? {}) };
  let proc: ChildProcess;
  let logs: () => string;
  let output: () => string;
  if (opts.logFile) {
    // Appended to: only what this run writes counts (an earlier run's "serving" line must not).
    const offset = existsSync(opts.logFile) ? statSync(opts.logFile).size : 0;
    const fd = openSync(opts.logFile, "a");
    proc = spawn(process.execPath, args, { stdio: ["ignore", fd, fd], env, detached: true });
    closeSync(fd);
    proc.unref();
    const file = opts.logFile;
    logs = () => readFileSync(file).subarray(offset).toString("utf8");
    output = logs;
  } else {
    proc = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env });
    let out = "";
    let err = "";
    proc.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    proc.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
      if (opts.verbose) process.stderr.write(d);
    });
    logs = () => err;
    output = () => out;
  }
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const serving = await new Promise<S>((resolve, reject) => {
    const deadline = Date.now() + timeoutMs;
    const poll = setInterval(() => {
      const line = output()
        .split("\n")
        .find((l) => l.includes('"event":"serving"'));
      if (line) {
        clearInterval(poll);
        resolve(JSON.parse(line) as S);
      } else if (proc.exitCode !== null || proc.signalCode !== null) {
        clearInterval(poll);
        reject(new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}) before serving:\n${logs()}`));
      } else if (Date.now() > deadline) {
        clearInterval(poll);
        proc.kill("SIGKILL");
        reject(new Error(`${name} did not start within ${timeoutMs / 1000} s:\n${logs()}`));
      }
    }, 50);
  });
  return {
    proc,
    serving,
    logs,
    async stop(signal) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      // Bounded, and the timer must not outlive the wait (it would keep the caller's process alive).
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 30_000)))]);
      clearTimeout(timer);
    },
  };
}
