/**
 * PolicyMetrics (src/coordinator/policy/metrics.ts): a policy the runner knows has its counters at 0 from
 * the start (an alert's increase() misses a series born at 1), and a catalog read that fails while the
 * per-volume samples are computed leaves both gauges without series for the scrape — counted — instead
 * of failing the whole scrape (which read as "coordinator down").
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import client from "prom-client";
import { collectErrorsCounter } from "../../../src/coordinator/metric-guard";
import { PolicyMetrics, type VolumeSample } from "../../../src/coordinator/policy/metrics";
import { sample } from "../../helpers/metrics";

function registry(m: PolicyMetrics, extra: client.Metric[] = []): client.Registry {
  const r = new client.Registry();
  for (const x of [...m.all(), ...extra]) r.registerMetric(x);
  return r;
}

const vol = (image: string, state: string, ageSeconds?: number): VolumeSample => ({
  cluster: "site-a",
  pool: "rbd",
  namespace: "",
  image,
  policy: "gold",
  ageSeconds,
  state,
});

describe("PolicyMetrics", () => {
  it("a known policy's counters exist at 0; knowing it again changes nothing", async () => {
    const m = new PolicyMetrics(() => []);
    m.know("gold");
    const text = await registry(m).metrics();
    assert.equal(sample(text, "rbdbackup_policy_missed_runs_total", { policy: "gold" }), 0);
    assert.equal(sample(text, "rbdbackup_policy_retention_deletions_total", { policy: "gold" }), 0);
    m.missedRuns.labels("gold").inc(3);
    m.know("gold");
    assert.equal(sample(await registry(m).metrics(), "rbdbackup_policy_missed_runs_total", { policy: "gold" }), 3);
  });

  it("every stored policy's counters exist at 0 on any coordinator, a standby too (a failover's missed slots then show as an increase); a deleted one's go", async () => {
    let names = ["gold", "silver"];
    const m = new PolicyMetrics(
      () => [],
      undefined,
      () => names,
    );
    const r = registry(m);
    let text = await r.metrics();
    assert.equal(sample(text, "rbdbackup_policy_missed_runs_total", { policy: "gold" }), 0);
    assert.equal(sample(text, "rbdbackup_policy_missed_runs_total", { policy: "silver" }), 0);
    m.missedRuns.labels("gold").inc(60); // a day of missed slots after it took over
    names = ["gold"];
    text = await r.metrics();
    assert.equal(sample(text, "rbdbackup_policy_missed_runs_total", { policy: "gold" }), 60);
    assert.equal(sample(text, "rbdbackup_policy_missed_runs_total", { policy: "silver" }), null, "deleted: gone");
    names = [];
    const failing = new PolicyMetrics(
      () => [],
      undefined,
      () => {
        throw new Error("catalog down");
      },
    );
    assert.doesNotMatch(
      await registry(failing).metrics(),
      /policy=/,
      "a failing read: nothing, and the scrape answers",
    );
  });

  it("the per-volume gauges from the samples; a failing catalog read: no series, counted, the scrape answers", async () => {
    const errors = collectErrorsCounter();
    const m = new PolicyMetrics(() => [vol("v1", "ok", 600), vol("v2", "pending")], errors);
    const ok = await registry(m, [errors]).metrics();
    assert.equal(sample(ok, "rbdbackup_volume_recovery_point_age_seconds", { image: "v1" }), 600);
    assert.equal(sample(ok, "rbdbackup_volumes_protected", { policy: "gold", state: "ok" }), 1);
    assert.equal(sample(ok, "rbdbackup_volumes_protected", { policy: "gold", state: "pending" }), 1);
    // The other states read 0, not absent: a state that empties must read 0 at once (the alerts take the
    // last sample of 2 min to bridge a failover).
    for (const state of ["late", "failing", "paused"])
      assert.equal(sample(ok, "rbdbackup_volumes_protected", { policy: "gold", state }), 0, state);
    const failing = new PolicyMetrics(() => {
      throw new Error("statement timeout (injected)");
    }, errors);
    const bad = await registry(failing, [errors]).metrics();
    assert.equal(sample(bad, "rbdbackup_volume_recovery_point_age_seconds"), null);
    assert.equal(sample(bad, "rbdbackup_volumes_protected"), null);
    for (const metric of ["rbdbackup_volumes_protected", "rbdbackup_volume_recovery_point_age_seconds"])
      assert.equal(sample(bad, "rbdbackup_metrics_collect_errors_total", { metric }), 1, metric);
  });
});
