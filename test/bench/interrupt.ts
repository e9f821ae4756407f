/**
 * Cleanup that must run even when a benchmark is interrupted (Ctrl-C, SIGTERM): network namespaces,
 * injected Ceph delays, a lab of its own. `onInterrupt(f)` runs `f` once on SIGINT/SIGTERM, then exits
 * (130/143); the returned function unregisters it (call it from the `finally` that also runs `f`).
 * While that cleanup runs, the interrupted work usually fails (its daemons are gone): `interrupting()`
 * tells a top-level error handler not to exit before the cleanup has finished.
 */
let active = false;

export function interrupting(): boolean {
  return active;
}

export function onInterrupt(cleanup: () => Promise<void>): () => void {
  let running = false;
  const handler = (signal: NodeJS.Signals) => {
    if (running) return;
    running = true;
    active = true;
    process.stderr.write(`\n${signal}: cleaning up…\n`);
    cleanup()
      .catch((e) => process.stderr.write(`cleanup failed: ${(e as Error).message}\n`))
      .finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return () => {
    process.off("SIGINT", handler);
    process.off("SIGTERM", handler);
  };
}
