/**
 * The exit code of a daemon that could not start. 2 means "fix the configuration or the prerequisites
 * first": the systemd units do not restart on it (RestartPreventExitStatus=2). 1 means "something it
 * needs is not there yet": a catalog database or Ceph monitors still booting, a port the previous
 * process still holds — systemd restarts the daemon (with its backoff) until it is. A boot where the
 * database came up a minute late must not leave an HA coordinator or an agent down for good.
 */
import { AppError, Status } from "./errors";

/** A start failure that a later attempt may not meet (the cause is outside this host's configuration). */
export class TransientStartError extends Error {
  override readonly name = "TransientStartError";
}

const TRANSIENT_CODES = new Set(["EADDRINUSE", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "EAI_AGAIN"]);

/** 1 (restartable) for a cause outside the configuration, 2 for everything else. */
export function startFailureExitCode(e: unknown): 1 | 2 {
  if (e instanceof TransientStartError) return 1;
  if (e instanceof AppError && (e.status === Status.UNAVAILABLE || e.status === Status.DEADLINE_EXCEEDED)) return 1;
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" && TRANSIENT_CODES.has(code) ? 1 : 2;
}
