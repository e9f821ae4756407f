/**
 * A gauge whose series are all computed at scrape time (one per volume, say): `series()` returns them
 * and they go to the registry as they are. prom-client's Gauge would reset, then hash and validate each
 * label set through `labels().set()` on every scrape — most of a scrape's CPU at 1,000 volumes. The
 * exposition is the same: labels are written in the order of `labelNames` (give each series' labels
 * in that order), values as numbers. Read-only: set/inc/labels are not for this gauge.
 *
 * The text exposition (prom-client's `getForPromString` hook) hands each series to the registry with
 * its labels already written into the sample name: escaping five labels of 1,000 series through
 * prom-client's formatLabels was half of a scrape. The registry must have no default labels (it would
 * append them after the written ones); the coordinator's has none. JSON (`get`) is unchanged.
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

  /** The registry's text path: each sample's name carries its written labels (see the module comment). */
  async getForPromString(): Promise<Collected<T>> {
    const { name, help } = this.#cfg;
    const values: Array<{ metricName: string; labels: object; sharedLabels: object; value: number }> = [];
    for (const s of this.#series()) {
      let text = "";
      for (const k in s.labels) text += `${text ? "," : ""}${k}="${escapeLabel(s.labels[k as T])}"`;
      values.push({ metricName: text ? `${name}{${text}}` : name, labels: NONE, sharedLabels: NONE, value: s.value });
    }
    return { name, help, type: "gauge", aggregator: "sum", values } as unknown as Collected<T>;
  }
}

/** Shared empty label sets (prom-client caches a shared set's text by identity). */
const NONE = Object.freeze({});

/** prom-client's escaping of a label value (backslash, newline, double quote), skipped when none occurs. */
function escapeLabel(v: string): string {
  if (!/[\\\n"]/.test(v)) return v;
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}
