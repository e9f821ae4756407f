/**
 * Real agent daemons for tests (see src/lab/agent-process.ts), with test faults enabled; their `client`
 * acts as the coordinator (leases and transfer capabilities minted per call, src/lab/lab-leases.ts).
 */
import { transferAsks } from "../../src/common/grants";
import type { TransferHeader } from "../../src/gen/rbdbackup/v1/transfer";
import {
  type AgentProcess,
  type AgentProcessOptions,
  labAgentId,
  labTls,
  labTlsDir,
  startAgentProcess,
} from "../../src/lab/agent-process";
import { LabMinter } from "../../src/lab/lab-leases";
import { labCluster } from "./lab";

export type RunningAgent = AgentProcess;
export const tlsDir = labTlsDir;
export const tlsFor = labTls;

export function startAgent(cluster: string, opts: AgentProcessOptions = {}): Promise<RunningAgent> {
  return startAgentProcess(cluster, {
    ...opts,
    verbose: !!process.env.RBDBACKUP_TEST_VERBOSE,
    // RBDBACKUP_AGENT_NODE_ARGS: extra node flags for agents (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
    nodeArgs: (process.env.RBDBACKUP_AGENT_NODE_ARGS ?? "").split(" ").filter(Boolean),
    env: { RBDBACKUP_ENABLE_TEST_FAULTS: "1" },
  });
}

/**
 * Agents of these clusters, started together. When one fails to start, the others that did are stopped
 * before its failure is thrown: left running, they would keep the test file's process from ever exiting
 * (its `after` never learns of them).
 */
export async function startAgents(...clusters: string[]): Promise<RunningAgent[]> {
  const started = await Promise.allSettled(clusters.map((c) => startAgent(c)));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (!failed) return started.map((r) => (r as PromiseFulfilledResult<RunningAgent>).value);
  await Promise.all(started.map((r) => (r.status === "fulfilled" ? r.value.stop().catch(() => {}) : undefined)));
  throw failed.reason;
}

/** The lab coordinator's minter for capabilities held by `holder` (default: site-a's standard agent). */
export function labMinter(holder = { cluster: "site-a", agentId: "agent-site-a" }): LabMinter {
  return LabMinter.fromTls(labTls("coordinator"), { ...holder, backupPool: "backups" });
}

/**
 * A transfer capability allowing exactly what `header` asks for on `destination` (a lab cluster: its
 * fsid) to its agent `toAgent` (default: the lab's standard agent of that cluster), held by `holder`.
 */
export function transferCapabilityFor(
  header: TransferHeader,
  holder = { cluster: "site-a", agentId: "agent-site-a" },
  destination = "site-b",
  toAgent = labAgentId(destination),
): string {
  return labMinter(holder).mint("transfer", { ...transferAsks(header, labCluster(destination).fsid), toAgent });
}
