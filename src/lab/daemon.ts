/**
 * Starting a daemon of ours (agent, coordinator) as a child process for the lab: waits (bounded) for
 * its {"event":"serving",...} line on stdout. Attached: its output is piped to us and it dies with us.
 * Detached (`logFile`): stdout and stderr go to that file and it outlives us (the demo leaves its
 * daemons running; `deploy/lab/lab.sh down` stops them). An attached daemon still running when we exit
 * is killed then (src/lab/scratch.ts), even if the caller never stopped it; its output is written out
 * if the test process fails (src/lab/failure-logs.ts).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, statSync } from "node:fs";
import { keepLogsOnFailure } from "./failure-logs";
import { killAtExit } from "./scratch";

export interface Daemon<S> {
  proc: ChildProcess;
  serving: S;
  logs(): string;
  /** Sends the signal and waits for the exit; SIGKILL after 30 s without one (then waits 10 s more). */
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
    killAtExit(proc);
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
    keepLogsOnFailure(name, proc.pid, () => `${out}${err}`);
  }
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const running = () => proc.exitCode === null && proc.signalCode === null;
  /** Whether it exited within `ms`. */
  const exitedWithin = async (ms: number) => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((r) => {
      timer = setTimeout(() => r(false), ms);
    });
    const ok = await Promise.race([exited.then(() => true), timeout]);
    clearTimeout(timer);
    return ok;
  };
  const serving = await new Promise<S>((resolve, reject) => {
    const deadline = Date.now() + timeoutMs;
    const poll = setInterval(() => {
      const line = output()
        .split("\n")
        .find((l) => l.includes('"event":"serving"'));
      if (line) {
        clearInterval(poll);
        resolve(JSON.parse(line) as S);
      } else if (!running()) {
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
      if (!running()) return;
      proc.kill(signal);
      if (await exitedWithin(30_000)) return;
      proc.kill("SIGKILL");
      if (!(await exitedWithin(10_000))) throw new Error(`${name} (pid ${proc.pid}) did not exit after SIGKILL`);
    },
  };
}
