/** Live progress: the rate is an exponential moving average; reports of stale attempts are dropped. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { nextProgress } from "../../../src/coordinator/scheduler/progress";
import { Harness, vol } from "./harness";

const report = (bytesDone: number) => ({
  jobId: "j",
  token: "t",
  phase: "copy",
  bytesDone,
  bytesTotal: 1000,
  bytesTransferred: bytesDone,
});

describe("progress", () => {
  it("the first rate is the instant one; later ones weigh the newest at 0.3", async () => {
    const p1 = nextProgress(undefined, report(0), 1_000);
    assert.equal(p1.rateBytesPerSecond, 0);
    const p2 = nextProgress(p1, report(100), 2_000);
    assert.equal(p2.rateBytesPerSecond, 100);
    const p3 = nextProgress(p2, report(400), 3_000);
    assert.equal(p3.rateBytesPerSecond, 0.7 * 100 + 0.3 * 300);
    assert.equal(p3.at, 3_000);
  });

  it("a report at the same instant or going backwards keeps the rate", async () => {
    const p = nextProgress(nextProgress(undefined, report(0), 1_000), report(100), 2_000);
    assert.equal(nextProgress(p, report(200), 2_000).rateBytesPerSecond, 100);
    assert.equal(nextProgress(p, report(50), 3_000).rateBytesPerSecond, 100);
  });

  it("the scheduler keeps progress of the current attempt only, and drops it when the job ends", async () => {
    const h = new Harness();
    try {
      const a1 = h.connect("a1", "a");
      h.connect("b1", "b");
      const j = h.queueBackup(vol("v1"));
      h.tick();
      const events: string[] = [];
      h.scheduler.on("progress", (id) => events.push(id));
      h.scheduler.onProgress(a1, { ...report(10), jobId: j.id, token: "stale" });
      assert.equal(h.scheduler.progress.has(j.id), false);
      h.scheduler.onProgress(a1, { ...report(10), jobId: j.id, token: a1.lease(j.id).token });
      assert.equal(h.scheduler.progress.get(j.id)?.bytesDone, 10);
      assert.deepEqual(events, [j.id]);
      await h.backupDone(a1, j);
      assert.equal(h.scheduler.progress.has(j.id), false);
    } finally {
      h.close();
    }
  });
});
