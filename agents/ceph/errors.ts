/**
 * Errors from librados/librbd as JS errors with a stable `code` (errno name), `errno` and the failed
 * operation, thrown with the caller's stack (captured before the call went native). A C++ exception
 * inside the addon arrives as NativeError (or, for an allocation failure, as CephError ENOMEM).
 */
import { constants } from "node:os";

const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(constants.errno)) {
  if (!errnoNames.has(num)) errnoNames.set(num, name);
}
// Ceph reuses ESHUTDOWN for "this client was blocklisted".
errnoNames.set(108, "EBLOCKLISTED");
// Ceph's own errno for a pool/op that hit a quota or full flag is EDQUOT / ENOSPC (standard names).

/** Name of a positive errno, e.g. 2 -> "ENOENT". */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `ERRNO_${errno}`;
}

export class CephError extends Error {
  override readonly name = "CephError";
  /** errno name: ENOENT, EEXIST, EBUSY, ENOSPC, ETIMEDOUT, EBLOCKLISTED, ECANCELED... */
  readonly code: string;
  /** Positive errno. */
  readonly errno: number;
  /** The librados/librbd call that failed, e.g. "rbd_open". */
  readonly op: string;
  /** What the caller was doing, e.g. "open image rbd/vol1". */
  readonly target: string;

  constructor(errno: number, op: string, target: string, detail: string) {
    super(`${target}: ${op} failed: ${detail} (${errnoName(errno)})`);
    this.code = errnoName(errno);
    this.errno = errno;
    this.op = op;
    this.target = target;
  }
}

/** Use of a handle after close(). */
export class ClosedError extends Error {
  override readonly name = "ClosedError";
  readonly code = "ERR_RBDBACKUP_CLOSED";
}

/**
 * A C++ exception caught at the addon's boundary (agents/native/src/boundary.h), e.g. no thread could be
 * started for a diff: a bug or an exhausted resource in this process, not a Ceph error.
 */
export class NativeError extends Error {
  override readonly name = "NativeError";
  readonly code = "ERR_RBDBACKUP_NATIVE";
  /** Where it happened, e.g. "rbd_diff_iterate2 (starting the diff thread)". */
  readonly op: string;
  /** The errno a std::system_error carried, if any. */
  readonly errno: number | undefined;

  constructor(message: string, op: string, errno: number | undefined) {
    super(message);
    this.op = op;
    this.errno = errno;
  }
}

interface RawNativeError {
  errno?: number;
  op?: string;
  code?: string;
  message?: string;
}

/**
 * Runs a native call and rewrites its failure: errno-bearing errors become CephError with the stack of
 * the line that called us; a closed-handle error becomes ClosedError.
 */
export async function nativeCall<T>(target: string, fn: () => Promise<T>): Promise<T> {
  const where: { stack?: string } = {};
  Error.captureStackTrace(where, nativeCall);
  try {
    return await fn();
  } catch (e) {
    throw rewrite(e, target, where.stack);
  }
}

/**
 * nativeCall for the per-chunk I/O path (reads, writes, zeroes, discards, flushes: hundreds of calls in
 * a small incremental): no stack is captured up front — `Error.captureStackTrace` on every call was
 * ~5 % of an agent's main thread in an incremental of 64 KiB extents (`perf`) — and the target is
 * named only on failure. The error keeps its message, op and errno; its stack is the completion's.
 */
export async function nativeIo<T>(target: () => string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw rewrite(e, target(), undefined);
  }
}

/** Same for synchronous native calls (which throw on a closed handle or bad arguments). */
export function nativeCallSync<T>(target: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw rewrite(e, target, undefined);
  }
}

function rewrite(e: unknown, target: string, stack: string | undefined): unknown {
  const raw = e as RawNativeError;
  let out: Error;
  if (raw && raw.code === "ERR_RBDBACKUP_NATIVE") {
    const errno = typeof raw.errno === "number" ? raw.errno : undefined;
    const detail = errno === undefined ? "" : ` (${errnoName(errno)})`;
    out = new NativeError(`${target}: ${String(raw.message ?? "")}${detail}`, String(raw.op ?? ""), errno);
  } else if (raw && typeof raw.errno === "number" && typeof raw.op === "string") {
    const msg = String(raw.message ?? "");
    const detail = msg.startsWith(`${raw.op}: `) ? msg.slice(raw.op.length + 2) : msg;
    out = new CephError(raw.errno, raw.op, target, detail);
  } else if (raw && raw.code === "ERR_RBDBACKUP_CLOSED") {
    out = new ClosedError(`${target}: ${raw.message}`);
  } else {
    return e;
  }
  if (stack) out.stack = `${out.name}: ${out.message}\n${stack.split("\n").slice(1).join("\n")}`;
  return out;
}

/** True when `e` is a CephError with one of the given codes. */
export function isCephError(e: unknown, ...codes: string[]): e is CephError {
  return e instanceof CephError && (codes.length === 0 || codes.includes(e.code));
}
