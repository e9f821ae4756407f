/**
 * An EXPORT/IMPORT run (src/coordinator/interchange/run.ts) whose data is through — the stream ended and
 * the other side took every byte — no longer needs its call: an import's agent may still be committing
 * a large upload (writes in flight, the digest blocks read back, metadata, the snapshot) well after the
 * caller's last byte. Neither the call's wait for the job (endMs) nor the call's end cancels the job
 * then; before that, the call's end still does. Fakes only: catalog and scheduler.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError, invalidArgument } from "../../../src/common/errors";
import { pump } from "../../../src/coordinator/api/import-backup";
import type { Catalog } from "../../../src/coordinator/catalog/catalog";
import { Relays } from "../../../src/coordinator/interchange/relays";
import { InterchangeRun, type RunScheduler } from "../../../src/coordinator/interchange/run";
import type { JobRecord } from "../../../src/coordinator/model";
import { type ImportBackupMessage, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";

const running = {
  id: "job-3",
  state: JobState.JOB_STATE_RUNNING,
  confirming: false,
  cancelRequested: false,
  agentId: "b1",
  lease: { agentId: "b1" },
} as unknown as JobRecord;
const catalog = { getJob: (id: string) => (id === running.id ? running : undefined) } as unknown as Catalog;

/** A scheduler that records what it was asked. */
function recording(calls: string[]): RunScheduler {
  return {
    on: () => {},
    off: () => {},
    cancel: (j: JobRecord) => {
      calls.push(`cancel ${j.id}`);
      return j;
    },
    fail: (j: JobRecord) => {
      calls.push(`fail ${j.id}`);
    },
  } as unknown as RunScheduler;
}

/** An import run whose agent connected; the caller's chunks written and the stream ended. */
async function importRun(calls: string[], signal: AbortSignal, endMs = 60_000) {
  const relays = new Relays();
  const run = new InterchangeRun(
    { relays, scheduler: recording(calls), catalog, timeouts: { endMs } },
    running.id,
    "import",
    signal,
  );
  run.open();
  assert.ok("relay" in relays.claim(running.id, "import", "b1"), "the agent connects");
  for (let i = 0; i < 3; i++) await run.pipe.write(new Uint8Array(1024));
  run.pipe.end();
  return run;
}

/** The agent's side: reads the relay to its end; the bytes it got, or the error it got. */
async function agentReads(run: InterchangeRun): Promise<number> {
  let n = 0;
  for await (const c of run.pipe.read()) n += c.length;
  return n;
}

describe("interchange run: once the data is through, the job goes on without its call", () => {
  // The run's timers are unref'd: keep the test's event loop up meanwhile.
  let alive: NodeJS.Timeout;
  before(() => {
    alive = setInterval(() => {}, 1000);
  });
  after(() => clearInterval(alive));

  it("the wait for the job's end runs out: DEADLINE_EXCEEDED says it goes on, and the run's end cancels nothing", async () => {
    const calls: string[] = [];
    const run = await importRun(calls, new AbortController().signal, 20);
    assert.equal(await agentReads(run), 3 * 1024, "the agent took every byte and the end");
    await assert.rejects(
      run.finished(),
      (e: unknown) =>
        e instanceof AppError &&
        e.status === Status.DEADLINE_EXCEEDED &&
        /it is JOB_STATE_RUNNING and goes on \(watch it with WatchJob\)/.test(e.message),
    );
    run.close();
    assert.deepEqual(calls, [], "nothing cancelled or failed");
  });

  it("the caller's call ends (cancelled, its deadline) after the data: no cancel, the agent's read ends cleanly", async () => {
    const calls: string[] = [];
    const ac = new AbortController();
    const run = await importRun(calls, ac.signal);
    const reading = agentReads(run);
    assert.equal(await reading, 3 * 1024);
    const waiting = run.finished();
    ac.abort();
    await assert.rejects(waiting, /cancelled by its caller/);
    run.close();
    assert.deepEqual(calls, []);
  });

  it("a stream that ended before the agent connected (a header-only import) is not through: the call's end cancels", () => {
    const calls: string[] = [];
    const ac = new AbortController();
    const run = new InterchangeRun(
      { relays: new Relays(), scheduler: recording(calls), catalog },
      running.id,
      "import",
      ac.signal,
    );
    run.open();
    run.pipe.end(); // no data, no agent yet
    ac.abort();
    run.close();
    assert.deepEqual(calls, [`cancel ${running.id}`, `cancel ${running.id}`]);
  });

  it("export: once the caller took the last bytes, the call's end leaves the job to finish", async () => {
    const calls: string[] = [];
    const ac = new AbortController();
    const relays = new Relays();
    const run = new InterchangeRun({ relays, scheduler: recording(calls), catalog }, running.id, "export", ac.signal);
    run.open();
    assert.ok("relay" in relays.claim(running.id, "export", "b1"), "the agent connects");
    await run.pipe.write(new Uint8Array(1024)); // the agent's data
    run.pipe.end();
    assert.equal(await agentReads(run), 1024, "the caller read it all");
    ac.abort();
    run.close();
    assert.deepEqual(calls, []);
  });

  it("before the agent took the rest (the stream ended, bytes still buffered), the call's end still cancels", async () => {
    const calls: string[] = [];
    const ac = new AbortController();
    const run = await importRun(calls, ac.signal);
    ac.abort();
    run.close();
    assert.deepEqual(calls, [`cancel ${running.id}`, `cancel ${running.id}`]);
    await assert.rejects(agentReads(run), /cancelled by its caller/);
  });
});

describe("import stream: a message that breaks the caller's stream", () => {
  let alive: NodeJS.Timeout;
  before(() => {
    alive = setInterval(() => {}, 1000);
  });
  after(() => clearInterval(alive));

  /** The caller's stream: one data message, then `e` from the next read. */
  function stream(e: unknown): AsyncIterator<ImportBackupMessage> {
    let n = 0;
    return {
      next: async () => {
        if (n++ === 0) return { done: false, value: { body: { $case: "data", value: new Uint8Array(16) } } };
        throw e;
      },
    };
  }

  for (const [what, e, status, message] of [
    [
      "undecodable (a uint64 above 2^53): INVALID_ARGUMENT as decoded",
      invalidArgument("the request message could not be decoded (x)"),
      Status.INVALID_ARGUMENT,
      /could not be decoded/,
    ],
    ["broken otherwise: CANCELLED naming the job", new Error("socket hang up"), Status.CANCELLED, /broke/],
  ] as const) {
    it(what, async () => {
      const run = new InterchangeRun(
        { relays: new Relays(), scheduler: recording([]), catalog },
        running.id,
        "import",
        new AbortController().signal,
      );
      run.open();
      try {
        const isIt = (x: unknown) => x instanceof AppError && x.status === status && message.test(x.message);
        await assert.rejects(pump(stream(e), run), isIt);
        await assert.rejects(agentReads(run), isIt, "the agent's side fails with the same");
      } finally {
        run.close();
      }
    });
  }
});
