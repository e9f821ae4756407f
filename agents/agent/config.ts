/**
 * Agent configuration: a JSON file (see deploy/examples/agent.json) and flags that override it.
 * Every field is checked at start with a message naming the field.
 */
import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { configFields } from "../../src/common/config-fields";
import type { TlsConfig } from "../../src/common/tls";
import { DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, MiB } from "../transfer/protocol";

export interface AgentConfig {
  /** Stable id of this agent (default: <hostname>-<cluster name>). */
  agentId: string;
  cluster: {
    /** Name of the cluster this agent serves, e.g. "site-a". */
    name: string;
    /** Path of its ceph.conf. */
    conf: string;
    /** Ceph user without "client.", e.g. "rbdbackup". */
    clientId: string;
    keyring?: string;
    connectTimeoutSeconds: number;
    opTimeoutSeconds: number;
  };
  /** host:port of the gRPC server (AgentService, health). Port 0 picks a free one. */
  listen: string;
  /** host:port peers and the coordinator hand out to reach this agent; "" = the address it listens on. */
  advertiseAddress: string;
  /** host:port of the data-plane server (TransferService, mutual TLS). Port 0 picks a free one. */
  transferListen: string;
  /** host:port peer agents dial for TransferService (the registration's transfer_address); "" = the bound transferListen. */
  transferAdvertiseAddress: string;
  /** The coordinator to dial ("" = none: the agent only serves direct AgentService calls). */
  coordinator: { address: string };
  /** host:port of the Prometheus /metrics endpoint (plain HTTP; keep it on a trusted network); "" = off. */
  metricsListen: string;
  tls: TlsConfig;
  /** Where the agent keeps its recovery journal. */
  stateDir: string;
  /** Default pool for backups written into this cluster. */
  backupPool: string;
  limits: {
    /** Largest data chunk sent, bytes (≤ 4 MiB). */
    chunkSizeBytes: number;
    /** Source: reads ahead of the network. */
    readsInFlight: number;
    /** Destination: aio writes in flight, and bytes held for them. */
    writesInFlight: number;
    windowBytes: number;
    /** Destination: transfers served at once (more get RESOURCE_EXHAUSTED). */
    maxConcurrentTransfers: number;
    /** Jobs leased from the coordinator that run at once (the capacity it registers). */
    maxConcurrentJobs: number;
    /** Destination: how often a running transfer checks whether its pool became full. */
    fullCheckIntervalMs: number;
    /** HTTP/2 receive window of the gRPC server (per stream and per connection), bytes. */
    http2WindowBytes: number;
  };
  /** Seconds to let running work finish on SIGTERM. */
  shutdownGraceSeconds: number;
  /** Test-only faults; honoured only when RBDBACKUP_ENABLE_TEST_FAULTS=1. */
  testFaults?: {
    corruptChunk?: number;
    writeDelayMs?: number;
    /** Die (SIGKILL) when a backup attempt succeeded, before its outcome is sent: a lost outcome. */
    dieBeforeOutcome?: boolean;
  };
}

export const defaults = {
  listen: "127.0.0.1:7400",
  transferListen: "127.0.0.1:7401",
  metricsListen: "127.0.0.1:9740",
  stateDir: "/var/lib/rbdbackup/agent",
  backupPool: "backups",
  connectTimeoutSeconds: 30,
  opTimeoutSeconds: 60,
  limits: {
    chunkSizeBytes: DEFAULT_CHUNK_BYTES,
    readsInFlight: 8, // × 2 MiB chunks: 16 MiB read ahead at most; 4, 8 and 16 within noise, small extents (incrementals) want more
    writesInFlight: 16,
    windowBytes: 64 * MiB,
    maxConcurrentTransfers: 8,
    maxConcurrentJobs: 4,
    fullCheckIntervalMs: 2000,
    http2WindowBytes: 16 * MiB,
  },
  shutdownGraceSeconds: 30,
};

const { fail, int, str, readFile, tls, hostPorts } = configFields("agent");

export function parseAgentConfig(argv: string[]): AgentConfig {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: "string", short: "c" },
      "agent-id": { type: "string" },
      "cluster-name": { type: "string" },
      "ceph-conf": { type: "string" },
      "client-id": { type: "string" },
      keyring: { type: "string" },
      listen: { type: "string" },
      "tls-ca": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      insecure: { type: "boolean" },
      "state-dir": { type: "string" },
      "backup-pool": { type: "string" },
      "metrics-listen": { type: "string" },
      coordinator: { type: "string" },
      "advertise-address": { type: "string" },
      "transfer-listen": { type: "string" },
      "transfer-advertise-address": { type: "string" },
    },
    strict: true,
  });
  const file = readFile(values.config);
  const fc = file.cluster ?? {};
  const ft = file.tls ?? {};
  const fl = file.limits ?? {};
  const clusterName = str(values["cluster-name"] ?? fc.name, "cluster.name (--cluster-name)");
  const cfg: AgentConfig = {
    agentId: str(values["agent-id"] ?? file.agentId ?? `${hostname()}-${clusterName}`, "agentId"),
    cluster: {
      name: clusterName,
      conf: str(values["ceph-conf"] ?? fc.conf, "cluster.conf (--ceph-conf)"),
      clientId: str(values["client-id"] ?? fc.clientId ?? "rbdbackup", "cluster.clientId"),
      ...((values.keyring ?? fc.keyring) ? { keyring: str(values.keyring ?? fc.keyring, "cluster.keyring") } : {}),
      connectTimeoutSeconds: int(
        fc.connectTimeoutSeconds ?? defaults.connectTimeoutSeconds,
        "cluster.connectTimeoutSeconds",
        1,
        3600,
      ),
      opTimeoutSeconds: int(fc.opTimeoutSeconds ?? defaults.opTimeoutSeconds, "cluster.opTimeoutSeconds", 1, 3600),
    },
    listen: str(values.listen ?? file.listen ?? defaults.listen, "listen"),
    advertiseAddress: str(values["advertise-address"] ?? file.advertiseAddress, "advertiseAddress", false),
    transferListen: str(values["transfer-listen"] ?? file.transferListen ?? defaults.transferListen, "transferListen"),
    transferAdvertiseAddress: str(
      values["transfer-advertise-address"] ?? file.transferAdvertiseAddress,
      "transferAdvertiseAddress",
      false,
    ),
    coordinator: {
      address: str(values.coordinator ?? file.coordinator?.address, "coordinator.address (--coordinator)", false),
    },
    metricsListen: str(
      values["metrics-listen"] ?? file.metricsListen ?? defaults.metricsListen,
      "metricsListen",
      false,
    ),
    tls: tls(values, ft),
    stateDir: str(values["state-dir"] ?? file.stateDir ?? defaults.stateDir, "stateDir"),
    backupPool: str(values["backup-pool"] ?? file.backupPool ?? defaults.backupPool, "backupPool"),
    limits: {
      chunkSizeBytes: int(
        fl.chunkSizeBytes ?? defaults.limits.chunkSizeBytes,
        "limits.chunkSizeBytes",
        4096,
        MAX_CHUNK_BYTES,
      ),
      readsInFlight: int(fl.readsInFlight ?? defaults.limits.readsInFlight, "limits.readsInFlight", 1, 1024),
      writesInFlight: int(fl.writesInFlight ?? defaults.limits.writesInFlight, "limits.writesInFlight", 1, 1024),
      windowBytes: int(
        fl.windowBytes ?? defaults.limits.windowBytes,
        "limits.windowBytes",
        MAX_CHUNK_BYTES,
        4096 * MiB,
      ),
      maxConcurrentTransfers: int(
        fl.maxConcurrentTransfers ?? defaults.limits.maxConcurrentTransfers,
        "limits.maxConcurrentTransfers",
        1,
        1024,
      ),
      maxConcurrentJobs: int(
        fl.maxConcurrentJobs ?? defaults.limits.maxConcurrentJobs,
        "limits.maxConcurrentJobs",
        1,
        1024,
      ),
      fullCheckIntervalMs: int(
        fl.fullCheckIntervalMs ?? defaults.limits.fullCheckIntervalMs,
        "limits.fullCheckIntervalMs",
        100,
        60_000,
      ),
      http2WindowBytes: int(
        fl.http2WindowBytes ?? defaults.limits.http2WindowBytes,
        "limits.http2WindowBytes",
        65535,
        2 ** 31 - 1,
      ),
    },
    shutdownGraceSeconds: int(
      file.shutdownGraceSeconds ?? defaults.shutdownGraceSeconds,
      "shutdownGraceSeconds",
      0,
      3600,
    ),
    ...(file.testFaults && process.env.RBDBACKUP_ENABLE_TEST_FAULTS === "1" ? { testFaults: file.testFaults } : {}),
  };
  hostPorts([
    ["listen", cfg.listen],
    ["metricsListen", cfg.metricsListen],
    ["advertiseAddress", cfg.advertiseAddress],
    ["transferListen", cfg.transferListen],
    ["transferAdvertiseAddress", cfg.transferAdvertiseAddress],
    ["coordinator.address", cfg.coordinator.address],
  ]);
  if (cfg.transferListen === cfg.listen && !cfg.listen.endsWith(":0"))
    fail(`transferListen "${cfg.transferListen}" must differ from listen (the data plane has its own port)`);
  return cfg;
}
