/**
 * A process's default metrics (src/common/metrics-server.ts): prom-client's process and Node.js series,
 * the event-loop delay sampled every EVENT_LOOP_SAMPLE_MS (not prom-client's 10 ms, a timer 100 times a
 * second), and no gauge whose name ends in _total.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import client from "prom-client";
import { EVENT_LOOP_SAMPLE_MS, registerDefaultMetrics } from "../../../src/common/metrics-server";

describe("registerDefaultMetrics", () => {
  it("keeps the event-loop lag series, drops the _total gauges, samples the loop at most 10 times a second", async () => {
    const r = new client.Registry();
    registerDefaultMetrics(r);
    const names = (await r.getMetricsAsJSON()).map((m) => m.name);
    assert.ok(names.includes("nodejs_eventloop_lag_p99_seconds"));
    assert.ok(names.includes("process_cpu_seconds_total"));
    for (const n of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"])
      assert.ok(!names.includes(n), n);
    assert.ok(EVENT_LOOP_SAMPLE_MS >= 100, "a 10 ms sampler costs ~0.75% of a core in an idle process");
  });
});
