/**
 * The coordinator as a local process, for the lab (demo, tests, benchmarks): started from
 * dist/src/coordinator/main.js on loopback with the lab's TLS material, and a BackupService client for it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { type Channel, createChannel, createClient, Metadata } from "nice-grpc";
import { channelCredentials, channelCredentialsCaOnly, type TlsConfig, tlsChannelOptions } from "../common/tls";
import { type BackupServiceClient, BackupServiceDefinition } from "../gen/rbdbackup/v1/backup_service";
import { labTls, repoRoot } from "./agent-process";

export interface CoordinatorProcess {
  address: string;
  /** host:port of its /metrics endpoint. */
  metricsAddress: string;
  dir: string;
  catalogPath: string;
  proc: ChildProcess;
  /** A client authenticated with the lab's test-client certificate. */
  client: BackupServiceClient;
  logs(): string;
  stop(): Promise<void>;
  kill(): Promise<void>;
}

export interface CoordinatorProcessOptions {
  /** Reuse a directory (catalog) of an earlier run. */
  dir?: string;
  listen?: string;
  scheduler?: Record<string, number>;
  tokens?: string[];
  insecure?: boolean;
  verbose?: boolean;
  shutdownGraceSeconds?: number;
}

export async function startCoordinatorProcess(opts: CoordinatorProcessOptions = {}): Promise<CoordinatorProcess> {
  const dir = opts.dir ?? mkdtempSync(path.join(tmpdir(), "rbdbackup-coordinator-"));
  const catalogPath = path.join(dir, "catalog.sqlite");
  let tokensFile = "";
  if (opts.tokens?.length) {
    tokensFile = path.join(dir, "tokens");
    writeFileSync(tokensFile, `${opts.tokens.join("\n")}\n`, { mode: 0o600 });
  }
  const config = {
    listen: opts.listen ?? "127.0.0.1:0",
    metricsListen: "127.0.0.1:0",
    tls: opts.insecure ? { insecure: true } : labTls("coordinator"),
    ...(tokensFile ? { auth: { tokensFile } } : {}),
    catalog: { path: catalogPath },
    scheduler: opts.scheduler ?? {},
    shutdownGraceSeconds: opts.shutdownGraceSeconds ?? 2,
  };
  const cfgFile = path.join(dir, "coordinator.json");
  writeFileSync(cfgFile, JSON.stringify(config, null, 2));
  const proc = spawn(process.execPath, [path.join(repoRoot, "dist/src/coordinator/main.js"), "--config", cfgFile], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  proc.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
    if (opts.verbose) process.stderr.write(d);
  });
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const serving = await new Promise<{ address: string; metricsAddress: string }>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`the coordinator did not start within 30 s:\n${stderr}`)), 30_000);
    proc.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      const line = out.split("\n").find((l) => l.includes('"serving"'));
      if (line) {
        clearTimeout(timer);
        resolve(JSON.parse(line));
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the coordinator exited with ${code} before serving:\n${stderr}`));
    });
  });
  const { client, channel } = apiClient(serving.address, opts.insecure ? { insecure: true } : labTls("test-client"));
  const waitExit = async (signal: NodeJS.Signals) => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
    channel.close();
  };
  return {
    address: serving.address,
    metricsAddress: serving.metricsAddress,
    dir,
    catalogPath,
    proc,
    client,
    logs: () => stderr,
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
