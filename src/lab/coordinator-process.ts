/**
 * The coordinator as a local process, for the lab (demo, tests, benchmarks): started from
 * dist/src/coordinator/main.js on loopback with the lab's TLS material, and a BackupService client for it.
 */
import type { ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { type Channel, createChannel, createClient, Metadata } from "nice-grpc";
import type { Role } from "../common/identity";
import { channelCredentials, channelCredentialsCaOnly, type TlsConfig, tlsChannelOptions } from "../common/tls";
import { type BackupServiceClient, BackupServiceDefinition } from "../gen/rbdbackup/v1/backup_service";
import { daemonsDist, labTls } from "./agent-process";
import { startDaemon } from "./daemon";
import { scratchDir } from "./scratch";

export interface CoordinatorProcess {
  address: string;
  /** host:port of its /metrics endpoint. */
  metricsAddress: string;
  dir: string;
  catalogPath: string;
  /** The tokens file ("" when no tokens were given): rewrite it and SIGHUP the process to rotate. */
  tokensFile: string;
  /** The revoked certificates file ("" when `revoked` was not given): rewrite it and SIGHUP the process. */
  revokedFile: string;
  proc: ChildProcess;
  /** A client authenticated with the lab's test-client certificate. */
  client: BackupServiceClient;
  logs(): string;
  stop(): Promise<void>;
  kill(): Promise<void>;
}

export interface CoordinatorProcessOptions {
  /** Reuse a directory (catalog) of an earlier run; default: a new one, removed when this process exits. */
  dir?: string;
  listen?: string;
  scheduler?: Record<string, number>;
  /** The policy runner's settings (tickMs, discoveryIntervalMs, minIntervalSeconds). */
  policy?: Record<string, number>;
  /** API bearer tokens and their roles (written as the tokens file, "<role> <token> [<name>]" per line). */
  tokens?: Array<{ role: Role; token: string; name?: string }>;
  /** auth.scopesFile's text (API clients' scopes); unset: no such file, nobody scoped. */
  scopes?: string;
  /** auth.revokedCertificatesFile's lines (fingerprints of revoked certificates); unset: no such file. */
  revoked?: string[];
  /** auth.auditLog: a file the audit lines are appended to. */
  auditLog?: string;
  insecure?: boolean;
  verbose?: boolean;
  shutdownGraceSeconds?: number;
  /** Detach: log to this file and outlive the caller (see src/lab/daemon.ts). */
  logFile?: string;
  /** Fixed ports (the demo's daemons keep theirs across runs); default: free ones. */
  metricsListen?: string;
  /** catalog.url: a PostgreSQL catalog (several coordinators may share it); default: SQLite in `dir`. */
  catalogUrl?: string;
  /** The ha block (id, advertise, leaseSeconds, renewMs). */
  ha?: Record<string, string | number>;
}

/** A tokens file's text: one "<role> <token>" per line. */
export function tokensFileText(tokens: Array<{ role: Role; token: string; name?: string }>): string {
  return `# <role> <token> [<name>]; role = reader | operator | admin\n${tokens.map((t) => `${t.role} ${t.token}${t.name ? ` ${t.name}` : ""}\n`).join("")}`;
}

export async function startCoordinatorProcess(opts: CoordinatorProcessOptions = {}): Promise<CoordinatorProcess> {
  const dir = opts.dir ?? scratchDir("rbdbackup-coordinator-");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const catalogPath = path.join(dir, "catalog.sqlite");
  let tokensFile = "";
  if (opts.tokens?.length) {
    tokensFile = path.join(dir, "tokens");
    writeFileSync(tokensFile, tokensFileText(opts.tokens), { mode: 0o600 });
  }
  let revokedFile = "";
  if (opts.revoked) {
    revokedFile = path.join(dir, "revoked-certificates");
    writeFileSync(revokedFile, opts.revoked.map((l) => `${l}\n`).join(""), { mode: 0o600 });
  }
  let scopesFile = "";
  if (opts.scopes !== undefined) {
    scopesFile = path.join(dir, "api-scopes");
    writeFileSync(scopesFile, opts.scopes, { mode: 0o600 });
  }
  const config = {
    listen: opts.listen ?? "127.0.0.1:0",
    metricsListen: opts.metricsListen ?? "127.0.0.1:0",
    tls: opts.insecure ? { insecure: true } : labTls("coordinator"),
    auth: {
      tokensFile,
      auditLog: opts.auditLog ?? "",
      ...(revokedFile ? { revokedCertificatesFile: revokedFile } : {}),
      ...(scopesFile ? { scopesFile } : {}),
    },
    catalog: { path: catalogPath, ...(opts.catalogUrl ? { url: opts.catalogUrl } : {}) },
    ...(opts.ha ? { ha: opts.ha } : {}),
    scheduler: opts.scheduler ?? {},
    policy: opts.policy ?? {},
    shutdownGraceSeconds: opts.shutdownGraceSeconds ?? 2,
  };
  const cfgFile = path.join(dir, "coordinator.json");
  writeFileSync(cfgFile, JSON.stringify(config, null, 2));
  const daemon = await startDaemon<{ address: string; metricsAddress: string }>(
    "the coordinator",
    [path.join(daemonsDist, "src/coordinator/main.js"), "--config", cfgFile],
    { verbose: !!opts.verbose, timeoutMs: 30_000, ...(opts.logFile ? { logFile: opts.logFile } : {}) },
  );
  const { proc, serving } = daemon;
  const { client, channel } = apiClient(serving.address, opts.insecure ? { insecure: true } : labTls("test-client"));
  const waitExit = async (signal: NodeJS.Signals) => {
    await daemon.stop(signal);
    channel.close();
  };
  return {
    address: serving.address,
    metricsAddress: serving.metricsAddress,
    dir,
    catalogPath,
    tokensFile,
    revokedFile,
    proc,
    client,
    logs: daemon.logs,
    stop: () => waitExit("SIGTERM"),
    kill: () => waitExit("SIGKILL"),
  };
}

/**
 * A BackupService client: mutual TLS with `tls` (cert and key), or TLS with only the CA plus a bearer
 * token, or plaintext (`insecure`).
 */
export function apiClient(
  address: string,
  tls: TlsConfig,
  token?: string,
): { client: BackupServiceClient; channel: Channel } {
  const creds = tls.insecure
    ? channelCredentials(tls)
    : tls.cert && tls.key
      ? channelCredentials(tls)
      : channelCredentialsCaOnly(tls.ca as string);
  const channel = createChannel(address, creds, tlsChannelOptions(address, tls));
  const client = createClient(BackupServiceDefinition, channel, {
    "*": token ? { metadata: Metadata({ authorization: `Bearer ${token}` }) } : {},
  });
  return { client, channel };
}
