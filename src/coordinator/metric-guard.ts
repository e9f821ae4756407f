/**
 * Catalog-backed metrics fail alone: a collect() whose catalog read fails (a database blip, a statement
 * timeout) leaves that metric without series for this scrape and counts the failure in
 * `rbdbackup_metrics_collect_errors_total{metric}` — the rest of the scrape (the role, the process, the
 * counters) still answers, so `up` does not drop and page "coordinator down". One counter per
 * coordinator, shared by every metric that reads the catalog (metrics.ts, verify-metrics.ts).
 */
import client from "prom-client";

export type CollectErrors = client.Counter<"metric">;

/** The counter (registered by CoordinatorMetrics, last, so a scrape's own errors show in it). */
export function collectErrorsCounter(): CollectErrors {
  return new client.Counter({
    name: "rbdbackup_metrics_collect_errors_total",
    help: "Scrapes in which a catalog-backed metric could not be read (it had no series in that scrape), by metric.",
    labelNames: ["metric"],
    registers: [],
  });
}

/** A Gauge's collect() around `body`: reset, then body; a throw leaves no series and is counted. */
export function guarded<T extends client.Gauge<string>>(
  name: string,
  errors: CollectErrors,
  body: (g: T) => void,
): (this: T) => void {
  errors.labels(name).inc(0); // the series exists from the start (an alert's increase() misses one born at 1)
  return function (this: T) {
    this.reset();
    try {
      body(this);
    } catch {
      this.reset();
      errors.labels(name).inc();
    }
  };
}

/** The same for a computed list of samples (SeriesGauge): a throw is counted and yields none. */
export function guardedList<T>(name: string, errors: CollectErrors, body: () => T[]): () => T[] {
  errors.labels(name).inc(0);
  return () => {
    try {
      return body();
    } catch {
      errors.labels(name).inc();
      return [];
    }
  };
}
