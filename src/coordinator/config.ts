/**
 * Coordinator configuration: a JSON file (see deploy/examples/coordinator.json) and flags that
 * override it. Every field is checked at start with a message naming the field.
 */
import { parseArgs } from "node:util";
import { configFields } from "../common/config-fields";
import type { TlsConfig } from "../common/tls";
import { type SchedulerConfig, schedulerDefaults } from "./scheduler";

export interface CoordinatorConfig {
  /** host:port of the gRPC server (BackupService, agent sessions, health, reflection). */
  listen: string;
  /** host:port of the Prometheus /metrics endpoint (plain HTTP; keep it on a trusted network); "" = off. */
  metricsListen: string;
  tls: TlsConfig;
  /** File of API bearer tokens (one per line); "" = API clients need a client certificate. */
  tokensFile: string;
  /** The SQLite catalog file. */
  catalogPath: string;
  scheduler: SchedulerConfig;
  /** Seconds to let calls finish on SIGTERM (health says NOT_SERVING meanwhile). */
  shutdownGraceSeconds: number;
}

export const coordinatorDefaults = {
  listen: "127.0.0.1:7300",
  metricsListen: "127.0.0.1:9730",
  catalogPath: "/var/lib/rbdbackup/coordinator/catalog.sqlite",
  shutdownGraceSeconds: 10,
};

const { fail, int, str, readFile, tls, hostPorts } = configFields("coordinator");

export function parseCoordinatorConfig(argv: string[]): CoordinatorConfig {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: "string", short: "c" },
      listen: { type: "string" },
      "metrics-listen": { type: "string" },
      catalog: { type: "string" },
      "tls-ca": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      insecure: { type: "boolean" },
      "tokens-file": { type: "string" },
      "per-cluster-limit": { type: "string" },
    },
    strict: true,
  });
  const file = readFile(values.config);
  const ft = file.tls ?? {};
  const fs = file.scheduler ?? {};
  const d = schedulerDefaults;
  const perCluster = values["per-cluster-limit"] !== undefined ? Number(values["per-cluster-limit"]) : undefined;
  const cfg: CoordinatorConfig = {
    listen: str(values.listen ?? file.listen ?? coordinatorDefaults.listen, "listen"),
    metricsListen: str(
      values["metrics-listen"] ?? file.metricsListen ?? coordinatorDefaults.metricsListen,
      "metricsListen",
      false,
    ),
    tls: tls(values, ft),
    tokensFile: str(values["tokens-file"] ?? file.auth?.tokensFile, "auth.tokensFile", false),
    catalogPath: str(values.catalog ?? file.catalog?.path ?? coordinatorDefaults.catalogPath, "catalog.path"),
    scheduler: {
      leaseTtlMs: int(fs.leaseTtlMs ?? d.leaseTtlMs, "scheduler.leaseTtlMs", 1000, 3_600_000),
      heartbeatIntervalMs: int(
        fs.heartbeatIntervalMs ?? d.heartbeatIntervalMs,
        "scheduler.heartbeatIntervalMs",
        100,
        600_000,
      ),
      maxAttempts: int(fs.maxAttempts ?? d.maxAttempts, "scheduler.maxAttempts", 1, 100),
      backoffBaseMs: int(fs.backoffBaseMs ?? d.backoffBaseMs, "scheduler.backoffBaseMs", 10, 3_600_000),
      backoffMaxMs: int(fs.backoffMaxMs ?? d.backoffMaxMs, "scheduler.backoffMaxMs", 10, 86_400_000),
      perClusterLimit: int(perCluster ?? fs.perClusterLimit ?? d.perClusterLimit, "scheduler.perClusterLimit", 1, 1024),
      tickMs: int(fs.tickMs ?? d.tickMs, "scheduler.tickMs", 50, 60_000),
    },
    shutdownGraceSeconds: int(
      file.shutdownGraceSeconds ?? coordinatorDefaults.shutdownGraceSeconds,
      "shutdownGraceSeconds",
      0,
      3600,
    ),
  };
  hostPorts([
    ["listen", cfg.listen],
    ["metricsListen", cfg.metricsListen],
  ]);
  if (cfg.scheduler.heartbeatIntervalMs * 2 > cfg.scheduler.leaseTtlMs)
    fail("scheduler.leaseTtlMs must be at least twice scheduler.heartbeatIntervalMs");
  return cfg;
}
