/**
 * Progress of a watched job: a one-line live bar redrawn with \r on a terminal, one line per state or
 * phase change otherwise, or one JSON line per JobEvent (--json). The line rendering is pure.
 */
import { type Job, JobEvent, JobState } from "../gen/rbdbackup/v1/backup_service";
import { formatBytes, formatPercent, formatRate, formatTime, isFinal, jobStateName } from "./format";

/** "[#####-----]" with `width` cells inside the brackets. */
export function progressBar(fraction: number, width: number): string {
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const full = Math.floor(f * width);
  return `[${"#".repeat(full)}${"-".repeat(width - full)}]`;
}

const BAR_WIDTH = 24;

/** Cuts a line to fit `columns` (one column kept free so the terminal never wraps). */
function fit(line: string, columns: number): string {
  const max = Math.max(10, columns - 1);
  return line.length <= max ? line : `${line.slice(0, max - 1)}…`;
}

/** The live line for a job, at most `columns - 1` characters long. */
export function progressLine(job: Job, columns = 80): string {
  const parts: string[] = [];
  const cancelling = job.cancelRequested && !isFinal(job.state) ? " (cancelling)" : "";
  if (job.state === JobState.JOB_STATE_QUEUED) {
    parts.push(`queued${cancelling}`);
    if (job.waitingReason) parts.push(job.waitingReason);
    if (job.attempts > 0 && job.maxAttempts > 0) parts.push(`attempt ${job.attempts + 1}/${job.maxAttempts}`);
    if (job.nextAttemptAt) parts.push(`retry at ${formatTime(job.nextAttemptAt)}`);
    return fit(parts.join("  "), columns);
  }
  if (job.state !== JobState.JOB_STATE_RUNNING) return fit(jobStateName(job.state), columns);
  const p = job.progress;
  parts.push((p?.phase || "running") + cancelling);
  if (p && p.bytesTotal > 0) {
    parts.push(
      `${progressBar(p.bytesDone / p.bytesTotal, BAR_WIDTH)} ${formatPercent(p.bytesDone, p.bytesTotal).padStart(6)}`,
      `${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}`,
    );
  }
  if (p && p.bytesTransferred > 0) parts.push(`sent ${formatBytes(p.bytesTransferred)}`);
  if (p && p.rateBytesPerSecond > 0) parts.push(formatRate(p.rateBytesPerSecond));
  return fit(parts.join("  "), columns);
}

/** The line printed (off a terminal) when a job's state or phase changes. */
export function changeLine(job: Job, now: Date): string {
  const parts = [now.toISOString(), `job ${job.id}`, jobStateName(job.state)];
  const p = job.progress;
  if (job.state === JobState.JOB_STATE_RUNNING && p) {
    if (p.phase) parts.push(p.phase);
    if (p.bytesTotal > 0) parts.push(formatPercent(p.bytesDone, p.bytesTotal));
  }
  if (job.state === JobState.JOB_STATE_QUEUED && job.waitingReason) parts.push(`(${job.waitingReason})`);
  if (job.errorCode && (job.state === JobState.JOB_STATE_FAILED || job.state === JobState.JOB_STATE_QUEUED)) {
    parts.push(`${job.errorCode}: ${job.errorMessage}`);
  }
  return parts.join(" ");
}

export type ProgressMode = "tty" | "lines" | "json";

export interface ProgressOutput {
  /** Where the bar and the change lines go (stderr). */
  err: { write(s: string): unknown; columns?: number };
  /** Where JSON lines go (stdout). */
  out: { write(s: string): unknown };
}

/** Shows each job event the way the mode asks. */
export class ProgressReporter {
  private lastKey: string | undefined;
  private drawn = false;

  constructor(
    private readonly mode: ProgressMode,
    private readonly io: ProgressOutput,
    private readonly now: () => Date = () => new Date(),
  ) {}

  update(job: Job): void {
    switch (this.mode) {
      case "json":
        this.io.out.write(`${JSON.stringify(JobEvent.toJSON({ job }))}\n`);
        return;
      case "tty":
        this.io.err.write(`\r\x1b[K${progressLine(job, this.io.err.columns || 80)}`);
        this.drawn = true;
        return;
      case "lines": {
        const key = `${job.state}/${job.state === JobState.JOB_STATE_RUNNING ? (job.progress?.phase ?? "") : ""}`;
        if (key === this.lastKey) return;
        this.lastKey = key;
        this.io.err.write(`${changeLine(job, this.now())}\n`);
        return;
      }
    }
  }

  /** Erases the live line (before the final summary or an error message). */
  clear(): void {
    if (this.drawn) this.io.err.write("\r\x1b[K");
    this.drawn = false;
  }
}
