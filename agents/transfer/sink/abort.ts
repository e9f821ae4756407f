/**
 * One abort for a whole transfer: the caller went away (the source cancelled, or its stream broke) or
 * the pool filled up. Waits that must end with it race their promise against the signal, and reject
 * with its reason (a status the caller can act on, not a generic AbortError).
 */
import { cancelled } from "../../../src/common/errors";

/** Rejects with `signal.reason` when `signal` aborts; otherwise settles like `p` (src/common/retry.ts). */
export { abortable } from "../../../src/common/retry";

/** The transfer's own abort, fired by the call's signal (as CANCELLED); `unlink()` when done. */
export function transferAbort(callSignal?: AbortSignal): { ac: AbortController; unlink(): void } {
  const ac = new AbortController();
  const onCallAbort = () => ac.abort(cancelled("the source cancelled the transfer"));
  callSignal?.addEventListener("abort", onCallAbort, { once: true });
  if (callSignal?.aborted) onCallAbort();
  return { ac, unlink: () => callSignal?.removeEventListener("abort", onCallAbort) };
}
