/**
 * The CLI's exit codes and the one mapping from failures (API statuses, job outcomes, local errors) to
 * them and to the line printed on stderr.
 */
import { ClientError, Status } from "nice-grpc-common";
import { JobState } from "../gen/rbdbackup/v1/backup_service";
import { madeUpIdempotencyKey, UsageError } from "./args";

export enum ExitCode {
  /** Success; for --wait and `job watch`: the job SUCCEEDED. */
  Ok = 0,
  /** The job ended FAILED (also: `cluster check` found a problem, or an unexpected failure of the CLI). */
  JobFailed = 1,
  /** Bad flags or arguments, or an unreadable local file named by them. */
  Usage = 2,
  /** The job ended CANCELLED. */
  JobCancelled = 3,
  /** The API answered NOT_FOUND. */
  NotFound = 4,
  /** UNAUTHENTICATED or PERMISSION_DENIED. */
  Auth = 5,
  /** UNAVAILABLE or DEADLINE_EXCEEDED: the coordinator is unreachable or too slow; retryable. */
  Unavailable = 6,
  /** Any other API error (INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, ...). */
  ApiError = 7,
  /** Interrupted by Ctrl-C while watching (the job itself goes on). */
  Interrupted = 130,
}

/** The exit code an API error status deserves. */
export function exitCodeForStatus(status: Status): ExitCode {
  switch (status) {
    case Status.OK:
      return ExitCode.Ok;
    case Status.NOT_FOUND:
      return ExitCode.NotFound;
    case Status.UNAUTHENTICATED:
    case Status.PERMISSION_DENIED:
      return ExitCode.Auth;
    case Status.UNAVAILABLE:
    case Status.DEADLINE_EXCEEDED:
      return ExitCode.Unavailable;
    default:
      return ExitCode.ApiError;
  }
}

/** The exit code of a watched job that reached `state`; undefined while it is not final. */
export function exitCodeForJobState(state: JobState): ExitCode | undefined {
  switch (state) {
    case JobState.JOB_STATE_SUCCEEDED:
      return ExitCode.Ok;
    case JobState.JOB_STATE_FAILED:
      return ExitCode.JobFailed;
    case JobState.JOB_STATE_CANCELLED:
      return ExitCode.JobCancelled;
    default:
      return undefined;
  }
}

/** "NOT_FOUND" for Status.NOT_FOUND; the number for a code this version does not know. */
export function statusName(status: Status): string {
  return Status[status] ?? String(status);
}

/**
 * A call that got no answer in time (our own --timeout, which nice-grpc reports as an AbortError):
 * reported like the server's DEADLINE_EXCEEDED.
 */
export class DeadlineError extends Error {
  override readonly name = "DeadlineError";
}

/** A failure the CLI reports as is (message already worded for the user) with a chosen exit code. */
export class CliFailure extends Error {
  override readonly name = "CliFailure";
  constructor(
    readonly exitCode: ExitCode,
    message: string,
  ) {
    super(message);
  }
}

export interface ErrorReport {
  exitCode: ExitCode;
  /** The line for stderr, without the trailing newline. */
  message: string;
}

/** How a failure is reported: `rbdbackup: <STATUS_NAME>: <details>` for API errors. */
/** After a lost answer to a mutating call: how to ask again without queuing a second job. */
function askAgainHint(): string {
  const key = madeUpIdempotencyKey();
  return key
    ? `\nrbdbackup: the request may have been acted on: run it again with --idempotency-key ${key} to get its job, not a second one`
    : "";
}

export function reportError(e: unknown): ErrorReport {
  if (e instanceof UsageError) return { exitCode: ExitCode.Usage, message: `rbdbackup: ${e.message}` };
  if (e instanceof CliFailure) return { exitCode: e.exitCode, message: `rbdbackup: ${e.message}` };
  if (e instanceof DeadlineError) {
    return {
      exitCode: ExitCode.Unavailable,
      message: `rbdbackup: DEADLINE_EXCEEDED: ${e.message}${askAgainHint()}`,
    };
  }
  if (e instanceof ClientError) {
    const details = e.details || "(no details)";
    const code = exitCodeForStatus(e.code);
    // The client's own words for a coordinator it never reached (grpc-js: "No connection established…",
    // "Name resolution failed…", ending in an empty "Resolution note:"; leader-follower.ts: "cannot connect
    // to the coordinator at …") — at the start of the details: a server's own error can name a refused
    // connection of its own (its database), which says nothing of whether the call was acted on.
    const unreached = /^(No connection established|Name resolution failed|cannot connect to the coordinator at )/.test(
      details,
    );
    const where = unreached
      ? "\nrbdbackup: no coordinator answered: check the address (--coordinator, or RBDBACKUP_COORDINATOR) and that it runs"
      : "";
    const hint = code === ExitCode.Unavailable && !unreached ? askAgainHint() : "";
    return { exitCode: code, message: `rbdbackup: ${statusName(e.code)}: ${details}${where}${hint}` };
  }
  const err = e as Error | undefined;
  return { exitCode: ExitCode.JobFailed, message: `rbdbackup: ${err?.stack ?? String(e)}` };
}
