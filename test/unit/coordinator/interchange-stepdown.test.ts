/**
 * An EXPORT/IMPORT run (src/coordinator/interchange/run.ts) whose coordinator is no longer the leader:
 * the term's end aborts the call in flight, and the run's abort listener asks the scheduler to cancel
 * the job — which throws "not the leader" (ha/scheduler-relay.ts). Thrown from an abort listener (or a
 * timer), that was an uncaught exception that ended the process. Now the run logs it, leaves the job to
 * the leader and still fails its pipe, so the handler answers. And once the agent is connected, a relay
 * through which no byte moves for idleMs (a caller that stopped sending or reading) fails the job
 * naming who stalled: its locks held the volume or the backup until then. Fakes only: catalog and
 * scheduler.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { unavailable } from "../../../src/common/errors";
import type { Catalog } from "../../../src/coordinator/catalog/catalog";
import { Relays } from "../../../src/coordinator/interchange/relays";
import { InterchangeRun, type RunScheduler } from "../../../src/coordinator/interchange/run";
import type { JobRecord } from "../../../src/coordinator/model";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { until } from "../../helpers/wait";

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

describe("interchange run: a relay through which nothing moves", () => {
  /** A scheduler that records the failures asked of it (and fails nothing else). */
  function recording(fails: string[]): RunScheduler {
    return {
      on: () => {},
      off: () => {},
      cancel: (j: JobRecord) => j,
      fail: (_j: JobRecord, _code: unknown, message: string) => {
        fails.push(message);
      },
    } as unknown as RunScheduler;
  }
  const running = {
    id: "job-2",
    state: JobState.JOB_STATE_RUNNING,
    confirming: false,
    agentId: "b1",
    lease: { agentId: "b1" },
  } as unknown as JobRecord;
  const catalogOf = (j: JobRecord) => ({ getJob: (id: string) => (id === j.id ? j : undefined) }) as unknown as Catalog;

  for (const [what, chunk, expected] of [
    [
      "a caller that reads a trickle (a chunk now and then) while the agent's data waits",
      16,
      /^the caller read only \d+ bytes in 1 s while the agent's data waited/,
    ],
    ["a caller that reads slowly but at least 1 MiB per idle bound", 512 * 1024, null],
  ] as const) {
    it(`export: ${what} → ${expected ? "the job fails naming it" : "not failed"}`, { timeout: 10_000 }, async () => {
      const fails: string[] = [];
      const relays = new Relays();
      const run = new InterchangeRun(
        // 1 s: a pause of the test process (a GC, the other test file's work) longer than the reader's
        // 30 ms step must not pass for a trickle (at 100 ms, one of 60 ms failed 3 runs in 30).
        { relays, scheduler: recording(fails), catalog: catalogOf(running), timeouts: { idleMs: 1_000 } },
        "job-2",
        "export",
        new AbortController().signal,
      );
      const alive = setInterval(() => {}, 1000);
      let stop = false;
      try {
        run.open();
        assert.ok("relay" in relays.claim("job-2", "export", "b1"), "the agent connects");
        // The agent writes all the time (its writes wait while the relay is full).
        void (async () => {
          while (!stop) await run.pipe.write(new Uint8Array(chunk));
        })().catch(() => {});
        // The caller takes one chunk every 30 ms: a byte moves within every idle bound.
        const reader = run.pipe.read();
        const t0 = Date.now();
        while (Date.now() - t0 < 3_000 && fails.length === 0) {
          await new Promise((r) => setTimeout(r, 30));
          // A failed run fails its pipe: the read throws then.
          if ((await reader.next().catch(() => ({ done: true }))).done) break;
        }
        if (expected) {
          assert.equal(fails.length, 1, "failed");
          assert.match(fails[0] as string, expected);
        } else assert.deepEqual(fails, [], "a slow but steady reader is no trickle");
      } finally {
        stop = true;
        clearInterval(alive);
        run.close();
      }
    });
  }

  for (const [what, chunk, expected] of [
    [
      "a caller that sends a trickle (a chunk now and then) while the agent takes all at once",
      16,
      /^the caller sent only \d+ bytes in 1 s while the agent waited for data/,
    ],
    ["a caller that sends slowly but at least 1 MiB per idle bound", 512 * 1024, null],
  ] as const) {
    it(`import: ${what} → ${expected ? "the job fails naming it" : "not failed"}`, { timeout: 10_000 }, async () => {
      const fails: string[] = [];
      const relays = new Relays();
      const run = new InterchangeRun(
        { relays, scheduler: recording(fails), catalog: catalogOf(running), timeouts: { idleMs: 1_000 } },
        "job-2",
        "import",
        new AbortController().signal,
      );
      const alive = setInterval(() => {}, 1000);
      let stop = false;
      try {
        run.open();
        assert.ok("relay" in relays.claim("job-2", "import", "b1"), "the agent connects");
        // The agent takes everything as it comes.
        void (async () => {
          for await (const _ of run.pipe.read()) if (stop) break;
        })().catch(() => {});
        // The caller sends one chunk every 30 ms: a byte moves within every idle bound.
        const t0 = Date.now();
        while (Date.now() - t0 < 3_000 && fails.length === 0) {
          await new Promise((r) => setTimeout(r, 30));
          // A failed run fails its pipe: the write throws then.
          if (
            !(await run.pipe.write(new Uint8Array(chunk)).then(
              () => true,
              () => false,
            ))
          )
            break;
        }
        if (expected) {
          assert.equal(fails.length, 1, "failed");
          assert.match(fails[0] as string, expected);
        } else assert.deepEqual(fails, [], "a slow but steady sender is no trickle");
      } finally {
        stop = true;
        clearInterval(alive);
        run.close();
      }
    });
  }

  for (const [direction, stallBy, expected] of [
    ["import", "the caller stops sending", /^the caller sent nothing for 0\.1 s; job job-2 was ended$/],
    ["export", "the caller stops reading", /^the caller read nothing for 0\.1 s; job job-2 was ended$/],
  ] as const) {
    it(`${direction}: ${stallBy} once the agent is connected → the job fails naming who, and the pipe fails`, {
      timeout: 10_000,
    }, async () => {
      const fails: string[] = [];
      const relays = new Relays();
      const run = new InterchangeRun(
        { relays, scheduler: recording(fails), catalog: catalogOf(running), timeouts: { idleMs: 100 } },
        "job-2",
        direction,
        new AbortController().signal,
      );
      const alive = setInterval(() => {}, 1000); // the run's timers are unref'd
      try {
        run.open();
        assert.ok("relay" in relays.claim("job-2", direction, "b1"), "the agent connects");
        await run.pipe.write(new Uint8Array(16)); // some bytes go in, then nothing moves: in an import nobody
        if (direction === "import") for await (const _ of run.pipe.read()) break; // the agent took them
        await until(() => fails.length > 0, "the idle bound to fail the job");
        assert.match(fails[0] as string, expected);
        assert.equal(run.pipe.done, true, "the pipe failed too");
      } finally {
        clearInterval(alive);
        run.close();
      }
    });
  }
});
