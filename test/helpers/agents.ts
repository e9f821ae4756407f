/** Real agent daemons for tests (see src/lab/agent-process.ts), with test faults enabled. */
import {
  type AgentProcess,
  type AgentProcessOptions,
  labTls,
  labTlsDir,
  startAgentProcess,
} from "../../src/lab/agent-process";

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
