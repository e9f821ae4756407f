/**
 * Whether the files a daemon reads again on SIGHUP (reloadable-file.ts) took, per file, as Prometheus'
 * own `prometheus_config_last_reload_successful` says it: a refused reload keeps the old contents in
 * force, which `systemctl reload` does not report (it only sends the signal) — a revocation with a typo
 * would otherwise not take effect without anything but a log line saying so. Alert
 * RbdbackupConfigReloadFailed fires on it. Series exist for the files configured, from the start.
 */
import client from "prom-client";

/** The `file` label: which file. */
export type ReloadedFile = "tokens" | "scopes" | "revocations";

export class ReloadMetrics {
  readonly successful = new client.Gauge({
    name: "rbdbackup_config_last_reload_successful",
    help: "1 when the file's last read (at start, or on SIGHUP) took; 0 when a reload was refused and the old contents stay in force.",
    labelNames: ["file"],
    registers: [],
  });
  readonly lastSuccess = new client.Gauge({
    name: "rbdbackup_config_last_reload_success_timestamp_seconds",
    help: "When the file was last read successfully (Unix time).",
    labelNames: ["file"],
    registers: [],
  });

  constructor(
    files: ReloadedFile[],
    private readonly now: () => number = Date.now,
  ) {
    for (const f of files) this.record(f, true);
  }

  record(file: ReloadedFile, ok: boolean): void {
    this.successful.labels(file).set(ok ? 1 : 0);
    if (ok) this.lastSuccess.labels(file).set(this.now() / 1000);
  }

  all(): client.Metric[] {
    return [this.successful, this.lastSuccess];
  }
}
