/**
 * The agent's Prometheus metrics (one registry per process), served on `metricsListen` at /metrics.
 * Names follow Prometheus practice: prefix rbdbackup_, base units, counters end in _total; labels
 * stay low-cardinality (cluster, pool, operation, result, role) — never a job, backup or image id.
 */
import client from "prom-client";
import type { Logger } from "../../src/common/log";
import { MetricsServer, registerDefaultMetrics } from "../../src/common/metrics-server";
import {
  AGENT_SERVICE,
  REFUSAL_REASONS,
  type RefusalReason,
  SESSION_SERVICE,
  TRANSFER_SERVICE,
} from "../transfer/authz-audit";
import type { TransferMeter } from "../transfer/meter";
import type { LimiterKind } from "../transfer/shaping/rate-limit";

/** A forced full backup's reason text → its label (AgentMetrics.reasonLabel; "other" when none matches). */
const FORCED_FULL_REASONS: ReadonlyArray<[RegExp, string]> = [
  [/no earlier backup/, "no_previous_backup"],
  [/no backup snapshot left/, "source_snapshot_gone"],
  [/no backup snapshot exists on both/, "no_common_snapshot"],
  [/diff .*failed/, "diff_failed"],
  [/file or block device/, "non_rbd_source"],
];

export class AgentMetrics {
  readonly registry = new client.Registry();
  readonly meter: TransferMeter;
  readonly operations: client.Counter<"operation" | "result">;
  readonly operationSeconds: client.Histogram<"operation">;
  readonly forcedFull: client.Counter<"reason">;
  /** Refused AgentService/TransferService callers (the coordinator's metric name, src/coordinator/audit.ts). */
  readonly refusals: client.Counter<"service" | "reason">;
  #crcFailures: client.Counter<"pool"> | undefined;
  readonly #http = new MetricsServer(this.registry);
  #inflight = 0;

  constructor(
    readonly cluster: string,
    version: string,
    librbd: string,
  ) {
    const r = this.registry;
    r.setDefaultLabels({ cluster });
    registerDefaultMetrics(r);
    new client.Gauge({
      name: "rbdbackup_build_info",
      help: "Build of this agent (always 1).",
      labelNames: ["version", "librbd", "role"],
      registers: [r],
    })
      .labels(version, librbd, "agent")
      .set(1);
    this.operations = new client.Counter({
      name: "rbdbackup_agent_operations_total",
      help: "Operations this agent ran, by operation (backup, restore, delete, flatten, verify, export, import) and result (ok or a gRPC status name).",
      labelNames: ["operation", "result"],
      registers: [r],
    });
    this.operationSeconds = new client.Histogram({
      name: "rbdbackup_agent_operation_duration_seconds",
      help: "Wall time of operations this agent ran.",
      labelNames: ["operation"],
      buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400, 43200, 86400],
      registers: [r],
    });
    this.forcedFull = new client.Counter({
      name: "rbdbackup_forced_full_backups_total",
      help: "Backups made in full although an incremental was allowed, by reason.",
      labelNames: ["reason"],
      registers: [r],
    });
    // At 0 from the start, as the dashboard takes increase() of them (a series born at 1 reads as none).
    for (const reason of [...FORCED_FULL_REASONS.map(([, label]) => label), "other"])
      this.forcedFull.labels(reason).inc(0);
    this.refusals = new client.Counter({
      name: "rbdbackup_authorization_refusals_total",
      help: "Calls refused by authorization, by service and reason (revoked_certificate, no_identity, wrong_kind, no_capability, bad_capability, identity_mismatch, not_covered); service rbdbackup.v1.CoordinatorAgentService: a coordinator refused for its revoked certificate.",
      labelNames: ["service", "reason"],
      registers: [r],
    });
    const bytes = (name: string, help: string) =>
      new client.Counter({ name, help, labelNames: ["pool"], registers: [r] });
    const readBytes = bytes(
      "rbdbackup_source_read_bytes_total",
      "Bytes read from volumes (or files) by transfers this agent sourced.",
    );
    const sentBytes = bytes(
      "rbdbackup_sent_bytes_total",
      "Data bytes sent in chunks by transfers this agent sourced, before wire compression (rbdbackup_agent_transfer_wire_bytes_total has what compressed transfers put on the wire).",
    );
    const zeroBytes = bytes("rbdbackup_zero_range_bytes_total", "Bytes sent as zero ranges (not on the wire).");
    const zeroRanges = new client.Counter({
      name: "rbdbackup_zero_ranges_total",
      help: "Zero ranges sent.",
      labelNames: ["pool"],
      registers: [r],
    });
    const chunksSent = new client.Counter({
      name: "rbdbackup_chunks_sent_total",
      help: "Data chunks sent.",
      labelNames: ["pool"],
      registers: [r],
    });
    const recvBytes = bytes(
      "rbdbackup_received_bytes_total",
      "Data bytes received and verified by this agent as a destination.",
    );
    const writtenBytes = bytes(
      "rbdbackup_written_bytes_total",
      "Bytes written to RBD images by this agent as a destination.",
    );
    const crcFailures = new client.Counter({
      name: "rbdbackup_checksum_failures_total",
      help: "Chunks whose checksum did not match, or that did not decompress (corrupted in transit; never written).",
      labelNames: ["pool"],
      registers: [r],
    });
    this.#crcFailures = crcFailures;
    // Series alerts take increase() of exist at 0 from the start (a series born at 1 reads as no increase):
    // the refusals by service and reason; the checksum failures of the backup pool (knownPool()).
    for (const service of [AGENT_SERVICE, TRANSFER_SERVICE])
      for (const reason of REFUSAL_REASONS) this.refusals.labels(service, reason).inc(0);
    this.refusals.labels(SESSION_SERVICE, "revoked_certificate").inc(0);
    const compression = (name: string, help: string) =>
      new client.Counter({ name, help, labelNames: ["direction", "algorithm"], registers: [r] });
    const rawBytes = compression(
      "rbdbackup_agent_transfer_raw_bytes_total",
      "Data bytes of compressed transfers before compression, by direction (sent, received) and algorithm (zstd, lz4).",
    );
    const wireBytes = compression(
      "rbdbackup_agent_transfer_wire_bytes_total",
      "Data bytes of compressed transfers as they went on the wire (a chunk compression did not shrink counts as it was), by direction and algorithm.",
    );
    const ioSeconds = new client.Histogram({
      name: "rbdbackup_librbd_io_duration_seconds",
      help: "Latency of librbd aio operations issued by transfers.",
      labelNames: ["op"],
      // Up to 2 min: Ceph's slow requests (30 s and more) must show, not flatten at the top bucket.
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 10, 30, 60, 120],
      registers: [r],
    });
    const self = this;
    new client.Gauge({
      name: "rbdbackup_librbd_io_in_flight",
      help: "librbd aio operations in flight for transfers.",
      registers: [r],
      collect() {
        this.set(self.#inflight);
      },
    });
    this.meter = {
      read: (pool, n) => readBytes.labels(pool).inc(n),
      sent: (pool, n) => {
        sentBytes.labels(pool).inc(n);
        chunksSent.labels(pool).inc();
      },
      zeroRange: (pool, n) => {
        zeroRanges.labels(pool).inc();
        zeroBytes.labels(pool).inc(n);
      },
      received: (pool, n) => recvBytes.labels(pool).inc(n),
      written: (pool, n) => writtenBytes.labels(pool).inc(n),
      checksumFailure: (pool) => crcFailures.labels(pool).inc(),
      receiving: (pool) => crcFailures.labels(pool).inc(0),
      compression: (direction, algorithm, raw, wire) => {
        rawBytes.labels(direction, algorithm).inc(raw);
        wireBytes.labels(direction, algorithm).inc(wire);
      },
      io: (op, s) => ioSeconds.labels(op).observe(s),
      ioStarted: () => {
        this.#inflight++;
      },
      ioFinished: () => {
        this.#inflight--;
      },
    };
  }

  /**
   * A pool this agent writes backups into (its default backup pool): its checksum-failure series exists
   * at 0 from the start, so the first corrupt chunk counts as an increase.
   */
  knownPool(pool: string): void {
    if (pool) this.#crcFailures?.labels(pool).inc(0);
  }

  /** Counts one refused call (AuthzAudit's counter). */
  refused(service: string, reason: RefusalReason): void {
    this.refusals.labels(service, reason).inc();
  }

  // ── Bandwidth caps (agents/transfer/shaping/rate-limit.ts) ──────────────────────────────────────
  /** Registers the caps' metrics (once, at start): seconds waited per bucket kind, the agent's cap. */
  bandwidth(agentBytesPerSecond: number): { waited(limiter: LimiterKind, seconds: number): void } {
    const wait = new client.Counter({
      name: "rbdbackup_agent_bandwidth_wait_seconds_total",
      help: "Seconds transfers this agent sourced waited on a bandwidth cap, by limiter (agent: limits.bandwidthBytesPerSecond; job: TransferOptions.bandwidth_limit_bytes_per_second).",
      labelNames: ["limiter"],
      registers: [this.registry],
    });
    for (const l of ["agent", "job"]) wait.labels(l).inc(0);
    new client.Gauge({
      name: "rbdbackup_agent_bandwidth_limit_bytes_per_second",
      help: "This agent's cap on the bytes per second all its transfers send together (limits.bandwidthBytesPerSecond; 0 = none).",
      registers: [this.registry],
    }).set(agentBytesPerSecond);
    return { waited: (limiter, seconds) => wait.labels(limiter).inc(seconds) };
  }

  /** Classifies a forced-full reason into a low-cardinality label. */
  static reasonLabel(reason: string): string {
    return FORCED_FULL_REASONS.find(([re]) => re.test(reason))?.[1] ?? "other";
  }

  /** Serves /metrics on host:port (port 0 picks one); resolves with the address. */
  listen(address: string, log: Logger): Promise<string> {
    return this.#http.listen(address, log);
  }

  close(): Promise<void> {
    return this.#http.close();
  }
}
