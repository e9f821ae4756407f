/**
 * The coordinator's Prometheus metrics (one registry per process), served on `metricsListen` at
 * /metrics. Counters follow the scheduler's events; point-in-time gauges (queue, running jobs, agents,
 * last success per volume) are computed in collect() from the catalog and the sessions. Labels stay
 * low-cardinality (operation, result, cause, cluster), but for the per-volume last-success gauge: one
 * series per volume that has an available backup. Only the leader reports what it computes from the
 * catalog or its sessions (agents connect to the leader only; a standby's copies of catalog gauges
 * would double every sum and page once per coordinator); every coordinator reports whether it leads.
 * Counters an alert takes increase() of start at 0 for every operation and result; a catalog read
 * that fails in a scrape drops that metric for the scrape and counts in
 * rbdbackup_metrics_collect_errors_total instead of failing the scrape.
 */
import client from "prom-client";
import type { Logger } from "../common/log";
import { MetricsServer, registerDefaultMetrics } from "../common/metrics-server";
import { SeriesGauge } from "../common/series-gauge";
import { BackupResult, RestoreResult } from "../gen/rbdbackup/v1/agent";
import { JobState } from "../gen/rbdbackup/v1/backup_service";
import type { Catalog } from "./catalog/catalog";
import { type CollectErrors, collectErrorsCounter, guarded, guardedList } from "./metric-guard";
import type { JobRecord } from "./model";
import { type Scheduler, TRANSIENT_NAMES } from "./scheduler";
import type { Sessions } from "./sessions";

const STATE_RESULT: Partial<Record<JobState, string>> = {
  [JobState.JOB_STATE_SUCCEEDED]: "succeeded",
  [JobState.JOB_STATE_FAILED]: "failed",
  [JobState.JOB_STATE_CANCELLED]: "cancelled",
};

/** Every job operation (the `operation` label's values). */
export const OPERATIONS: ReadonlyArray<JobRecord["operation"]["kind"]> = [
  "backup",
  "restore",
  "delete",
  "flatten",
  "verify",
  "export",
  "import",
];

export interface CoordinatorMetricsOptions {
  /** Metrics kept elsewhere (the audit's refusal counter, the policies', the verifications'). */
  extra?: client.Metric[];
  /** Whether this coordinator leads now (HA): agents connect only to the leader. */
  leading?: () => boolean;
  /** A backed-up volume whose source no longer exists (volume-presence.ts): no last-success series. */
  gone?: (v: { cluster: string; pool: string; namespace: string; image: string }) => boolean;
  /** The collect-errors counter the `extra` metrics count in too (metric-guard.ts); made here when absent. */
  collectErrors?: CollectErrors;
}

export class CoordinatorMetrics {
  readonly registry = new client.Registry();
  readonly #http = new MetricsServer(this.registry);

  constructor(
    version: string,
    catalog: Catalog,
    sessions: Sessions,
    scheduler: Pick<Scheduler, "on">,
    opts: CoordinatorMetricsOptions = {},
  ) {
    const { extra = [], leading = () => true, gone = () => false } = opts;
    const r = this.registry;
    registerDefaultMetrics(r);
    for (const m of extra) r.registerMetric(m);
    new client.Gauge({
      name: "rbdbackup_build_info",
      help: "Build of this coordinator (always 1).",
      labelNames: ["version", "role"],
      registers: [r],
    })
      .labels(version, "coordinator")
      .set(1);
    // Registered last (below): a scrape reads metrics in order, so the errors of this scrape show in it.
    const collectErrors = opts.collectErrors ?? collectErrorsCounter();
    const started = new client.Counter({
      name: "rbdbackup_jobs_started_total",
      help: "Jobs whose first attempt started, by operation (backup, restore, delete, flatten, verify, export, import).",
      labelNames: ["operation"],
      registers: [r],
    });
    const finished = new client.Counter({
      name: "rbdbackup_jobs_finished_total",
      help: "Jobs that reached a final state, by operation and result (succeeded, failed, cancelled).",
      labelNames: ["operation", "result"],
      registers: [r],
    });
    const duration = new client.Histogram({
      name: "rbdbackup_job_duration_seconds",
      help: "Time from a job's creation to its final state, by operation and result.",
      labelNames: ["operation", "result"],
      buckets: [0.5, 1, 5, 15, 60, 300, 900, 3600, 14400, 43200, 86400, 259200],
      registers: [r],
    });
    const attempts = new client.Counter({
      name: "rbdbackup_job_attempts_total",
      help: "Attempts leased to agents, by operation.",
      labelNames: ["operation"],
      registers: [r],
    });
    const retries = new client.Counter({
      name: "rbdbackup_job_retries_total",
      help: "Attempts that failed transiently and were queued again, by operation and cause (a gRPC status name).",
      labelNames: ["operation", "cause"],
      registers: [r],
    });
    const expirations = new client.Counter({
      name: "rbdbackup_lease_expirations_total",
      help: "Leases that expired (their agent stopped reporting), by operation.",
      labelNames: ["operation"],
      registers: [r],
    });
    const dataBytes = new client.Counter({
      name: "rbdbackup_job_data_bytes_total",
      help: "Data bytes sent by succeeded backup and restore jobs as their agents reported them, by operation.",
      labelNames: ["operation"],
      registers: [r],
    });
    const backupSize = new client.Histogram({
      name: "rbdbackup_backup_data_bytes",
      help: "Data bytes sent per succeeded backup (changed data for an incremental).",
      buckets: [1 << 20, 16 << 20, 128 << 20, 1 << 30, 8 * 2 ** 30, 64 * 2 ** 30, 512 * 2 ** 30],
      registers: [r],
    });
    // Every series an alert takes increase() of exists from the start at 0: a series born at 1 (the first
    // failure after a restart) reads as no increase at all.
    for (const o of OPERATIONS) {
      for (const c of [started, attempts, expirations]) c.labels(o).inc(0);
      for (const cause of TRANSIENT_NAMES) retries.labels(o, cause).inc(0);
      for (const res of Object.values(STATE_RESULT)) finished.labels(o, res as string).inc(0);
    }
    for (const o of ["backup", "restore"]) dataBytes.labels(o).inc(0);
    // The full backups the coordinator forced (a chain with a CORRUPT backup, a volume that outgrew its
    // chain's digest map): the agent leased as FULL counts nothing (it was given FULL), so they are counted
    // here, under the agents' metric name; the agents count the ones they decide.
    const forcedFull = new client.Counter({
      name: "rbdbackup_forced_full_backups_total",
      help: "Backups made in full although an incremental was allowed, by reason (the coordinator's: corrupt_chain, chain_grown; the agents' others).",
      labelNames: ["reason"],
      registers: [r],
    });
    for (const reason of ["corrupt_chain", "chain_grown"]) forcedFull.labels(reason).inc(0);
    const op = (j: JobRecord) => j.operation.kind;
    scheduler.on("attempt", (j) => {
      attempts.labels(op(j)).inc();
      if (j.attempts === 1) started.labels(op(j)).inc();
    });
    scheduler.on("retry", (j, cause) => retries.labels(op(j), cause).inc());
    scheduler.on("leaseExpired", (j) => expirations.labels(op(j)).inc());
    scheduler.on("finished", (j) => {
      const result = STATE_RESULT[j.state as JobState] ?? "unknown";
      finished.labels(op(j), result).inc();
      duration.labels(op(j), result).observe(Math.max(0, (j.finishedAt - j.createdAt) / 1000));
      if (j.state !== JobState.JOB_STATE_SUCCEEDED || !j.result) return;
      if (j.operation.kind === "backup") {
        const b = BackupResult.fromJSON(j.result);
        dataBytes.labels("backup").inc(b.dataBytesSent);
        backupSize.observe(b.dataBytesSent);
        const forced = j.operation.forcedFull ?? "";
        if (forced && !b.forcedFullReason)
          forcedFull.labels(/ is CORRUPT/.test(forced) ? "corrupt_chain" : "chain_grown").inc();
      } else if (op(j) === "restore") {
        dataBytes.labels("restore").inc(RestoreResult.fromJSON(j.result).dataBytesSent);
      }
    });
    new client.Gauge({
      name: "rbdbackup_jobs",
      help: "Jobs not yet finished, by operation and state (queued, running).",
      labelNames: ["operation", "state"],
      registers: [r],
      // The leader's only: standbys read the same catalog, and their copies would double every sum and
      // page once per coordinator.
      collect: guarded("rbdbackup_jobs", collectErrors, (g) => {
        if (!leading()) return;
        for (const o of OPERATIONS) for (const s of ["queued", "running"]) g.labels(o, s).set(0);
        for (const j of catalog.activeJobs()) {
          g.labels(op(j), j.state === JobState.JOB_STATE_RUNNING ? "running" : "queued").inc();
        }
      }),
    });
    // A SeriesGauge, not a Gauge: prom-client's reset() of a gauge without labels puts its series back
    // at 0, so a standby, or a scrape whose catalog read failed, said "0 s, nothing stuck" instead of
    // having no series.
    r.registerMetric(
      new SeriesGauge(
        {
          name: "rbdbackup_oldest_queued_job_age_seconds",
          help: "How long the oldest queued job has been able to run (since its creation, or since its retry backoff ended; 0 when none waits): a stuck queue grows it. Leader only.",
          labelNames: [],
        },
        guardedList("rbdbackup_oldest_queued_job_age_seconds", collectErrors, () => {
          if (!leading()) return [];
          // A loop, not Math.min(...): spread arguments overflow the stack past ~120,000 queued jobs.
          // A job waiting out its retry backoff (a full pool waits up to 20 min) is not stuck: its wait
          // counts from when it may run again.
          const now = Date.now();
          let oldest = Number.POSITIVE_INFINITY;
          for (const j of catalog.activeJobs()) {
            if (j.state !== JobState.JOB_STATE_QUEUED) continue;
            const since = Math.max(j.createdAt, j.nextAttemptAt || 0);
            if (since <= now && since < oldest) oldest = since;
          }
          return [{ labels: {}, value: Number.isFinite(oldest) ? (now - oldest) / 1000 : 0 }];
        }),
      ),
    );
    new client.Gauge({
      name: "rbdbackup_coordinator_leading",
      help: "1 while this coordinator leads (a single coordinator always does), 0 while it is a standby.",
      registers: [r],
      collect() {
        this.set(leading() ? 1 : 0);
      },
    });
    new client.Gauge({
      name: "rbdbackup_agents_connected",
      help:
        "Agents connected to this coordinator, by cluster (0 for a known cluster with none). Only the leader " +
        "reports it: a standby has no agents by design, and reporting 0 there would say every cluster has none.",
      labelNames: ["cluster"],
      registers: [r],
      collect: guarded("rbdbackup_agents_connected", collectErrors, (g) => {
        if (!leading()) return;
        for (const a of catalog.listAgents()) g.labels(a.clusterName).set(0);
        for (const s of sessions.all()) g.labels(s.cluster).inc();
      }),
    });
    r.registerMetric(
      new SeriesGauge(
        {
          name: "rbdbackup_last_success_timestamp_seconds",
          help: "When the newest available backup of a volume completed (Unix time), per backed-up volume whose source volume still exists (the leader checks volumes without a backup for 20 h every 15 min).",
          labelNames: ["cluster", "pool", "namespace", "image"],
        },
        guardedList("rbdbackup_last_success_timestamp_seconds", collectErrors, () => {
          if (!leading()) return [];
          return catalog
            .lastSuccessByVolume()
            .filter((v) => !gone(v))
            .map((v) => ({
              labels: { cluster: v.cluster, pool: v.pool, namespace: v.namespace, image: v.image },
              value: v.at / 1000,
            }));
        }),
      ),
    );
    r.registerMetric(collectErrors);
  }

  listen(address: string, log: Logger): Promise<string> {
    return this.#http.listen(address, log);
  }

  close(): Promise<void> {
    return this.#http.close();
  }
}
