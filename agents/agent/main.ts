/**
 * Entry point of the agent daemon (`rbdbackup agent --config agent.json`, or this file directly).
 * Prints one JSON line on stdout once serving:
 * {"event":"serving","address":...,"transferAddress":...,"metricsAddress":...,"fsid":...}
 * (address: AgentService and health; transferAddress: the data plane, TransferService).
 * Exit codes: 0 stopped cleanly, 2 bad configuration or failed prerequisites, 1 anything else.
 */
import { ConfigHelp } from "../../src/common/config/load";
import { logger } from "../../src/common/log";
import { startFailureExitCode } from "../../src/common/start-failure";
import { Agent, StartupError } from "./agent";
import { parseAgentConfig } from "./config";

export async function agentMain(argv: string[]): Promise<number> {
  let cfg: ReturnType<typeof parseAgentConfig>;
  try {
    cfg = parseAgentConfig(argv);
  } catch (e) {
    if (e instanceof ConfigHelp) {
      process.stdout.write(e.message);
      return 0;
    }
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  // libuv's pool runs every blocking librados/librbd call: a flatten, a rollback or the removal of a large
  // image holds a thread for minutes — up to maxConcurrentJobs of them for leased jobs, and as many as
  // maxConcurrentTransfers undoing incoming transfers — and with Node's default of 4 threads they would
  // stall everything else that needs one (opens, stats, snapshots, the data plane's compression). Sized
  // from the limits unless the environment says otherwise; libuv reads it when the pool is first used,
  // which nothing has done yet.
  process.env.UV_THREADPOOL_SIZE ??= String(threadPoolSize(cfg.limits));
  const log = logger({ component: "agent", agent: cfg.agentId, cluster: cfg.cluster.name });
  const agent = new Agent(cfg, log);
  // SIGHUP (systemctl reload): auth.revokedCertificatesFile is read again and the audit file reopened
  // (before the start: a no-op).
  process.on("SIGHUP", () => agent.reload());
  try {
    await agent.start();
  } catch (e) {
    const code = startFailureExitCode(e);
    if (e instanceof StartupError || code === 1) {
      const why = code === 1 ? "its cluster is not reachable yet (systemd starts it again)" : "prerequisites not met";
      process.stderr.write(`agent ${cfg.agentId}: cannot start, ${why}:\n${(e as Error).message}\n`);
      await agent.stop(0).catch(() => {});
      return code;
    }
    throw e;
  }
  process.stdout.write(
    `${JSON.stringify({ event: "serving", address: agent.address, transferAddress: agent.transferAddress, metricsAddress: agent.metricsAddress, fsid: agent.fsid, agentId: cfg.agentId, cluster: cfg.cluster.name })}\n`,
  );
  return new Promise<number>((resolve) => {
    let draining = false;
    const onSignal = (sig: string) => {
      // Repeated signals do not cut the drain short: cancelled work is still cleaning up (systemd
      // escalates to SIGKILL after TimeoutStopSec if it must).
      if (draining) {
        log.info(`${sig}: already draining`);
        return;
      }
      draining = true;
      log.info(`${sig}: draining`);
      agent.stop().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.on("SIGTERM", () => onSignal("SIGTERM"));
    process.on("SIGINT", () => onSignal("SIGINT"));
  });
}

if (require.main === module) {
  agentMain(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`agent: ${(e as Error).stack ?? e}\n`);
      process.exit(1);
    },
  );
}

/** libuv threads for an agent's limits: 2 per job, 1 per incoming transfer, 8 more (at most 128). */
export function threadPoolSize(l: { maxConcurrentJobs: number; maxConcurrentTransfers: number }): number {
  return Math.min(128, 2 * l.maxConcurrentJobs + l.maxConcurrentTransfers + 8);
}
