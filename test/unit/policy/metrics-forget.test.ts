/** A deleted policy's metric series go with it (src/coordinator/policy/metrics.ts PolicyMetrics.forget). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PolicyMetrics } from "../../../src/coordinator/policy/metrics";

describe("PolicyMetrics.forget", () => {
  it("removes the policy's missed runs, retention deletions and run durations; another policy's stay", async () => {
    const m = new PolicyMetrics(() => []);
    for (const p of ["gold", "silver"]) {
      m.missedRuns.labels(p).inc(2);
      m.retentionDeletions.labels(p).inc();
      m.runDuration.labels(p, "succeeded").observe(10);
      m.runDuration.labels(p, "failed").observe(20);
    }
    m.forget("gold");
    const policies = async (metric: { get(): Promise<{ values: Array<{ labels: Record<string, unknown> }> }> }) =>
      [...new Set((await metric.get()).values.map((v) => v.labels.policy))].sort();
    assert.deepEqual(await policies(m.missedRuns), ["silver"]);
    assert.deepEqual(await policies(m.retentionDeletions), ["silver"]);
    assert.deepEqual(await policies(m.runDuration), ["silver"]);
  });
});
