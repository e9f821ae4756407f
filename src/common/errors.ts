/**
 * One place that turns failures into gRPC statuses. Code throws AppError (a status + a message a
 * person can act on); a library's own errors map through a registered ErrorMapping (agents/ceph maps
 * librados/librbd failures by errno); anything else is INTERNAL with a generic message (details go to
 * the log, not to the caller). Imports nothing of agents/: shared code depends on nothing above it.
 */
import { ServerError, Status } from "nice-grpc-common";

export { Status };

export class AppError extends Error {
  override readonly name = "AppError";
  constructor(
    readonly status: Status,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export const invalidArgument = (m: string) => new AppError(Status.INVALID_ARGUMENT, m);
export const notFound = (m: string) => new AppError(Status.NOT_FOUND, m);
export const alreadyExists = (m: string) => new AppError(Status.ALREADY_EXISTS, m);
export const failedPrecondition = (m: string) => new AppError(Status.FAILED_PRECONDITION, m);
export const resourceExhausted = (m: string) => new AppError(Status.RESOURCE_EXHAUSTED, m);
export const unavailable = (m: string) => new AppError(Status.UNAVAILABLE, m);
export const dataLoss = (m: string) => new AppError(Status.DATA_LOSS, m);
export const cancelled = (m: string) => new AppError(Status.CANCELLED, m);
export const aborted = (m: string) => new AppError(Status.ABORTED, m);

/** How a kind of failure that is not ours (a library's error) becomes a status and a message. */
export type ErrorMapping = (e: unknown) => { status: Status; message: string } | undefined;

const mappings: ErrorMapping[] = [];

/**
 * Adds a mapping for errors of a layer this module must not import: agents/ceph registers how
 * librados/librbd failures (errno) map to statuses, so this module — and every process that never
 * loads Ceph — stays free of it.
 */
export function registerErrorMapping(m: ErrorMapping): void {
  if (!mappings.includes(m)) mappings.push(m);
}

function mapped(e: unknown): { status: Status; message: string } | undefined {
  for (const m of mappings) {
    const r = m(e);
    if (r) return r;
  }
  return undefined;
}

/** The gRPC status a failure deserves. */
export function statusOf(e: unknown): Status {
  if (e instanceof AppError) return e.status;
  if (e instanceof ServerError) return e.code;
  const m = mapped(e);
  if (m) return m.status;
  if (isAbortError(e)) return Status.CANCELLED;
  if (isTimeoutError(e)) return Status.DEADLINE_EXCEEDED;
  const code = (e as { code?: unknown })?.code;
  if (typeof code === "number" && code >= 0 && code <= 16 && (e as { details?: unknown }).details !== undefined) {
    return code as Status; // a nice-grpc ClientError from a peer
  }
  return Status.INTERNAL;
}

/** A message for the caller: ours as is, Ceph's with a hint, anything unexpected generic. */
export function messageOf(e: unknown): string {
  if (e instanceof AppError || e instanceof ServerError) return e instanceof ServerError ? e.details : e.message;
  const m = mapped(e);
  if (m) return m.message;
  if (isAbortError(e)) return "the operation was cancelled";
  if (isTimeoutError(e)) return "the operation timed out";
  const details = (e as { details?: unknown })?.details;
  if (typeof details === "string") return details;
  return "internal error (see the server's log)";
}

/** Converts any failure into an AppError with the right status (keeps the original as cause). */
export function toAppError(e: unknown, context?: string): AppError {
  if (e instanceof AppError && !context) return e;
  const msg = messageOf(e);
  return new AppError(statusOf(e), context ? `${context}: ${msg}` : msg, { cause: e });
}

/**
 * For nice-grpc handlers: a ServerError the framework sends as is. The original stays as its `cause`
 * (not sent; a typed reason on it — agents/transfer/protocol.ts reasonOf — is still found).
 */
export function toServerError(e: unknown): ServerError {
  if (e instanceof ServerError) return e;
  return Object.assign(new ServerError(statusOf(e), messageOf(e)), { cause: e });
}

export function isAbortError(e: unknown): boolean {
  return (e as { name?: string })?.name === "AbortError";
}

/** AbortSignal.timeout()'s reason (a DOMException named TimeoutError), which calls reject with. */
export function isTimeoutError(e: unknown): boolean {
  return (e as { name?: string })?.name === "TimeoutError";
}

/** Collects cleanup failures so none is swallowed: the operation's error names them too. */
export function withCleanupErrors(primary: unknown, cleanupErrors: unknown[]): unknown {
  if (cleanupErrors.length === 0) return primary;
  const base = toAppError(primary);
  const extra = cleanupErrors.map((c) => messageOf(c)).join("; ");
  return new AppError(base.status, `${base.message}; cleanup also failed: ${extra}`, { cause: primary });
}
