/**
 * The one error-to-status middleware of the BackupService: whatever a handler throws leaves as a gRPC
 * status with a message a person can act on (src/common/errors.ts decides which); an unexpected failure
 * (INTERNAL, UNKNOWN) leaves with a generic message, and its details — stack, cause — go to the log only.
 * Works for unary and server-streaming methods alike (WatchJob fails mid-stream the same way).
 */
import { type CallContext, type ServerMiddlewareCall, Status } from "nice-grpc-common";
import { statusOf, toServerError } from "../../common/errors";
import type { Logger } from "../../common/log";

export function errorStatus(log: Logger) {
  return async function* errorStatusMiddleware<Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) {
    try {
      return yield* call.next(call.request, context);
    } catch (err) {
      const status = statusOf(err);
      if (status === Status.INTERNAL || status === Status.UNKNOWN) log.error(`${call.method.path} failed`, { err });
      throw toServerError(err);
    }
  };
}
