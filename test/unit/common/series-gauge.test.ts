/**
 * SeriesGauge (src/common/series-gauge.ts): its exposition is byte-identical to a prom-client Gauge
 * given the same series through labels().set(), and each scrape shows exactly the series of that scrape.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import client from "prom-client";
import { type Series, SeriesGauge } from "../../../src/common/series-gauge";

type L = "cluster" | "pool" | "namespace" | "image";
const cfg = {
  name: "t_last_success_seconds",
  help: "When, per volume.",
  labelNames: ["cluster", "pool", "namespace", "image"] as L[],
};

describe("SeriesGauge", () => {
  it("exposes the same text as a Gauge set label by label; a scrape shows only its own series", async () => {
    let series: Series<L>[] = [
      { labels: { cluster: "a", pool: "rbd", namespace: "", image: 'v"1\\x' }, value: 1.5 },
      { labels: { cluster: "a", pool: "rbd", namespace: "ns", image: "v2" }, value: 1_733_000_000.25 },
    ];
    const plain = new client.Gauge({
      ...cfg,
      registers: [],
      collect() {
        this.reset();
        for (const s of series) this.labels(s.labels).set(s.value);
      },
    });
    const viaGauge = new client.Registry();
    viaGauge.registerMetric(plain);
    const viaSeries = new client.Registry();
    viaSeries.registerMetric(new SeriesGauge(cfg, () => series));
    assert.equal(await viaSeries.metrics(), await viaGauge.metrics());
    assert.deepEqual(await viaSeries.getMetricsAsJSON(), await viaGauge.getMetricsAsJSON());
    series = [{ labels: { cluster: "b", pool: "p", namespace: "", image: "w" }, value: 0 }];
    const text = await viaSeries.metrics();
    assert.equal(text, await viaGauge.metrics());
    assert.ok(!text.includes('cluster="a"'), text);
  });
});
