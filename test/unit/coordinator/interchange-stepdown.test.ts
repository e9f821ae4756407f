/**
 * An EXPORT/IMPORT run (src/coordinator/interchange/run.ts) whose coordinator is no longer the leader:
 * the term's end aborts the call in flight, and the run's abort listener asks the scheduler to cancel
 * the job — which throws "not the leader" (ha/scheduler-relay.ts). Thrown from an abort listener (or a
 * timer), that was an uncaught exception that ended the process. Now the run logs it, leaves the job to
 * the leader and still fails its pipe, so the handler answers. Fakes only: catalog and scheduler.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { unavailable } from "../../../src/common/errors";
import type { Catalog } from "../../../src/coordinator/catalog/catalog";
import { Relays } from "../../../src/coordinator/interchange/relays";
import { InterchangeRun, type RunScheduler } from "../../../src/coordinator/interchange/run";
import type { JobRecord } from "../../../src/coordinator/model";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";

/** A scheduler of a coordinator that stepped down: cancel and fail throw, as the relay's do. */
function steppedDown(calls: string[]): RunScheduler {
  return {
    on: () => {},
    off: () => {},
    cancel: () => {
      calls.push("cancel");
      throw unavailable("cancel a job: this coordinator is not the leader");
    },
    fail: () => {
      calls.push("fail");
      throw unavailable("fail a job: this coordinator is not the leader");
    },
  } as unknown as RunScheduler;
}

/** Reads the run's pipe to its end (or its failure). */
async function drain(run: InterchangeRun): Promise<void> {
  for await (const _ of run.pipe.read()) {
    // nothing is written here
  }
}

const queued = { id: "job-1", state: JobState.JOB_STATE_QUEUED, confirming: false } as unknown as JobRecord;
const catalog = { getJob: (id: string) => (id === queued.id ? queued : undefined) } as unknown as Catalog;

describe("interchange run after a step-down", () => {
  it("the caller's abort: no uncaught exception, the pipe fails cancelled, the cancel was asked once", {
    timeout: 10_000,
  }, async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on("uncaughtException", onUncaught);
    const calls: string[] = [];
    const ac = new AbortController();
    const run = new InterchangeRun(
      { relays: new Relays(), scheduler: steppedDown(calls), catalog },
      "job-1",
      "export",
      ac.signal,
    );
    try {
      run.open();
      ac.abort(); // the term's end (or the caller) aborts the call's signal
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(uncaught, []);
      assert.deepEqual(calls, ["cancel"]);
      await assert.rejects(drain(run), /cancelled by its caller/);
      run.close(); // the handler's finally: the same refusal, logged, no throw
      assert.deepEqual(calls, ["cancel", "cancel"]);
    } finally {
      process.off("uncaughtException", onUncaught);
    }
  });

  it("the start timer's failure of a job never started: no throw out of the timer, the pipe fails DEADLINE_EXCEEDED", {
    timeout: 10_000,
  }, async () => {
    const calls: string[] = [];
    const run = new InterchangeRun(
      { relays: new Relays(), scheduler: steppedDown(calls), catalog, timeouts: { startMs: 10 } },
      "job-1",
      "import",
      new AbortController().signal,
    );
    const alive = setInterval(() => {}, 1000); // the run's timer is unref'd: keep the test's loop up
    try {
      run.open();
      await assert.rejects(drain(run), /was not started within 0.01 s/);
      assert.deepEqual(calls, ["fail"]);
      run.close();
    } finally {
      clearInterval(alive);
    }
  });
});
