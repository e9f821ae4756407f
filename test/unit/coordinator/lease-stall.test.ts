/**
 * The coordinator's own stalls do not expire healthy leases (src/coordinator/scheduler/stall-watch.ts):
 * heartbeats wait unread in the sockets while its thread is held, and the first pass after it would
 * have failed attempts whose agents never stopped reporting. The watch runs on a monotonic clock of
 * its own (faked here, as the scheduler's epoch clock is); a stall's time is given back to every running
 * lease once, and a lease whose agent then stays silent still expires. No Ceph, no gRPC.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import { StallWatch } from "../../../src/coordinator/scheduler/stall-watch";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { Harness, vol } from "./harness";

describe("StallWatch", () => {
  it("a look later than its period by the threshold or more is a stall, counted once", () => {
    let mono = 1_000;
    const w = new StallWatch(() => mono, 500, 2_000);
    mono += 500;
    assert.equal(w.take(), 0, "on time");
    mono += 2_400;
    assert.equal(w.take(), 0, "1.9 s late: below the threshold");
    mono += 12_500;
    assert.equal(w.take(), 12_000, "12 s beyond the period");
    mono += 100;
    assert.equal(w.take(), 0, "counted once");
  });
});

describe("leases across a stall of the coordinator", () => {
  let mono = 0;
  let h: Harness;
  beforeEach(() => {
    mono = 0;
    h = new Harness({}, new SqliteCatalog(":memory:"), undefined, new StallWatch(() => mono, 500, 2_000));
    h.connect("a1", "a");
    h.connect("b1", "b");
  });
  afterEach(() => h.close());

  it("a pass right after a stall longer than the lease gives the stall back: the attempt runs on", () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_RUNNING);
    // The thread was held past the lease's expiry: both clocks moved, no heartbeat was read.
    const stall = h.cfg.leaseTtlMs + 1_000;
    h.advance(stall);
    mono += stall;
    h.tick();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_RUNNING, "not expired by the coordinator's own stall");
    assert.ok(
      h.log.lines.some((l) => /did not run for a while/.test(l.msg)),
      "the give-back is logged",
    );
    // An agent that really stopped reporting still loses its lease, one lease time later.
    h.advance(h.cfg.leaseTtlMs);
    mono += 400;
    h.tick();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_QUEUED);
    assert.match(h.job(j.id).errorMessage, /lease of attempt 1 expired/);
  });

  it("the same time passing with the coordinator running (its clock moved on, no stall): the lease expires", () => {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    h.advance(h.cfg.leaseTtlMs + 1_000);
    mono += 300; // the thread ran on schedule: only the agent was silent
    h.tick();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_QUEUED);
  });

  it("a stall reported while the catalog fails (a hung database): no crash out of the watch's timer; the time is given back by the next pass", () => {
    // The watch's timer, driven by hand.
    class HandWatch extends StallWatch {
      onStall: ((ms: number) => void) | null = null;
      override start(onStall: (ms: number) => void): void {
        this.onStall = onStall;
      }
      override stop(): void {}
    }
    const watch = new HandWatch(() => mono, 500, 2_000);
    const hw = new Harness({}, new SqliteCatalog(":memory:"), undefined, watch);
    try {
      hw.connect("a1", "a");
      hw.connect("b1", "b");
      hw.scheduler.start();
      const j = hw.queueBackup(vol("v1"));
      hw.tick();
      assert.equal(hw.job(j.id).state, JobState.JOB_STATE_RUNNING);
      const stall = hw.cfg.leaseTtlMs + 1_000;
      hw.advance(stall);
      const activeJobs = hw.catalog.activeJobs.bind(hw.catalog);
      hw.catalog.activeJobs = () => {
        throw new Error("the catalog database did not answer");
      };
      assert.doesNotThrow(() => watch.onStall?.(stall), "the timer's callback does not throw");
      hw.catalog.activeJobs = activeJobs;
      hw.tick();
      assert.equal(hw.job(j.id).state, JobState.JOB_STATE_RUNNING, "the owed stall was given back");
    } finally {
      hw.close();
    }
  });
});
