/**
 * Agent daemons as local processes, for the lab: the demo and the tests start real agents
 * (dist/agents/agent/main.js) serving lab clusters on loopback, with mutual TLS from the lab's CA,
 * and talk to them over gRPC.
 */
import { type ChildProcess, execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TlsConfig } from "../common/tls";
import type { AgentServiceClient } from "../gen/rbdbackup/v1/agent";
import { startDaemon } from "./daemon";
import { LabMinter, labAgentClient, registerLabAgent } from "./lab-leases";
import { scratchDir } from "./scratch";

export const repoRoot = path.resolve(__dirname, "../../..");
/**
 * The build whose daemons (agents, coordinator) the lab starts: this checkout's dist, or the one named
 * by RBDBACKUP_DAEMONS_DIST (a benchmark comparing two builds runs the other's daemons).
 */
export const daemonsDist = process.env.RBDBACKUP_DAEMONS_DIST ?? path.join(repoRoot, "dist");
export const labDir = process.env.RBDBACKUP_LAB_DIR ?? "/tmp/rbdbackup-lab";

export interface LabClusterInfo {
  name: string;
  fsid: string;
  conf: string;
  keyring: string;
  clientId: string;
  rbdbackupKeyring: string;
}

/** The id of a lab cluster's standard agent (startAgentProcess without an agentId). */
export function labAgentId(cluster: string): string {
  return `agent-${cluster}`;
}

export function labClusterInfo(name: string): LabClusterInfo {
  const file = path.join(labDir, name, "cluster.json");
  try {
    return JSON.parse(readFileSync(file, "utf8")) as LabClusterInfo;
  } catch (e) {
    throw new Error(
      `lab cluster ${name} not found (${file}); start it with "deploy/lab/lab.sh up ${name}" (${(e as Error).message})`,
    );
  }
}

/**
 * Who each of the lab's standard certificates names (deploy/tls/gen-certs.sh NAME=IDENTITY):
 * `agent-<cluster>` an agent of that cluster, `coordinator` the coordinator, `test-client` an admin,
 * `operator` and `reader` API clients with those roles; `no-identity` names nobody (for tests).
 */
export function labIdentity(name: string): string | undefined {
  const agent = /^agent-(site-[a-z]+)$/.exec(name);
  if (agent) return `rbdbackup://agent/${agent[1]}/${name}`;
  return (
    {
      coordinator: "rbdbackup://coordinator/lab",
      "test-client": "rbdbackup://client/admin/test-client",
      operator: "rbdbackup://client/operator/operator",
      reader: "rbdbackup://client/reader/reader",
    } as Record<string, string>
  )[name];
}

const LAB_CERTS = [
  "agent-site-a",
  "agent-site-b",
  "agent-site-small",
  "test-client",
  "coordinator",
  "operator",
  "reader",
];

/** The lab's CA and certificates (created on first use, re-issued when their identity changed). */
export function labTlsDir(extra: string[] = []): string {
  const dir = path.join(labDir, "tls");
  const specs = [...LAB_CERTS.map((n) => `${n}=${labIdentity(n)}`), "no-identity", ...extra];
  execFileSync(path.join(repoRoot, "deploy/tls/gen-certs.sh"), [dir, ...specs], { stdio: "ignore" });
  return dir;
}

/**
 * TLS files of the lab certificate `name`, naming `identity` (default: the lab's identity for that
 * name — see labIdentity; an agent with its own id gets `rbdbackup://agent/<cluster>/<agent-id>`).
 */
export function labTls(name: string, identity = labIdentity(name)): TlsConfig {
  const d = labTlsDir(identity && identity !== labIdentity(name) ? [`${name}=${identity}`] : []);
  return { ca: path.join(d, "ca.pem"), cert: path.join(d, `${name}.pem`), key: path.join(d, `${name}.key`) };
}

export interface AgentProcess {
  name: string;
  cluster: string;
  /** host:port of its grpc-js server (AgentService, health): `client` talks to it. */
  address: string;
  /** host:port of its data plane (TransferService): what a backup's destination / a restore's target names. */
  transferAddress: string;
  /** host:port of its Prometheus /metrics endpoint. */
  metricsAddress: string;
  fsid: string;
  stateDir: string;
  /** Its auth.revokedCertificatesFile ("" without AgentProcessOptions.revoked): rewrite it, then SIGHUP `proc`. */
  revokedFile: string;
  proc: ChildProcess;
  client: AgentServiceClient;
  /** stderr so far (JSON log lines). */
  logs(): string;
  /** SIGTERM and wait for exit (bounded). */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit (bounded). */
  kill(): Promise<void>;
}

export interface AgentProcessOptions {
  /** Default: a new directory, removed when this process exits (src/lab/scratch.ts). */
  stateDir?: string;
  limits?: Record<string, number>;
  /** The agent config's `transfer` section (e.g. `{ bulk: "off" }`). */
  transfer?: Record<string, unknown>;
  testFaults?: {
    corruptChunk?: number;
    writeDelayMs?: number;
    dieBeforeOutcome?: boolean;
    growBeforeSnapshotBytes?: number;
  };
  opTimeoutSeconds?: number;
  /** How long running calls get after SIGTERM before they are cancelled (default 5). */
  shutdownGraceSeconds?: number;
  backupPool?: string;
  listen?: string;
  /** host:port of the data plane (default: a free port). */
  transferListen?: string;
  /** Plaintext gRPC (benchmarks compare it); TLS otherwise. */
  insecure?: boolean;
  /**
   * Lab certificate the `client` talks with (default "coordinator": it then mints the leases and
   * transfer capabilities the agent requires, src/lab/lab-leases.ts; any other name calls as that
   * identity with nothing minted).
   */
  clientCert?: string;
  /** Paths a path source may read (agent config sourcePaths; default: the system's temp directory). */
  sourcePaths?: string[];
  /**
   * Lines added to a copy of the lab cluster's ceph.conf that this agent alone reads (e.g. a `[client]`
   * section that delays OSD replies, to slow librbd down for a test).
   */
  cephConfExtra?: string;
  /** Extra node flags, e.g. ["--cpu-prof"]. */
  nodeArgs?: string[];
  /** Forward the agent's log lines to our stderr. */
  verbose?: boolean;
  env?: Record<string, string>;
  /** host:port of a coordinator to dial. */
  coordinator?: string;
  /** Several coordinators (a leader and its standbys), tried in this order (replaces `coordinator`). */
  coordinators?: string[];
  /** Default agent-<cluster>; a second agent of one cluster needs its own. */
  agentId?: string;
  /** Detach: log to this file and outlive the caller (see src/lab/daemon.ts). */
  logFile?: string;
  /** auth.revokedCertificatesFile's lines (fingerprints of revoked certificates); unset: no such file. */
  revoked?: string[];
}

/** A copy of `conf` in `dir` with `extra` appended (AgentProcessOptions.cephConfExtra); its path. */
function ownConf(conf: string, dir: string, extra: string): string {
  const file = path.join(dir, "ceph.conf");
  writeFileSync(file, `${readFileSync(conf, "utf8")}\n${extra}\n`);
  return file;
}

export async function startAgentProcess(cluster: string, opts: AgentProcessOptions = {}): Promise<AgentProcess> {
  const c = labClusterInfo(cluster);
  const name = labAgentId(cluster);
  const agentId = opts.agentId ?? name;
  const stateDir = opts.stateDir ?? scratchDir(`rbdbackup-${agentId}-`);
  const revokedFile = opts.revoked ? path.join(stateDir, "revoked-certificates") : "";
  if (opts.revoked) writeFileSync(revokedFile, opts.revoked.map((l) => `${l}\n`).join(""), { mode: 0o600 });
  const config = {
    agentId,
    ...(opts.coordinators?.length
      ? { coordinator: { addresses: opts.coordinators } }
      : opts.coordinator
        ? { coordinator: { address: opts.coordinator } }
        : {}),
    cluster: {
      name: cluster,
      conf: opts.cephConfExtra ? ownConf(c.conf, stateDir, opts.cephConfExtra) : c.conf,
      clientId: "rbdbackup",
      keyring: c.rbdbackupKeyring,
      connectTimeoutSeconds: 10,
      opTimeoutSeconds: opts.opTimeoutSeconds ?? 30,
    },
    listen: opts.listen ?? "127.0.0.1:0",
    transferListen: opts.transferListen ?? "127.0.0.1:0",
    metricsListen: "127.0.0.1:0",
    tls: opts.insecure ? { insecure: true } : labTls(agentId, `rbdbackup://agent/${cluster}/${agentId}`),
    stateDir,
    backupPool: opts.backupPool ?? "backups",
    sourcePaths: opts.sourcePaths ?? [tmpdir()],
    limits: opts.limits ?? {},
    ...(opts.transfer ? { transfer: opts.transfer } : {}),
    shutdownGraceSeconds: opts.shutdownGraceSeconds ?? 5,
    ...(opts.testFaults ? { testFaults: opts.testFaults } : {}),
    ...(revokedFile ? { auth: { revokedCertificatesFile: revokedFile } } : {}),
  };
  const cfgFile = path.join(stateDir, "agent.json");
  writeFileSync(cfgFile, JSON.stringify(config, null, 2));
  const daemon = await startDaemon<{ address: string; transferAddress: string; metricsAddress: string; fsid: string }>(
    name,
    [...(opts.nodeArgs ?? []), path.join(daemonsDist, "agents/agent/main.js"), "--config", cfgFile],
    {
      // As deploy/systemd/rbdbackup-agent@.service: two malloc arenas (see there).
      env: { MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? "2", ...(opts.env ?? {}) },
      verbose: !!opts.verbose,
      ...(opts.logFile ? { logFile: opts.logFile } : {}),
    },
  );
  const { proc, serving } = daemon;
  // As the coordinator by default (leases and transfer capabilities minted per call: lab-leases.ts);
  // another clientCert calls as that identity, with nothing minted.
  const certName = opts.clientCert ?? "coordinator";
  const tls = opts.insecure ? { insecure: true } : labTls(certName);
  const minter =
    opts.insecure || certName !== "coordinator"
      ? undefined
      : LabMinter.fromTls(tls, { cluster, agentId, backupPool: config.backupPool, fsid: serving.fsid });
  registerLabAgent(serving.transferAddress, serving.fsid, agentId);
  const { client, close } = labAgentClient(serving.address, tls, minter);
  const waitExit = async (signal: NodeJS.Signals) => {
    await daemon.stop(signal);
    close();
  };
  return {
    name,
    cluster,
    address: serving.address,
    transferAddress: serving.transferAddress,
    metricsAddress: serving.metricsAddress,
    fsid: serving.fsid,
    stateDir,
    revokedFile,
    proc,
    client,
    logs: daemon.logs,
    stop: () => waitExit("SIGTERM"),
    kill: () => waitExit("SIGKILL"),
  };
}
