/**
 * How librados/librbd failures become gRPC statuses: by errno, with a hint a person can act on. It
 * lives with the binding (not in src/common, which must never load Ceph) and registers itself with
 * the one error-to-status mapping when the binding is imported.
 */
import { registerErrorMapping, Status } from "../../src/common/errors";
import { CephError, ClosedError } from "./errors";

const cephStatus: Record<string, Status> = {
  ENOENT: Status.NOT_FOUND,
  EEXIST: Status.ALREADY_EXISTS,
  ENOSPC: Status.RESOURCE_EXHAUSTED,
  EDQUOT: Status.RESOURCE_EXHAUSTED,
  ETIMEDOUT: Status.UNAVAILABLE,
  EBLOCKLISTED: Status.UNAVAILABLE,
  ECONNREFUSED: Status.UNAVAILABLE,
  ENOTCONN: Status.UNAVAILABLE,
  EBUSY: Status.FAILED_PRECONDITION,
  ENOTEMPTY: Status.FAILED_PRECONDITION,
  EROFS: Status.FAILED_PRECONDITION,
  EACCES: Status.PERMISSION_DENIED,
  EPERM: Status.PERMISSION_DENIED,
  ECANCELED: Status.CANCELLED,
  EINVAL: Status.INVALID_ARGUMENT,
  ERANGE: Status.OUT_OF_RANGE,
};

const cephHints: Record<string, string> = {
  ENOSPC: " (the pool or cluster is full)",
  EDQUOT: " (the pool's quota is reached)",
  ETIMEDOUT: " (the cluster did not answer in time: monitors or OSDs down, or the pool full)",
  EBLOCKLISTED: " (this client was blocklisted by the cluster)",
  EACCES: " (check the Ceph user's caps and keyring)",
  EPERM: " (check the Ceph user's caps and keyring)",
};

/** The status and message of a Ceph failure; undefined for anything else. */
export function cephErrorStatus(e: unknown): { status: Status; message: string } | undefined {
  if (e instanceof CephError) {
    return { status: cephStatus[e.code] ?? Status.INTERNAL, message: `${e.message}${cephHints[e.code] ?? ""}` };
  }
  if (e instanceof ClosedError) return { status: Status.CANCELLED, message: "the operation was cancelled" };
  return undefined;
}

registerErrorMapping(cephErrorStatus);
