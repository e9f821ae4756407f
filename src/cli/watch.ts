/**
 * Following a job to its end (`job watch`, and --wait on the mutating verbs): WatchJob without a
 * deadline, progress as progress.ts shows it, reconnection when the coordinator goes away for a
 * moment, Ctrl-C to stop watching (the job goes on), and the exit code of the job's final state.
 */
import { ClientError, Status } from "nice-grpc-common";
import { backoffDelay, delay } from "../common/retry";
import { Job } from "../gen/rbdbackup/v1/backup_service";
import type { Connection } from "./connection";
import { CliFailure, ExitCode, exitCodeForJobState } from "./exit-codes";
import { isFinal, jobBlock, jobSummary } from "./format";
import { note, print, printJson } from "./output";
import { type ProgressMode, ProgressReporter } from "./progress";

/** Consecutive failed attempts (no event received) before giving up on an unreachable coordinator. */
const MAX_RECONNECTS = 5;
/** Wait before watching again after the n-th consecutive failure: 1 s, 2 s, 4 s, … (at most 16 s). */
const RECONNECT_BACKOFF = { baseMs: 1000, maxMs: 16_000 };

function retryable(e: unknown): boolean {
  return e instanceof ClientError && e.code === Status.UNAVAILABLE;
}

/**
 * Watches job `jobId` until it ends; returns the exit code of its final state (0 SUCCEEDED, 1 FAILED,
 * 3 CANCELLED) or 130 when interrupted. `initial`: a job already in hand (the answer of the call that
 * queued it), shown first.
 */
export async function watchJob(
  conn: Connection,
  jobId: string,
  opts: { json: boolean; initial?: Job | undefined },
): Promise<number> {
  const mode: ProgressMode = opts.json ? "json" : process.stderr.isTTY ? "tty" : "lines";
  const reporter = new ProgressReporter(mode, { err: process.stderr, out: process.stdout });
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once("SIGINT", onSigint);
  let last: Job | undefined = opts.initial;
  try {
    if (opts.initial) reporter.update(opts.initial);
    let failures = 0;
    while (!(last && isFinal(last.state))) {
      try {
        for await (const ev of conn.client.watchJob({ jobId }, { signal: abort.signal })) {
          if (!ev.job) continue;
          failures = 0;
          last = ev.job;
          reporter.update(ev.job);
          if (isFinal(ev.job.state)) break;
        }
        if (last && isFinal(last.state)) break;
        // The stream ended before the job did (the coordinator is shutting down, say): watch again.
        failures++;
        if (failures > MAX_RECONNECTS) {
          throw new CliFailure(
            ExitCode.Unavailable,
            `UNAVAILABLE: the watch of job ${jobId} kept ending before the job finished`,
          );
        }
      } catch (e) {
        if (abort.signal.aborted) break;
        if (!retryable(e) || ++failures > MAX_RECONNECTS) throw e;
        reporter.clear();
        process.stderr.write(`rbdbackup: ${(e as ClientError).details || "connection lost"}; watching again\n`);
      }
      // Ctrl-C ends the wait at once (delay rejects); the loop then stops watching.
      await delay(backoffDelay(failures, RECONNECT_BACKOFF), abort.signal).catch(() => {});
      if (abort.signal.aborted) break;
    }
  } finally {
    process.removeListener("SIGINT", onSigint);
    reporter.clear();
  }
  if (abort.signal.aborted && !(last && isFinal(last.state))) {
    process.stderr.write(
      `rbdbackup: interrupted; job ${jobId} goes on (follow it: rbdbackup job watch ${jobId}; stop it: rbdbackup job cancel ${jobId})\n`,
    );
    return ExitCode.Interrupted;
  }
  const final = last as Job;
  if (mode !== "json") print(jobSummary(final));
  return exitCodeForJobState(final.state) ?? ExitCode.JobFailed;
}

/**
 * After a call queued a job (create, restore, delete): with --wait, follows it and returns the exit
 * code of its end; otherwise shows it and returns 0.
 */
export async function afterQueued(conn: Connection, job: Job, opts: { wait: boolean; json: boolean }): Promise<number> {
  if (opts.wait) {
    if (!opts.json) print(jobBlock(job));
    return watchJob(conn, job.id, { json: opts.json, initial: job });
  }
  if (opts.json) {
    printJson(Job.toJSON(job));
  } else {
    print(jobBlock(job));
    note(`follow it: rbdbackup job watch ${job.id}`);
  }
  return ExitCode.Ok;
}
