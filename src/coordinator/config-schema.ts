/**
 * The coordinator's configuration schema: every field once, with its type, range, default and
 * meaning. `CoordinatorFile` (the checked file, defaults filled in) is derived from it, and so is the
 * published deploy/schema/coordinator.schema.json. Regenerate that file after a change here:
 *
 *   npm run build:ts && node dist/src/coordinator/config-schema.js > deploy/schema/coordinator.schema.json \
 *     && npx biome format --write deploy/schema/coordinator.schema.json
 */
import type { Static } from "@sinclair/typebox";
import {
  block,
  daemonSchema,
  hostPort,
  int,
  type Loaded,
  optionalText,
  schemaFile,
  TlsSchema,
  text,
} from "../common/config/fields";
import type { FlagSpec } from "../common/config/load";

export const SchedulerSchema = block(
  "Job dispatch: leases, retries and limits (scheduler.leaseTtlMs must be at least twice scheduler.heartbeatIntervalMs).",
  {
    leaseTtlMs: int("How long a job's lease lives without a heartbeat, ms.", 1000, 3_600_000, 15_000),
    heartbeatIntervalMs: int("How often agents renew their leases, ms.", 100, 600_000, 3_000),
    idleHeartbeatIntervalMs: int(
      "How often an agent holding no lease sends a heartbeat (it only refreshes the agent's last seen time; HTTP/2 keepalive tells a dead agent), ms (a value below scheduler.heartbeatIntervalMs means that).",
      100,
      600_000,
      30_000,
    ),
    maxAttempts: int("Attempts of a job before it is FAILED.", 1, 100, 3),
    backoffBaseMs: int("Delay before a job's second attempt, ms (doubles each attempt).", 10, 3_600_000, 1_000),
    backoffMaxMs: int("Longest delay between two attempts of a job, ms.", 10, 86_400_000, 60_000),
    perClusterLimit: int("Jobs running at once on one cluster (as source, destination or target).", 1, 1024, 4),
    tickMs: int(
      "How often the scheduler looks again at work that is due but waits on something no event announces (a job held by a limit or a lock), ms; otherwise it sleeps until the next lease expiry, retry or check (at most 30 s).",
      50,
      60_000,
      1_000,
    ),
    fullPoolBackoffMs: int(
      "Delay before retrying a job whose attempt failed RESOURCE_EXHAUSTED (full pool), ms; doubles per attempt, at most 4×.",
      1000,
      86_400_000,
      300_000,
    ),
    leftoverWaitMs: int(
      "Delay before a backup's retry that found the previous attempt's base image still there, ms.",
      1000,
      3_600_000,
      30_000,
    ),
    placementTimeoutMs: int(
      "How long a queued job may wait for an agent of a cluster it needs to connect (a site down) before it fails UNAVAILABLE, ms; 0: without end. Until then it holds its place, and the later jobs of its volume wait behind it.",
      0,
      604_800_000,
      3_600_000,
    ),
    confirmTimeoutMs: int(
      "How long a backup (restore) reported done may wait for an agent of its destination (target) cluster to confirm it, ms.",
      1000,
      86_400_000,
      600_000,
    ),
  },
);

/** The scheduler's settings, every default filled in. */
export type SchedulerSettings = Static<typeof SchedulerSchema>;

export const PolicySchema = block("Protection policies: how often the runner looks for due runs and new images.", {
  tickMs: int(
    "How often the policy runner (and verify runner) look again at work that is due but not done (a run with no agent yet, one to settle), ms; otherwise they sleep until the next run is due (at most 30 s).",
    50,
    60_000,
    1_000,
  ),
  discoveryIntervalMs: int(
    "How often the images of a policy's pool are listed (through an agent of the cluster) to find volumes its selector matches, ms.",
    1000,
    86_400_000,
    60_000,
  ),
  minIntervalSeconds: int(
    "Shortest interval a policy schedule may have, seconds (lower it only for tests).",
    1,
    86_400,
    30,
  ),
});

/** The policy runner's settings, every default filled in. */
export type PolicySettings = Static<typeof PolicySchema>;

export const HaSchema = block(
  "Several coordinators on one PostgreSQL catalog: one leads (a lease in the catalog), the others stand by. Ignored with a SQLite catalog (one coordinator).",
  {
    id: optionalText('This coordinator\'s id among those sharing the catalog; "" = <hostname>:<listen port>.'),
    advertise: hostPort(
      'host:port clients and agents are sent to when this coordinator leads (the rbdbackup-leader trailer); "" = the listen address.',
      "",
      true,
    ),
    leaseSeconds: int(
      "How long the leader's lease lives without a renewal, seconds: a standby takes over at most this long (plus one renewal) after the leader died.",
      2,
      300,
      5,
    ),
    renewMs: int(
      "How often the leader renews its lease and a standby tries to take it, ms (at most a third of leaseSeconds).",
      100,
      60_000,
      1_000,
    ),
  },
);

/** The leadership settings, every default filled in. */
export type HaSettings = Static<typeof HaSchema>;

export const CoordinatorConfigSchema = daemonSchema("rbdbackup coordinator configuration", {
  listen: hostPort(
    "host:port of the gRPC server (BackupService, agent sessions, health, reflection).",
    "127.0.0.1:7300",
  ),
  metricsListen: hostPort(
    'host:port of the Prometheus /metrics endpoint (plain HTTP; keep it on a trusted network); "" = off.',
    "127.0.0.1:9730",
    true,
  ),
  tls: TlsSchema,
  auth: block("How API clients authenticate, and where their calls are recorded.", {
    tokensFile: optionalText(
      'File of API bearer tokens, one "<role> <token>" per line (role: reader, operator or admin; token at least 16 characters; "#" starts a comment); a line without a role is refused at start. Reloaded on SIGHUP (a bad file then keeps the old tokens). "" = API clients need a client certificate.',
    ),
    scopesFile: optionalText(
      'File of API clients\' scopes, one "<client> <scope>…" per line (client: client/<name> of a certificate rbdbackup://client/<role>/<name>, or token/<name> of a named token; scope: where its volumes are, <cluster>, <cluster>/<pool> or <cluster>/<pool>/<namespace>; where its backups may be kept, the same after backups:; or * for everything; "#" starts a comment): each client sees and changes only volumes in its scopes, their backups, jobs and policies, and keeps new backups only in its backups: locations. With a file, a reader or operator it does not list is refused; admins are never scoped. A bad line is refused at start. Reloaded on SIGHUP (a bad file then keeps the scopes in force). "" = nobody is scoped.',
    ),
    revokedCertificatesFile: optionalText(
      'File of revoked client certificates (API clients and agents), one SHA-256 fingerprint per line as `openssl x509 -noout -fingerprint -sha256 -in CERT.pem` prints it (or bare hex; "#" starts a comment): a call presenting one is UNAUTHENTICATED. A bad line is refused at start. Reloaded on SIGHUP (a bad file then keeps the old list). "" = none revoked.',
    ),
    auditLog: optionalText(
      'File the audit log (JSON lines: mutating API calls, agent registrations, refused calls) is appended to; "" = the audit lines go to the log only (they always do, with "audit": true). Reopened at its path on SIGHUP (log rotation).',
    ),
  }),
  catalog: block("The catalog of backups and jobs.", {
    path: text("The SQLite catalog file.", "/var/lib/rbdbackup/coordinator/catalog.sqlite"),
    url: optionalText(
      'PostgreSQL connection string postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE: when set, the catalog is kept there (several coordinators may share it; catalog.path is not used). "" = the SQLite file.',
    ),
    statementTimeoutMs: int(
      "Deadline of one PostgreSQL catalog call, ms (also the server's statement_timeout and idle_in_transaction_session_timeout): past it the call fails UNAVAILABLE and the connection is remade. At most half of ha.leaseSeconds: the call blocks the leader's lease renewal.",
      100,
      600_000,
      2_000,
    ),
    historyDays: int(
      "Days the catalog keeps finished jobs and the records of DELETED backups, counted from their creation; older ones are removed by the leader every 10 min. Kept however old: every backup record still kept and the jobs that name it (the one that made it, its restores, its verifications); FAILED backups; DELETED ones whose delete is unfinished, that a job of the window named, or whose volume has had no backup made in the window by a BACKUP job that ended (unless an agent says the volume's source image is gone). ListJobs, ListBackups of DELETED backups and idempotency keys of older requests reach this far back. 0 = keep everything (the catalog then grows by ~3 rows per backup for good).",
      0,
      36_500,
      90,
    ),
  }),
  scheduler: SchedulerSchema,
  policy: PolicySchema,
  ha: HaSchema,
  shutdownGraceSeconds: int("Seconds to let calls finish on SIGTERM (health says NOT_SERVING meanwhile).", 0, 3600, 10),
  volumePresenceStaleAfterHours: int(
    "Backed-up volumes whose newest backup is older than this are checked every 15 min for their source image, and left out of rbdbackup_last_success_timestamp_seconds once it is gone (deleted on purpose, its backups kept), hours. Keep it below RbdbackupNoRecentBackup's threshold (26 h as shipped), or a deleted volume's alert fires until the check.",
    1,
    8760,
    20,
  ),
});

/** The checked file, every default filled in. */
export type CoordinatorFile = Loaded<typeof CoordinatorConfigSchema>;

/** The coordinator's flags: each overrides one field of the file. */
export const coordinatorFlags: Record<string, FlagSpec> = {
  listen: { path: "listen" },
  "metrics-listen": { path: "metricsListen" },
  catalog: { path: "catalog.path" },
  "tls-ca": { path: "tls.ca" },
  "tls-cert": { path: "tls.cert" },
  "tls-key": { path: "tls.key" },
  insecure: { path: "tls.insecure", kind: "boolean" },
  "tokens-file": { path: "auth.tokensFile" },
  "revoked-certificates-file": { path: "auth.revokedCertificatesFile" },
  "scopes-file": { path: "auth.scopesFile" },
  "per-cluster-limit": { path: "scheduler.perClusterLimit", kind: "number" },
};

if (require.main === module) process.stdout.write(schemaFile(CoordinatorConfigSchema));
