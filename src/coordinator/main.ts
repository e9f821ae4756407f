/**
 * Entry point of the coordinator daemon (`rbdbackup coordinator --config coordinator.json`).
 * Prints one JSON line on stdout once serving: {"event":"serving","address":...}.
 * Exit codes: 0 stopped cleanly, 2 bad configuration, 1 anything else.
 */
import { setFlagsFromString } from "node:v8";
import { ConfigHelp } from "../common/config/load";
import { logger } from "../common/log";
import { startFailureExitCode } from "../common/start-failure";
import { parseCoordinatorConfig } from "./config";
import { Coordinator } from "./coordinator";

/**
 * V8 drops the bytecode of functions that have not run for a few major GCs, and their optimised code
 * with it. Most of a coordinator's code runs seldom (a backup's path once every few seconds at 1,000
 * backups/hour, a full pass a minute, a scrape every 15 s), so it was compiled again and again: the
 * compiler threads were ~10 % of the coordinator's CPU at that rate (`perf`, issue 13). Keeping the
 * bytecode costs a few MiB for the life of the process.
 */
export const V8_FLAGS = "--no-flush-bytecode";

export async function coordinatorMain(argv: string[]): Promise<number> {
  setFlagsFromString(V8_FLAGS);
  let cfg: ReturnType<typeof parseCoordinatorConfig>;
  try {
    cfg = parseCoordinatorConfig(argv);
  } catch (e) {
    if (e instanceof ConfigHelp) {
      process.stdout.write(e.message);
      return 0;
    }
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  const log = logger({ component: "coordinator" });
  const c = new Coordinator(cfg, log);
  // SIGHUP (systemctl reload) ends a process that has no handler for it, cleanly in systemd's eyes (no
  // restart): one from now to exit. While serving, the coordinator's own handler reads the files again.
  // While it starts, the files may have been read already (at the top of the start): the reload is
  // done once it serves — a revocation sent meanwhile is not lost. While draining there is nothing to do.
  let pendingReload = false;
  process.on("SIGHUP", () => {
    if (c.state === "starting") {
      pendingReload = true;
      log.info("SIGHUP while starting: the files are read again once serving");
    } else if (c.state !== "serving") log.info(`SIGHUP while ${c.state}: nothing to reload`);
  });
  try {
    await c.start();
  } catch (e) {
    const code = startFailureExitCode(e);
    const then = code === 1 ? " (something it needs is not there yet: systemd starts it again)" : "";
    process.stderr.write(`coordinator: cannot start: ${(e as Error).message}${then}\n`);
    await c.stop(0).catch(() => {});
    return code;
  }
  if (pendingReload) c.reloadFiles();
  process.stdout.write(
    `${JSON.stringify({ event: "serving", address: c.address, metricsAddress: c.metricsAddress, pid: process.pid })}\n`,
  );
  return new Promise<number>((resolve) => {
    let draining = false;
    const onSignal = (sig: string) => {
      if (draining) return;
      draining = true;
      log.info(`${sig}: draining`);
      c.stop().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.on("SIGTERM", () => onSignal("SIGTERM"));
    process.on("SIGINT", () => onSignal("SIGINT"));
  });
}

if (require.main === module) {
  coordinatorMain(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`coordinator: ${(e as Error).stack ?? e}\n`);
      process.exit(1);
    },
  );
}
