/**
 * The agent's counters that dashboards and alerts take increase() of exist at 0 from the start (a series
 * born at 1, the first event after a restart, reads as no increase).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AgentMetrics } from "../../../agents/agent/metrics";
import { sample } from "../../helpers/metrics";

describe("agent counters", () => {
  it("forced full backups by reason exist at 0 from the start, and every reason an agent gives is among them", async () => {
    const m = new AgentMetrics("site-a", "test", "test");
    const text = await m.registry.metrics();
    const reasons = [
      "no earlier backup",
      "no backup snapshot left on the volume",
      "no backup snapshot exists on both",
      "the diff from x failed",
      "a file or block device source",
      "something else",
    ].map((r) => AgentMetrics.reasonLabel(r));
    for (const reason of reasons)
      assert.equal(sample(text, "rbdbackup_forced_full_backups_total", { reason }), 0, reason);
  });
});
