/**
 * The one error-to-status middleware of the BackupService: whatever a handler throws leaves as a gRPC
 * status with a message a person can act on (src/common/errors.ts decides which); an unexpected failure
 * (INTERNAL, UNKNOWN) leaves with a generic message, and its details — stack, cause — go to the log only.
 * Works for unary and server-streaming methods alike (WatchJob fails mid-stream the same way). A request
 * message the service could not decode (undecodable.ts) is INVALID_ARGUMENT here, before anything reads it.
 *
 * The catalog's disk is the coordinator's own business, so its failures are named here: a full disk
 * (SQLITE_FULL, ENOSPC) is RESOURCE_EXHAUSTED and an I/O error (SQLITE_IOERR*) UNAVAILABLE, each with
 * the directory to look at — not INTERNAL.
 */
import { type CallContext, type ServerMiddlewareCall, Status } from "nice-grpc-common";
import { AppError, statusOf, toServerError } from "../../common/errors";
import type { Logger } from "../../common/log";
import { refusingUndecodable, undecodable } from "./undecodable";

/** The error codes of `e` and its causes (better-sqlite3's SqliteError.code, Node's errno codes). */
function codesOf(e: unknown): string[] {
  const out: string[] = [];
  for (let c = e, i = 0; c && i < 6; c = (c as { cause?: unknown }).cause, i++) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === "string") out.push(code);
  }
  return out;
}

/** A catalog storage failure as a status an operator can act on; undefined for anything else. */
export function catalogDiskError(e: unknown, catalogDir: string): AppError | undefined {
  const codes = codesOf(e);
  if (codes.some((c) => c === "SQLITE_FULL" || c === "ENOSPC"))
    return new AppError(
      Status.RESOURCE_EXHAUSTED,
      `the catalog's disk is full: free space under ${catalogDir}, then retry (nothing was changed)`,
      { cause: e },
    );
  const io = codes.find((c) => c.startsWith("SQLITE_IOERR") || c === "EIO");
  if (io)
    return new AppError(
      Status.UNAVAILABLE,
      `the catalog's disk failed (${io}): check the disk under ${catalogDir} and the coordinator's log, then retry`,
      { cause: e },
    );
  return undefined;
}

export function errorStatus(log: Logger, catalogDir = "the catalog's directory") {
  return async function* errorStatusMiddleware<Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) {
    try {
      // A request the service's decoder could not read (withDecodeFailures): INVALID_ARGUMENT, unread.
      if (!call.method.requestStream) {
        const refused = undecodable(call.request);
        if (refused) throw refused;
        return yield* call.next(call.request, context);
      }
      return yield* call.next(refusingUndecodable(call.request as AsyncIterable<unknown>) as Req, context);
    } catch (err) {
      const disk = catalogDiskError(err, catalogDir);
      if (disk) {
        log.error(`${call.method.path} failed: the catalog's storage`, { err });
        throw toServerError(disk);
      }
      const status = statusOf(err);
      if (status === Status.INTERNAL || status === Status.UNKNOWN) log.error(`${call.method.path} failed`, { err });
      throw toServerError(err);
    }
  };
}
