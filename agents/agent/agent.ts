/**
 * The agent daemon: one per Ceph cluster it serves.
 *
 * Lifecycle (an explicit state): starting → serving → draining → stopped.
 *  - starting: local checks (libraries, conf, keyring), connect (bounded), cluster checks (backup pool,
 *    image features) — any failing check stops the start with its message; then recovery of
 *    transfers a previous run left unfinished; then two servers on mutual TLS: the data plane
 *    (TransferService, on `transferListen`: agents/transfer/data-plane-server.ts) and grpc-js
 *    (AgentService, grpc.health.v1, on `listen`). AgentService only for the coordinator, direct
 *    mutating calls only under its lease (authz.ts); TransferService only for agents, a Transfer only
 *    with a capability for exactly what it writes (agents/transfer/transfer-authz.ts).
 *  - draining (SIGTERM): health NOT_SERVING, new work refused (UNAVAILABLE), running work gets
 *    `shutdownGraceSeconds` to finish (both servers send GOAWAY and let calls in flight end), then
 *    calls are cancelled.
 */

import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { createServer, type Server } from "nice-grpc";
import { HealthDefinition, HealthServiceImpl, HealthState } from "nice-grpc-server-health";
import { splitHostPort } from "../../src/common/address";
import { CapabilityVerifier } from "../../src/common/capability";
import type { Logger } from "../../src/common/log";
import { ReloadMetrics } from "../../src/common/reload-metrics";
import { reloadLogged } from "../../src/common/reloadable-file";
import { RevocationList } from "../../src/common/revocations";
import { checkSecretFile } from "../../src/common/secret-file";
import { TransientStartError } from "../../src/common/start-failure";
import { serverCredentials } from "../../src/common/tls";
import { AgentServiceDefinition } from "../../src/gen/rbdbackup/v1/agent";
import type { TransferMessage } from "../../src/gen/rbdbackup/v1/transfer";
import { type Cluster, connect, libraryVersions, releaseFreeMemory } from "../ceph";
import { ADVISORY_CHECKS, clusterChecks, localChecks } from "../engine/checks";
import type { EngineContext, TransferTarget } from "../engine/context";
import { OpenVolumes } from "../engine/open-volumes";
import { listChains } from "../engine/snapshots";
import { AuthzAudit, SESSION_METHOD } from "../transfer/authz-audit";
import { DataPlaneServer } from "../transfer/data-plane-server";
import { Journal } from "../transfer/journal";
import { receivePool } from "../transfer/message-reader";
import { Peers, peerChannelOptions } from "../transfer/peers";
import { MAX_MESSAGE_BYTES } from "../transfer/protocol";
import { QuietRelease } from "../transfer/quiet-release";
import { shapedTarget } from "../transfer/shaping";
import { agentLimiters } from "../transfer/shaping/rate-limit";
import {
  discardHeldInto,
  overwroteTarget,
  RecentCommits,
  recoverInterrupted,
  resumePoint,
  runSink,
  type SinkDeps,
  type SinkOptions,
  sweepHeld,
  sweepLeftovers,
} from "../transfer/sink";
import {
  admitTransferCaller,
  authorizeResumePoint,
  authorizeTransfer,
  ownVisibleChains,
  SPENT_CAPABILITIES_FILE,
  SpentCapabilities,
} from "../transfer/transfer-authz";
import { framePool } from "../transfer/wire";
import { agentServiceInterceptor, LeaseCheck } from "./authz";
import type { AgentConfig } from "./config";
import { garbageCollector } from "./gc";
import { AgentMetrics } from "./metrics";
import { AgentOperations, handle, running } from "./operations";
import { agentService, listChainsService, VERSION } from "./services";
import { CoordinatorSession } from "./session";
import { claimStateDir, StateDirInUseError } from "./state-dir";

/** How long a stopping agent waits for cancelled operations to finish their cleanup. */
const CLEANUP_WAIT_MS = 60_000;
/** The data plane's keepalive, as the peer channels' (peerChannelOptions): ping every 15 s, 10 s to answer. */
const PEER_KEEPALIVE_MS = Number(peerChannelOptions["grpc.keepalive_time_ms"]);
const PEER_KEEPALIVE_TIMEOUT_MS = Number(peerChannelOptions["grpc.keepalive_timeout_ms"]);

export type AgentState = "starting" | "serving" | "draining" | "stopped";

export class StartupError extends Error {
  override readonly name = "StartupError";
}

export class Agent {
  state: AgentState = "starting";
  /** host:port of the grpc-js server (AgentService, health). */
  address = "";
  /** host:port of the data-plane server (TransferService). */
  transferAddress = "";
  fsid = "";
  #server: Server | null = null;
  #dataPlane: DataPlaneServer | null = null;
  #audit: AuthzAudit | null = null;
  /** Removes this agent's claim on its state dir (state-dir.ts) at a clean stop. */
  #releaseStateDir: (() => void) | null = null;
  #cluster: Cluster | null = null;
  #peers: Peers | null = null;
  #metrics: AgentMetrics | null = null;
  #sweep: NodeJS.Timeout | null = null;
  #commits: RecentCommits | null = null;
  #quiet: QuietRelease | null = null;
  #revoked: RevocationList | null = null;
  /** Whether the revocations file's last read took (rbdbackup_config_last_reload_successful). */
  #reloads: ReloadMetrics | null = null;
  readonly #openVolumes = new OpenVolumes();
  session: CoordinatorSession | null = null;
  metricsAddress = "";
  readonly health = HealthState();

  constructor(
    readonly cfg: AgentConfig,
    readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const cfg = this.cfg;
    // Certificates refused whatever the CA says (a leaked coordinator key, a retired agent): read first, so
    // a bad file stops the start (exit 2) before the cluster is even dialled.
    let revoked: RevocationList;
    try {
      // Its key proves this agent to the coordinator and its peers: not a file other users may read.
      if (!cfg.tls.insecure && cfg.tls.key) checkSecretFile(cfg.tls.key, "TLS key");
      // The CA's curve decides the ECDSA twins a revoked certificate may be presented as (revocations.ts).
      revoked = new RevocationList(
        cfg.auth.revokedCertificatesFile,
        cfg.tls.insecure || !cfg.tls.ca ? undefined : readFileSync(cfg.tls.ca),
      );
    } catch (e) {
      throw new StartupError((e as Error).message);
    }
    this.#revoked = revoked;
    const inputs = {
      conf: cfg.cluster.conf,
      keyring: cfg.cluster.keyring,
      clientId: cfg.cluster.clientId,
      backupPool: cfg.backupPool,
    };
    const local = await localChecks(inputs);
    const bad = local.filter((c) => !c.ok);
    if (bad.length) throw new StartupError(bad.map((c) => `${c.name}: ${c.message}`).join("\n"));
    try {
      this.#cluster = await connect({
        conf: cfg.cluster.conf,
        clientId: cfg.cluster.clientId,
        ...(cfg.cluster.keyring ? { keyring: cfg.cluster.keyring } : {}),
        connectTimeoutSeconds: cfg.cluster.connectTimeoutSeconds,
        opTimeoutSeconds: cfg.cluster.opTimeoutSeconds,
      });
    } catch (e) {
      // Monitors still booting, a network not up yet: a later start may connect (exit 1, restarted).
      throw new TransientStartError(
        `connect: cannot connect to cluster ${cfg.cluster.name} as client.${cfg.cluster.clientId}: ${(e as Error).message}`,
      );
    }
    const cluster = this.#cluster;
    this.fsid = cluster.fsid();
    for (const c of await clusterChecks(cluster, cfg.backupPool)) {
      if (c.ok) continue;
      if (ADVISORY_CHECKS.has(c.name)) this.log.warn(`check ${c.name}: ${c.message}`);
      else throw new StartupError(`${c.name}: ${c.message}`);
    }

    const log = this.log;
    mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
    try {
      this.#releaseStateDir = claimStateDir(cfg.stateDir);
    } catch (e) {
      throw e instanceof StateDirInUseError ? new StartupError(e.message) : e;
    }
    const metrics = new AgentMetrics(cfg.cluster.name, VERSION, libraryVersions().librbd);
    this.#metrics = metrics;
    this.#reloads = new ReloadMetrics(cfg.auth.revokedCertificatesFile ? ["revocations"] : []);
    for (const m of this.#reloads.all()) metrics.registry.registerMetric(m);
    metrics.knownPool(cfg.backupPool);
    const audit = new AuthzAudit(log, (service, reason) => metrics.refused(service, reason), cfg.audit.file);
    this.#audit = audit;
    const commits = new RecentCommits();
    this.#commits = commits;
    const sink: SinkDeps = {
      meter: metrics.meter,
      cluster,
      clientAddr: cluster.addrs(),
      clientId: cluster.instanceId(),
      clusterName: cfg.cluster.name,
      fsid: this.fsid,
      // Another release's entry (or a foreign file) is kept and said once per process: an operator undoes it.
      journal: new Journal(cfg.stateDir, (f) =>
        log.warn(
          "transfer journal: a file this release cannot use, left as it is (what it describes is not undone)",
          f,
        ),
      ),
      commits,
      log,
      limits: {
        writesInFlight: cfg.limits.writesInFlight,
        windowBytes: cfg.limits.windowBytes,
        maxWindowBytes: cfg.limits.maxWindowBytes,
        fullCheckIntervalMs: cfg.limits.fullCheckIntervalMs,
      },
      ...(cfg.testFaults?.writeDelayMs ? { writeDelayMs: cfg.testFaults.writeDelayMs } : {}),
      resume: { ttlSeconds: cfg.transfer.resumeTtlSeconds },
    };
    await recoverInterrupted(sink);
    // Transfers kept for a resume that did not come are undone once their hold expires.
    // So are entries left behind by a cleanup that failed (otherwise they wait for the next start).
    const sweep = async () => {
      await sweepHeld(sink);
      await sweepLeftovers(sink);
    };
    this.#sweep = setInterval(() => void sweep().catch((err) => log.warn("sweep failed", { err })), 60_000);
    this.#sweep.unref();

    // The destination's entry: the network server (data-plane-server.ts) and the same-cluster
    // shortcut (localTarget) both hand a transfer's messages to this one function.
    const receiveTransfer = (
      messages: AsyncIterable<TransferMessage>,
      signal: AbortSignal,
      from: NonNullable<SinkOptions["from"]>,
    ) => runSink(sink, messages, signal, { from });
    // Capabilities are checked against the deployment's CA (none in insecure mode: tests only).
    const verifier =
      cfg.tls.insecure || !cfg.tls.ca ? null : new CapabilityVerifier(readFileSync(cfg.tls.ca), Date.now, revoked);
    const localTarget: TransferTarget = {
      label: "this agent",
      transfer: (messages, signal) => receiveTransfer(messages, signal, "local"),
      listChains: async (pool, namespace, volumeImage, _signal, capability) => {
        // The same chains a peer's ListChains would show this backup (services.ts): those its capability names.
        const holder = { cluster: cfg.cluster.name, agentId: cfg.agentId };
        const visible = ownVisibleChains(verifier, capability, holder, { pool, namespace, volumeImage }, this.fsid);
        const chains = await listChains(cluster, pool, namespace, volumeImage);
        return { chains: visible ? chains.filter((c) => visible.has(c.baseImage)) : chains, clusterFsid: this.fsid };
      },
      resumePoint: (header, signal) => resumePoint(sink, header, signal),
    };
    this.#peers = new Peers(cfg.tls, localTarget, this.log, {
      bulk: cfg.transfer.bulk,
      bulkIdleTimeoutMs: cfg.transfer.bulkIdleTimeoutMs,
      revoked,
    });
    const peers = this.#peers;
    const bandwidth = metrics.bandwidth(cfg.limits.bandwidthBytesPerSecond);
    const limiters = agentLimiters({
      agentBytesPerSecond: cfg.limits.bandwidthBytesPerSecond,
      chunkBytes: cfg.limits.chunkSizeBytes,
      onWait: bandwidth.waited,
    });
    const shaping = { zstdLevel: cfg.transfer.zstdLevel, log, meter: metrics.meter, ...limiters };
    const ctx: EngineContext = {
      cluster,
      clusterName: cfg.cluster.name,
      fsid: this.fsid,
      log,
      defaultBackupPool: cfg.backupPool,
      meter: metrics.meter,
      source: {
        chunkSize: cfg.limits.chunkSizeBytes,
        readsInFlight: cfg.limits.readsInFlight,
        maxReadsInFlight: cfg.limits.maxReadsInFlight,
        ...(cfg.testFaults?.corruptChunk ? { corruptChunk: cfg.testFaults.corruptChunk } : {}),
      },
      target: (address, options) => shapedTarget(peers.target(address), options, shaping, address === ""),
      openVolumes: this.#openVolumes,
      sourcePaths: cfg.sourcePaths,
      ...(cfg.testFaults?.growBeforeSnapshotBytes
        ? { growBeforeSnapshotBytes: cfg.testFaults.growBeforeSnapshotBytes }
        : {}),
    };
    const accepting = () => this.state === "serving";
    // Idle chunk buffers kept for reuse follow the configured windows (at their widest: a widened
    // window whose extra buffers were dropped allocated anew and left them to the GC — latency row, peak
    // 168 → 197 MiB), so memory stays bounded by them.
    framePool.maxIdle = cfg.limits.maxReadsInFlight + 2;
    receivePool.maxIdle =
      Math.ceil((cfg.limits.writesInFlight * cfg.limits.maxWindowBytes) / cfg.limits.windowBytes) + 4;
    // ...and once the data plane is quiet, they and glibc's free arenas go back (one role's memory is
    // not carried into the next: a restore after a backup started from 134–184 MiB), the dropped
    // buffers collected first (gc.ts: without it an agent at rest kept 150–193 MiB).
    this.#quiet = new QuietRelease({
      pools: [framePool, receivePool],
      collectGarbage: garbageCollector(),
      releaseNative: releaseFreeMemory,
      log,
    });
    this.#quiet.start();
    // TransferService on its own listener (node:http2, ours); grpc-js serves the rest on `listen`.
    const spent = new SpentCapabilities({ file: path.join(cfg.stateDir, SPENT_CAPABILITIES_FILE), log });
    const here = { fsid: this.fsid, agentId: cfg.agentId };
    const dataPlane = new DataPlaneServer({
      tls: cfg.tls,
      revoked,
      transfer: (messages, signal, caller) =>
        handle(log, "Transfer", async () => {
          const authorized = await authorizeTransfer(verifier, messages, caller, here, audit, spent);
          // Its capability is spent (transfer-authz.ts SpentCapabilities) by a commit, and by a failure
          // that had written into a volume no cleanup restores (a restore over the original, a failback).
          let spend = false;
          try {
            const summary = await receiveTransfer(authorized, signal, "network");
            spend = true;
            return summary;
          } catch (e) {
            spend = overwroteTarget(e);
            throw e;
          } finally {
            if (verifier) spent.end(caller.capability, spend);
          }
        }),
      resumePoint: (req, signal, caller) =>
        handle(log, "ResumePoint", async () => {
          authorizeResumePoint(verifier, req.header, caller, here, audit, spent);
          return resumePoint(sink, req.header, signal);
        }),
      admit: (caller, method) => admitTransferCaller(verifier, caller, audit, method, here, spent),
      listChains: listChainsService(cluster, here, log, { verifier, audit }),
      maxMessageBytes: MAX_MESSAGE_BYTES,
      audit,
      maxConcurrentTransfers: cfg.limits.maxConcurrentTransfers,
      accepting,
      windowBytes: cfg.limits.http2WindowBytes,
      bulk: cfg.transfer.bulk === "auto",
      idleTimeoutMs: cfg.transfer.bulkIdleTimeoutMs,
      keepaliveMs: PEER_KEEPALIVE_MS,
      keepaliveTimeoutMs: PEER_KEEPALIVE_TIMEOUT_MS,
      log,
    });
    this.#dataPlane = dataPlane;
    this.transferAddress = await dataPlane.listen(cfg.transferListen);
    const server = createServer({
      ...peerChannelOptions,
      interceptors: [agentServiceInterceptor({ insecure: cfg.tls.insecure === true, log, audit, revoked })],
    });
    const ops = new AgentOperations(
      ctx,
      accepting,
      metrics,
      commits,
      (where, backupId) => discardHeldInto(sink, where, backupId),
      (jobId) => spent.endJob(jobId),
    );
    server.add(
      AgentServiceDefinition,
      agentService(
        ops,
        { agentId: cfg.agentId, maxConcurrentTransfers: cfg.limits.maxConcurrentTransfers },
        accepting,
        LeaseCheck.fromTls(cfg.tls, { cluster: cfg.cluster.name, agentId: cfg.agentId }, log, audit, revoked),
      ),
    );
    server.add(HealthDefinition, HealthServiceImpl(this.health));
    const [host, portText] = splitHostPort(cfg.listen);
    const port = await server.listen(cfg.listen, serverCredentials(cfg.tls));
    this.#server = server;
    this.address = `${host}:${port || portText}`;
    if (cfg.metricsListen) this.metricsAddress = await metrics.listen(cfg.metricsListen, log);
    this.state = "serving";
    this.health.setStatus("healthy");
    if (cfg.coordinator.addresses.length > 0) {
      this.session = new CoordinatorSession(
        cfg.coordinator.addresses,
        cfg.tls,
        {
          agentId: cfg.agentId,
          clusterName: cfg.cluster.name,
          clusterFsid: this.fsid,
          version: VERSION,
          librbdVersion: libraryVersions().librbd,
          transferAddress: cfg.transferAdvertiseAddress || this.transferAddress,
          capacity: cfg.limits.maxConcurrentJobs,
          defaultBackupPool: cfg.backupPool,
        },
        ops,
        log,
        { dieBeforeOutcome: !!cfg.testFaults?.dieBeforeOutcome },
        {
          revoked,
          // A coordinator refused for its certificate is audited and counted like any refused caller.
          onRevoked: (address, message, identity) =>
            audit.refused({
              identity,
              method: SESSION_METHOD,
              target: address,
              reason: "revoked_certificate",
              message,
              result: "UNAUTHENTICATED",
            }),
        },
      );
      this.session.start();
    }
    log.info("agent serving", {
      version: VERSION,
      address: this.address,
      transferAddress: this.transferAddress,
      cluster: cfg.cluster.name,
      fsid: this.fsid,
      agentId: cfg.agentId,
    });
  }

  /** SIGHUP: the revoked certificates read again, the audit file reopened at its path (log rotation). */
  reload(): void {
    this.reloadRevocations();
    this.#audit?.reopen();
  }

  /**
   * Reads auth.revokedCertificatesFile again (SIGHUP). A bad file keeps the list in force (logged). A
   * session with a coordinator whose certificate is now listed ends, and its reconnects are refused;
   * calls and transfers already running go on to their end (as at the coordinator); every transfer
   * started after it judges its destination with the new list (transfer-authz.ts destinationRefusal).
   */
  reloadRevocations(): void {
    const revoked = this.#revoked;
    if (!revoked?.file) {
      this.log.info("SIGHUP: no auth.revokedCertificatesFile to reload");
      return;
    }
    const kept = "the previous list stays in force";
    const m = { what: "revoked certificates", count: "revoked", kept, file: "revocations" } as const;
    if (!reloadLogged(revoked, this.log, m, this.#reloads)) return;
    const dropped = this.session?.dropRevoked();
    if (dropped?.closed.length) {
      this.log.warn("closed the channels to coordinators whose certificate is revoked", {
        coordinators: dropped.closed,
      });
    }
    if (dropped?.ended) {
      this.log.warn("ended the coordinator session: the coordinator's certificate is revoked", {
        coordinator: dropped.ended.address,
      });
      this.#audit?.record({
        identity: dropped.ended.identity,
        method: SESSION_METHOD,
        target: dropped.ended.address,
        result: "ENDED",
        message: "its certificate was revoked",
      });
    }
  }

  /** Drain, then stop: running calls get `graceSeconds` before they are cancelled. */
  async stop(graceSeconds = this.cfg.shutdownGraceSeconds): Promise<void> {
    if (this.state === "stopped" || this.state === "draining") return;
    this.state = "draining";
    this.health.setStatus("unhealthy");
    // Leased jobs get the same grace as calls, then are cancelled; their outcomes still reach the
    // coordinator (CANCELLED: it retries them elsewhere or reports them).
    this.session?.drain();
    const session = this.session;
    const graceDone = Date.now() + graceSeconds * 1000;
    const server = this.#server;
    const stopGrpc = async () => {
      if (!server) return;
      const timer = setTimeout(() => server.forceShutdown(), graceSeconds * 1000);
      await server.shutdown();
      clearTimeout(timer);
    };
    await Promise.all([stopGrpc(), this.#dataPlane?.shutdown(graceSeconds * 1000)]);
    await session?.stop(Math.max(0, graceDone - Date.now()));
    // Calls cancelled by the shutdown clean up after their call ended: let that finish (bounded).
    if (running.size > 0) {
      this.log.info("waiting for cancelled work to clean up", { operations: running.size });
      await Promise.race([Promise.allSettled([...running]), new Promise((r) => setTimeout(r, CLEANUP_WAIT_MS))]);
    }
    // Listings of snapshots just committed (recent-commits.ts) end before the cluster closes (bounded).
    await this.#commits?.idle(CLEANUP_WAIT_MS);
    // Volumes held for backups that will not come now (open-volumes.ts) close before the cluster does.
    await this.#openVolumes.close();
    if (this.#sweep) clearInterval(this.#sweep);
    this.#quiet?.stop();
    this.#peers?.close();
    await this.#metrics?.close().catch(() => {});
    await this.#cluster?.close().catch(() => {});
    this.#audit?.close();
    this.#releaseStateDir?.();
    this.#releaseStateDir = null;
    this.state = "stopped";
    this.log.info("agent stopped");
  }
}
