/**
 * Real agent daemons for tests: separate processes (dist/agents/agent/main.js) serving the lab's
 * clusters on loopback with mutual TLS, and gRPC clients to them.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createChannel, createClient } from "nice-grpc";
import { channelCredentials, type TlsConfig, tlsChannelOptions } from "../../src/common/tls";
import { AgentServiceDefinition, type AgentServiceClient } from "../../src/gen/rbdbackup/v1/agent";
import { labCluster, labDir, repoRoot } from "./lab";

export function tlsDir(): string {
  const dir = path.join(labDir, "tls");
  execFileSync(path.join(repoRoot, "deploy/tls/gen-certs.sh"), [dir, "agent-site-a", "agent-site-b", "agent-site-small", "test-client", "coordinator"], {
    stdio: "ignore",
  });
  return dir;
}

export function tlsFor(name: string): TlsConfig {
  const d = tlsDir();
  return { ca: path.join(d, "ca.pem"), cert: path.join(d, `${name}.pem`), key: path.join(d, `${name}.key`) };
}

export interface RunningAgent {
  name: string;
  cluster: string;
  address: string;
  fsid: string;
  stateDir: string;
  proc: ChildProcess;
  client: AgentServiceClient;
  /** stderr so far (JSON log lines), for failure messages. */
  logs(): string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
}

export interface AgentOptions {
  stateDir?: string;
  limits?: Record<string, number>;
  testFaults?: { corruptChunk?: number; writeDelayMs?: number };
  opTimeoutSeconds?: number;
  backupPool?: string;
  listen?: string;
}

export async function startAgent(cluster: string, opts: AgentOptions = {}): Promise<RunningAgent> {
  const c = labCluster(cluster);
  const name = `agent-${cluster}`;
  const stateDir = opts.stateDir ?? mkdtempSync(path.join(tmpdir(), `rbdbackup-${name}-`));
  const config = {
    agentId: name,
    cluster: {
      name: cluster,
      conf: c.conf,
      clientId: "rbdbackup",
      keyring: c.rbdbackupKeyring,
      connectTimeoutSeconds: 10,
      opTimeoutSeconds: opts.opTimeoutSeconds ?? 30,
    },
    listen: opts.listen ?? "127.0.0.1:0",
    tls: tlsFor(name),
    stateDir,
    backupPool: opts.backupPool ?? "backups",
    limits: opts.limits ?? {},
    shutdownGraceSeconds: 5,
    ...(opts.testFaults ? { testFaults: opts.testFaults } : {}),
  };
  const cfgFile = path.join(stateDir, "agent.json");
  writeFileSync(cfgFile, JSON.stringify(config, null, 2));
  const proc = spawn(process.execPath, [path.join(repoRoot, "dist/agents/agent/main.js"), "--config", cfgFile], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RBDBACKUP_ENABLE_TEST_FAULTS: "1" },
  });
  let stderr = "";
  proc.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
    if (process.env.RBDBACKUP_TEST_VERBOSE) process.stderr.write(d);
  });
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const serving = await new Promise<{ address: string; fsid: string }>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 60 s:\n${stderr}`)), 60_000);
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
      reject(new Error(`${name} exited with ${code} before serving:\n${stderr}`));
    });
  });
  const tls = tlsFor("test-client");
  const channel = createChannel(serving.address, channelCredentials(tls), tlsChannelOptions(serving.address, tls));
  const client = createClient(AgentServiceDefinition, channel);
  const waitExit = async (signal: NodeJS.Signals) => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
    channel.close();
  };
  return {
    name,
    cluster,
    address: serving.address,
    fsid: serving.fsid,
    stateDir,
    proc,
    client,
    logs: () => stderr,
    stop: () => waitExit("SIGTERM"),
    kill: () => waitExit("SIGKILL"),
  };
}
