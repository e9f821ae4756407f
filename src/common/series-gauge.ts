/**
 * A gauge whose series are all computed at scrape time (one per volume, say): `series()` returns them
 * and they go to the registry as they are. prom-client's Gauge would reset, then hash and validate each
 * label set through `labels().set()` on every scrape — most of a scrape's CPU at 1,000 volumes. The
 * exposition is the same: labels are written in the order of `labelNames` (give each series' labels
 * in that order), values as numbers. Read-only: set/inc/labels are not for this gauge.
 */
import client from "prom-client";

export type Series<T extends string> = { labels: Record<T, string>; value: number };

type Collected<T extends string> = Awaited<ReturnType<client.Gauge<T>["get"]>>;

export class SeriesGauge<T extends string> extends client.Gauge<T> {
  readonly #cfg: { name: string; help: string };
  readonly #series: () => Iterable<Series<T>>;

  constructor(cfg: { name: string; help: string; labelNames: readonly T[] }, series: () => Iterable<Series<T>>) {
    super({ name: cfg.name, help: cfg.help, labelNames: cfg.labelNames, registers: [] });
    this.#cfg = { name: cfg.name, help: cfg.help };
    this.#series = series;
  }

  /** What prom-client's Gauge.get() returns (type "gauge", summed across workers), with `series()` as values. */
  override async get(): Promise<Collected<T>> {
    const { name, help } = this.#cfg;
    return { name, help, type: "gauge", aggregator: "sum", values: [...this.#series()] } as unknown as Collected<T>;
  }
}
