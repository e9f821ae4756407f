/**
 * The coordinator daemon: one per deployment.
 *
 * Owns: the public BackupService (api/), the agents' sessions (session-service.ts, sessions.ts), the
 * scheduler (scheduler/) and the catalog (catalog/). One gRPC server carries them all, with
 * grpc.health.v1 and server reflection, behind the auth interceptor (auth.ts).
 *
 * Lifecycle: starting → serving → draining (SIGTERM: health NOT_SERVING, new sessions and calls
 * refused, running calls get shutdownGraceSeconds) → stopped. Jobs survive a restart in the catalog;
 * agents reconnect by themselves and claim their running leases.
 *
 * Dispatching (scheduler, policy runner, verify runner) belongs to a term (ha/): with a SQLite catalog
 * one term runs from start to stop; with a shared catalog (PostgreSQL) a term runs while this
 * coordinator holds the leader lease, and a standby answers catalog reads only (ha/standby-gate.ts).
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { createServer, type Server } from "nice-grpc";
import { HealthDefinition, HealthServiceImpl, HealthState } from "nice-grpc-server-health";
import { ServerReflection, ServerReflectionService } from "nice-grpc-server-reflection";
import { splitHostPort } from "../common/address";
import { CapabilitySigner } from "../common/capability";
import type { Logger } from "../common/log";
import { type ReloadedFile, ReloadMetrics } from "../common/reload-metrics";
import { reloadLogged } from "../common/reloadable-file";
import { RevocationList } from "../common/revocations";
import { checkSecretFile } from "../common/secret-file";
import { SESSION_MAX_MESSAGE_BYTES } from "../common/session-limits";
import { serverCredentials, tlsFiles } from "../common/tls";
import { VERSION } from "../common/version";
import { BackupServiceDefinition, CoordinatorRole } from "../gen/rbdbackup/v1/backup_service";
import { CoordinatorAgentServiceDefinition } from "../gen/rbdbackup/v1/session";
import { scopeGuard } from "./api/scoped";
import { type ApiDeps, backupService, errorStatus, withDecodeFailures } from "./api/service";
import { auditCalls } from "./api-audit";
import { Audit } from "./audit";
import { authInterceptor } from "./auth";
import type { Catalog } from "./catalog/catalog";
import { openCatalog } from "./catalog/open";
import type { CoordinatorConfig } from "./config";
import { HaControl, identity } from "./ha/control";
import { SchedulerRelay } from "./ha/scheduler-relay";
import { standbyGate } from "./ha/standby-gate";
import { Term } from "./ha/term";
import { historyRemovedCounter } from "./history";
import { Relays } from "./interchange/relays";
import { collectErrorsCounter } from "./metric-guard";
import { CoordinatorMetrics } from "./metrics";
import { PolicyMetrics } from "./policy/metrics";
import type { PolicyRunner } from "./policy/runner";
import type { PolicyVerifyRunner } from "./policy/verify-runner";
import type { Scheduler } from "./scheduler";
import { ScopeStore } from "./scopes";
import { sessionService } from "./session-service";
import { Sessions } from "./sessions";
import { TokenStore } from "./tokens";
import { VerifyMetrics } from "./verify-metrics";
import { VolumePresence } from "./volume-presence";

export type CoordinatorState = "starting" | "serving" | "draining" | "stopped";

export class Coordinator {
  state: CoordinatorState = "starting";
  address = "";
  readonly health = HealthState();
  readonly sessions = new Sessions();
  catalog: Catalog | null = null;
  scheduler: Scheduler | null = null;
  policyRunner: PolicyRunner | null = null;
  verifyRunner: PolicyVerifyRunner | null = null;
  /** Leadership and terms (ha/): the scheduler and runners above are the current term's (null on a standby). */
  ha: HaControl | null = null;
  #server: Server | null = null;
  #metrics: CoordinatorMetrics | null = null;
  #presence: VolumePresence | null = null;
  metricsAddress = "";
  tokens: TokenStore | null = null;
  scopes: ScopeStore | null = null;
  revoked: RevocationList | null = null;
  /** Whether each file SIGHUP reads again took (rbdbackup_config_last_reload_successful). */
  reloads: ReloadMetrics | null = null;
  audit: Audit | null = null;
  readonly #onSighup = () => this.reloadFiles();

  /**
   * SIGHUP: the tokens, scopes and revoked certificates files read again (each bad one keeps its old
   * contents), and the audit log reopened at its path (log rotation).
   */
  reloadFiles(): void {
    this.reloadTokens();
    this.reloadScopes();
    this.reloadRevocations();
    this.audit?.reopen();
  }

  constructor(
    readonly cfg: CoordinatorConfig,
    readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const cfg = this.cfg;
    // Its key signs every capability an agent honours: not a file other users of the host may read.
    if (!cfg.tls.insecure && cfg.tls.key) checkSecretFile(cfg.tls.key, "TLS key");
    const tokens = new TokenStore(cfg.tokensFile);
    this.tokens = tokens;
    const scopes = new ScopeStore(cfg.scopesFile);
    this.scopes = scopes;
    // The CA's curve decides the ECDSA twins a revoked certificate may be presented as (revocations.ts).
    const revoked = new RevocationList(
      cfg.revokedCertificatesFile,
      cfg.tls.insecure || !cfg.tls.ca ? undefined : readFileSync(cfg.tls.ca),
    );
    this.revoked = revoked;
    const reloadable: ReloadedFile[] = [];
    if (cfg.tokensFile) reloadable.push("tokens");
    if (cfg.scopesFile) reloadable.push("scopes");
    if (cfg.revokedCertificatesFile) reloadable.push("revocations");
    this.reloads = new ReloadMetrics(reloadable);
    const audit = new Audit(this.log, cfg.auditLog);
    this.audit = audit;
    if (cfg.tls.insecure && tokens.size === 0)
      this.log.warn("insecure mode without API tokens: anyone who reaches the port can use the API");
    // A catalog file that is not there is made, empty: right at a first start, and a lost history when
    // catalog.path names another file than the one in use (the unit no longer overrides it with --catalog).
    const newCatalog = !cfg.catalogUrl && cfg.catalogPath !== ":memory:" && !existsSync(cfg.catalogPath);
    const opened = openCatalog({
      path: cfg.catalogPath,
      url: cfg.catalogUrl,
      statementTimeoutMs: cfg.catalogStatementTimeoutMs,
    });
    this.catalog = opened;
    if (newCatalog) {
      this.log.warn("no catalog file at catalog.path: made a new, empty one (right at a first start only)", {
        catalog: cfg.catalogPath,
      });
    }
    // Leases carry transfer capabilities signed with the coordinator's own TLS key (none in insecure mode).
    const tls = cfg.tls.insecure ? null : tlsFiles(cfg.tls, "the coordinator");
    const signer = tls ? new CapabilitySigner(tls.cert, tls.key) : undefined;
    // Schedulers and runners live for a term (ha/term.ts); the long-lived parts see the relay.
    const relay = new SchedulerRelay(cfg.scheduler, this.sessions);
    // One counter of failed catalog reads for every catalog-backed metric (metric-guard.ts).
    const collectErrors = collectErrorsCounter();
    const policyMetrics = new PolicyMetrics(
      () => this.policyRunner?.samples() ?? [],
      collectErrors,
      () => opened.policies.allPolicies().map((p) => p.name),
      () => this.policyRunner?.discoveryAges(Date.now()) ?? [],
    );
    const historyRemoved = historyRemovedCounter();
    const ha: HaControl = new HaControl({
      catalog: opened,
      sessions: this.sessions,
      relay,
      log: this.log,
      leaseMs: cfg.ha.leaseSeconds * 1000,
      renewMs: cfg.ha.renewMs,
      newTerm: (catalog) =>
        new Term({
          catalog,
          sessions: this.sessions,
          cfg,
          log: this.log,
          signer,
          policyMetrics,
          historyRemoved,
          leading: (): boolean => ha.leading(),
        }),
      onTerm: (t) => {
        this.scheduler = t?.scheduler ?? null;
        this.policyRunner = t?.policyRunner ?? null;
        this.verifyRunner = t?.verifyRunner ?? null;
      },
    });
    this.ha = ha;
    const catalog = ha.catalog;
    const accepting = () => this.state === "serving";
    // ExportBackup/ImportBackup calls ↔ the agents' ExportData/ImportData (interchange/).
    const relays = new Relays();
    const server = createServer({
      interceptors: [authInterceptor({ insecure: cfg.tls.insecure === true, tokens, audit, revoked })],
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.http2.min_ping_interval_without_data_ms": 5_000,
      // An agent's answer may carry a backup's digest map (session-limits.ts).
      "grpc.max_receive_message_length": SESSION_MAX_MESSAGE_BYTES,
    } as unknown as Parameters<typeof createServer>[0]);
    const self = this;
    const api: ApiDeps = {
      catalog,
      sessions: this.sessions,
      scheduler: relay.surface(),
      log: this.log,
      maxAttempts: cfg.scheduler.maxAttempts,
      get policies() {
        return self.policyRunner ?? undefined;
      },
      policyMinIntervalSeconds: cfg.policy.minIntervalSeconds,
      interchange: { relays, scheduler: relay.surface() },
      coordinatorStatus: () => ha.status(),
    };
    server
      .with(auditCalls(audit))
      .with(errorStatus(this.log, path.dirname(path.resolve(cfg.catalogPath))))
      .with(standbyGate(ha))
      .with(scopeGuard({ ...api, scopes, audit }))
      .add(withDecodeFailures(BackupServiceDefinition), backupService(api));
    server.add(
      CoordinatorAgentServiceDefinition,
      sessionService({
        catalog,
        sessions: this.sessions,
        scheduler: relay,
        leadership: ha,
        log: this.log,
        audit,
        accepting,
        relays,
      }),
    );
    server.add(HealthDefinition, HealthServiceImpl(this.health));
    server.add(
      ServerReflectionService,
      ServerReflection(readFileSync(path.join(__dirname, "../gen/descriptor.bin")), [
        BackupServiceDefinition.fullName,
        CoordinatorAgentServiceDefinition.fullName,
        "grpc.health.v1.Health",
      ]),
    );
    const [host, portText] = splitHostPort(cfg.listen);
    const port = await server.listen(cfg.listen, serverCredentials(cfg.tls, "request"));
    this.#server = server;
    this.address = `${host}:${port || portText}`;
    if (cfg.metricsListen) {
      // Volumes deleted at their source leave the last-success gauge (its alert would fire forever).
      const presence = new VolumePresence({
        staleAfterMs: cfg.volumePresenceStaleAfterHours * 3600_000,
        catalog,
        sessions: this.sessions,
        log: this.log,
        leading: () => ha.leading(),
      });
      this.#presence = presence;
      this.#metrics = new CoordinatorMetrics(VERSION, catalog, this.sessions, relay.surface(), {
        extra: [
          audit.refusals,
          ...this.reloads.all(),
          ...policyMetrics.all(),
          historyRemoved,
          ...new VerifyMetrics(catalog, relay.surface(), () => ha.leading(), collectErrors).all(),
        ],
        leading: () => ha.leading(),
        gone: (v) => presence.isGone(v),
        collectErrors,
      });
      this.metricsAddress = await this.#metrics.listen(cfg.metricsListen, this.log);
      presence.start();
    }
    process.on("SIGHUP", this.#onSighup);
    this.state = "serving";
    ha.start(identity(cfg.ha, this.address));
    this.health.setStatus("healthy");
    this.log.info("coordinator serving", {
      version: VERSION,
      address: this.address,
      metricsAddress: this.metricsAddress,
      catalog: cfg.catalogPath,
      role: CoordinatorRole[ha.role],
    });
  }

  /** SIGHUP: reads the tokens file again; a bad file keeps the tokens in force (and says why in the log). */
  reloadTokens(): void {
    if (!this.tokens) return;
    reloadLogged(
      this.tokens,
      this.log,
      { what: "API tokens", count: "tokens", kept: "the previous tokens stay in force", file: "tokens" },
      this.reloads,
    );
  }

  /** SIGHUP: reads the API scopes file again; a bad file keeps the scopes in force. */
  reloadScopes(): void {
    if (!this.scopes) return;
    reloadLogged(
      this.scopes,
      this.log,
      { what: "API scopes", count: "clients", kept: "the previous scopes stay in force", file: "scopes" },
      this.reloads,
    );
  }

  /** SIGHUP: reads the revoked certificates file again; a bad file keeps the list in force. */
  reloadRevocations(): void {
    const revoked = this.revoked;
    if (!revoked) return;
    const kept = "the previous list stays in force";
    const m = { what: "revoked certificates", count: "revoked", kept, file: "revocations" } as const;
    if (!reloadLogged(revoked, this.log, m, this.reloads)) return;
    // A session opened with a certificate revoked now ends (its agent's reconnect is refused): it would
    // otherwise keep its leases and get new ones for as long as it lasts.
    for (const s of this.sessions.all()) {
      if (!s.certFingerprints.some((fp) => revoked.has(fp))) continue;
      this.audit?.record({
        method: "/rbdbackup.v1.CoordinatorAgentService/Session",
        identity: `agent ${s.agentId} of cluster ${s.cluster}`,
        target: `sha256 ${s.certFingerprint}`,
        result: "ENDED",
        message: "its certificate was revoked",
      });
      s.close("its certificate was revoked");
    }
  }

  async stop(graceSeconds = this.cfg.shutdownGraceSeconds): Promise<void> {
    if (this.state === "stopped" || this.state === "draining") return;
    process.off("SIGHUP", this.#onSighup);
    this.state = "draining";
    this.health.setStatus("unhealthy");
    this.log.info("draining", { graceSeconds });
    // Health answers NOT_SERVING during the grace period (watchers and load balancers see it).
    if (graceSeconds > 0) await new Promise((r) => setTimeout(r, Math.min(graceSeconds, 2) * 1000));
    this.ha?.stop();
    await this.#presence?.stop();
    for (const s of this.sessions.all()) s.close("coordinator stopping");
    const server = this.#server;
    if (server) {
      const timer = setTimeout(() => server.forceShutdown(), graceSeconds * 1000);
      await server.shutdown();
      clearTimeout(timer);
    }
    await this.#metrics?.close().catch(() => {});
    this.catalog?.close();
    this.audit?.close();
    this.state = "stopped";
    this.log.info("coordinator stopped");
  }
}
