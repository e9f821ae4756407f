/**
 * Signals joined for one call, without leaving anything on the sources once the call is over.
 *
 * `AbortSignal.any` would do, except that Node 20 keeps each signal it makes in a set on every source
 * until that source aborts (nodejs/node#55351): joined with a long-lived signal (a leadership term, an
 * agent's life) once per call, it grows by ~65 bytes a call for as long as that signal lives, and its
 * abort then walks them all at once. `linkSignals` hooks one listener on each source and unhooks them in
 * `dispose` (call it in a `finally`).
 */
export interface LinkedSignal {
  /** Aborted when the first of the sources aborts, with that source's reason. */
  readonly signal: AbortSignal;
  /** Unhooks the sources (idempotent); the signal stays as it is. */
  dispose(): void;
}

export function linkSignals(...sources: AbortSignal[]): LinkedSignal {
  const ac = new AbortController();
  const hooked: [AbortSignal, () => void][] = [];
  const dispose = () => {
    for (const [s, f] of hooked.splice(0)) s.removeEventListener("abort", f);
  };
  for (const s of sources) {
    if (s.aborted) {
      ac.abort(s.reason);
      break;
    }
    const f = () => {
      ac.abort(s.reason);
      dispose();
    };
    s.addEventListener("abort", f, { once: true });
    hooked.push([s, f]);
  }
  if (ac.signal.aborted) dispose();
  return { signal: ac.signal, dispose };
}
