/**
 * The coordinator's Prometheus metrics (one registry per process), served on `metricsListen` at
 * /metrics. Counters follow the scheduler's events; point-in-time gauges (queue, running jobs, agents,
 * last success per volume) are computed in collect() from the catalog and the sessions. Labels stay
 * low-cardinality (operation, result, cause, cluster), but for the per-volume last-success gauge: one
 * series per volume that has an available backup. Agents connect only to the leader (HA), so only the
 * leader reports agents_connected; every coordinator reports whether it leads.
 */
import client from "prom-client";
import type { Logger } from "../common/log";
import { MetricsServer, registerDefaultMetrics } from "../common/metrics-server";
import { SeriesGauge } from "../common/series-gauge";
import { BackupResult, RestoreResult } from "../gen/rbdbackup/v1/agent";
import { JobState } from "../gen/rbdbackup/v1/backup_service";
import type { Catalog } from "./catalog/catalog";
import type { JobRecord } from "./model";
import type { Scheduler } from "./scheduler";
import type { Sessions } from "./sessions";

const STATE_RESULT: Partial<Record<JobState, string>> = {
  [JobState.JOB_STATE_SUCCEEDED]: "succeeded",
  [JobState.JOB_STATE_FAILED]: "failed",
  [JobState.JOB_STATE_CANCELLED]: "cancelled",
};

export class CoordinatorMetrics {
  readonly registry = new client.Registry();
  readonly #http = new MetricsServer(this.registry);

  constructor(
    version: string,
    catalog: Catalog,
    sessions: Sessions,
    scheduler: Pick<Scheduler, "on">,
    /** Metrics kept elsewhere (the audit's refusal counter). */
    extra: client.Metric[] = [],
    /** Whether this coordinator leads now (HA): agents connect only to the leader. */
    leading: () => boolean = () => true,
  ) {
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
    const started = new client.Counter({
      name: "rbdbackup_jobs_started_total",
      help: "Jobs whose first attempt started, by operation (backup, restore, delete).",
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
      buckets: [0.5, 1, 5, 15, 60, 300, 900, 3600, 14400, 86400],
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
      help: "Data bytes sent by succeeded jobs as their agents reported them, by operation.",
      labelNames: ["operation"],
      registers: [r],
    });
    const backupSize = new client.Histogram({
      name: "rbdbackup_backup_data_bytes",
      help: "Data bytes sent per succeeded backup (changed data for an incremental).",
      buckets: [1 << 20, 16 << 20, 128 << 20, 1 << 30, 8 * 2 ** 30, 64 * 2 ** 30, 512 * 2 ** 30],
      registers: [r],
    });
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
      if (op(j) === "backup") {
        const b = BackupResult.fromJSON(j.result);
        dataBytes.labels("backup").inc(b.dataBytesSent);
        backupSize.observe(b.dataBytesSent);
      } else if (op(j) === "restore") {
        dataBytes.labels("restore").inc(RestoreResult.fromJSON(j.result).dataBytesSent);
      }
    });
    new client.Gauge({
      name: "rbdbackup_jobs",
      help: "Jobs not yet finished, by operation and state (queued, running).",
      labelNames: ["operation", "state"],
      registers: [r],
      collect() {
        this.reset();
        for (const o of ["backup", "restore", "delete", "flatten"])
          for (const s of ["queued", "running"]) this.labels(o, s).set(0);
        for (const j of catalog.activeJobs()) {
          this.labels(op(j), j.state === JobState.JOB_STATE_RUNNING ? "running" : "queued").inc();
        }
      },
    });
    new client.Gauge({
      name: "rbdbackup_oldest_queued_job_age_seconds",
      help: "Age of the oldest queued job (0 when none waits): a stuck queue grows it.",
      registers: [r],
      collect() {
        // A loop, not Math.min(...): spread arguments overflow the stack past ~120,000 queued jobs.
        let oldest = Number.POSITIVE_INFINITY;
        for (const j of catalog.activeJobs()) {
          if (j.state === JobState.JOB_STATE_QUEUED && j.createdAt < oldest) oldest = j.createdAt;
        }
        this.set(Number.isFinite(oldest) ? (Date.now() - oldest) / 1000 : 0);
      },
    });
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
      collect() {
        this.reset();
        if (!leading()) return;
        for (const a of catalog.listAgents()) this.labels(a.clusterName).set(0);
        for (const s of sessions.all()) this.labels(s.cluster).inc();
      },
    });
    r.registerMetric(
      new SeriesGauge(
        {
          name: "rbdbackup_last_success_timestamp_seconds",
          help: "When the newest available backup of a volume completed (Unix time), per backed-up volume.",
          labelNames: ["cluster", "pool", "namespace", "image"],
        },
        () =>
          catalog.lastSuccessByVolume().map((v) => ({
            labels: { cluster: v.cluster, pool: v.pool, namespace: v.namespace, image: v.image },
            value: v.at / 1000,
          })),
      ),
    );
  }

  listen(address: string, log: Logger): Promise<string> {
    return this.#http.listen(address, log);
  }

  close(): Promise<void> {
    return this.#http.close();
  }
}
