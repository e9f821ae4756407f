/**
 * Agent configuration: a JSON file (see deploy/examples/agent.json; every field is in
 * deploy/schema/agent.schema.json) and flags that override it. The schema (config-schema.ts) checks
 * every field and fills in the defaults; this file adds the rules that span fields.
 */
import { hostname } from "node:os";
import { checkedTls } from "../../src/common/config/fields";
import { configFailure, loadConfig } from "../../src/common/config/load";
import type { TlsConfig } from "../../src/common/tls";
import { AgentConfigSchema, type AgentFile, agentFlags, MAX_READS_IN_FLIGHT, MAX_WINDOW_BYTES } from "./config-schema";

export type AgentConfig = Omit<AgentFile, "agentId" | "tls" | "coordinator"> & {
  tls: TlsConfig;
  /** Stable id of this agent (default: <hostname>-<cluster name>). */
  agentId: string;
  /** The coordinator's addresses in the order they are tried (the file's address, then addresses; no duplicates); [] = none. */
  coordinator: { addresses: string[] };
};

const fail = configFailure("agent");

export function parseAgentConfig(argv: string[]): AgentConfig {
  const { agentId, cluster, tls, testFaults, coordinator, ...rest } = loadConfig(
    { who: "agent", schema: AgentConfigSchema, flags: agentFlags },
    argv,
  );
  const { keyring, ...clusterRest } = cluster;
  if (rest.transferListen === rest.listen && !rest.listen.endsWith(":0"))
    fail(`transferListen "${rest.transferListen}" must differ from listen (the data plane has its own port)`);
  const bw = rest.limits.bandwidthBytesPerSecond;
  if (bw > 0 && bw < 1048576) fail(`limits.bandwidthBytesPerSecond ${bw} is below 1048576 (1 MiB/s); 0 means no cap`);
  const { windowBytes, maxWindowBytes, readsInFlight, maxReadsInFlight } = rest.limits;
  if (maxReadsInFlight !== 0 && maxReadsInFlight < readsInFlight)
    fail(
      `limits.maxReadsInFlight ${maxReadsInFlight} is below limits.readsInFlight ${readsInFlight}: set it to readsInFlight or more (equal keeps the window fixed), or 0 for one and a half times readsInFlight`,
    );
  if (maxWindowBytes !== 0 && maxWindowBytes < windowBytes)
    fail(
      `limits.maxWindowBytes ${maxWindowBytes} is below limits.windowBytes ${windowBytes}: set it to windowBytes or more (equal keeps the window fixed), or 0 for twice windowBytes`,
    );
  return {
    ...rest,
    limits: {
      ...rest.limits,
      // 0: twice the start, within the schema's own bounds.
      maxWindowBytes: maxWindowBytes || Math.min(2 * windowBytes, MAX_WINDOW_BYTES),
      // The source's reads at 16 instead of 12 took the latency row's source peak to 195 MiB (over the aim).
      maxReadsInFlight: maxReadsInFlight || Math.min(Math.ceil(1.5 * readsInFlight), MAX_READS_IN_FLIGHT),
    },
    agentId: agentId ?? `${hostname()}-${cluster.name}`,
    coordinator: { addresses: [...new Set([coordinator.address, ...coordinator.addresses].filter((a) => a !== ""))] },
    cluster: { ...clusterRest, ...(keyring ? { keyring } : {}) },
    tls: checkedTls(tls, fail),
    ...(testFaults && process.env.RBDBACKUP_ENABLE_TEST_FAULTS === "1" ? { testFaults } : {}),
  };
}
