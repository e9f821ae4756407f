/**
 * Watching a job (src/cli/watch.ts) against a fake connection: a watch that fails with UNAVAILABLE is
 * resumed after the backoff of src/common/retry.ts and the job's outcome decides the exit code; Ctrl-C
 * during that wait stops watching at once (130); an error that is not worth retrying ends the watch.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ClientError, Status } from "nice-grpc-common";
import type { Connection } from "../../../src/cli/connection";
import { watchJob } from "../../../src/cli/watch";
import { type Job, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";

type Stream = () => AsyncIterable<{ job?: Job }>;

function job(state: JobState): Job {
  return { id: "job-1", kind: JobKind.JOB_KIND_BACKUP, state } as Job;
}

/** A connection whose n-th WatchJob call is streams[n]; records how many calls were made. */
function fakeConnection(streams: Stream[]) {
  const calls = { n: 0 };
  const client = {
    watchJob: () => {
      const s = streams[calls.n++];
      if (!s) throw new Error("no more watches in the fake");
      return s();
    },
  };
  return { conn: { client } as unknown as Connection, calls };
}

const unavailable: Stream = async function* () {
  yield* [];
  throw new ClientError("/rbdbackup.v1.BackupService/WatchJob", Status.UNAVAILABLE, "connection refused");
};

/** A stream's write that keeps strings in `into` and hands anything else to `pass`. */
function capture(into: string[], pass: typeof process.stdout.write): typeof process.stdout.write {
  return ((chunk: unknown, ...rest: unknown[]) =>
    typeof chunk === "string"
      ? into.push(chunk) > 0
      : (pass as (...a: unknown[]) => boolean)(chunk, ...rest)) as typeof process.stdout.write;
}

/** Runs `f` with stdout and stderr captured. */
async function captured<T>(f: () => Promise<T>) {
  const out: string[] = [];
  const err: string[] = [];
  const [o, e] = [process.stdout.write, process.stderr.write];
  // Strings are the CLI's output; anything else (the test runner's own reports, Buffers) goes through.
  process.stdout.write = capture(out, o.bind(process.stdout));
  process.stderr.write = capture(err, e.bind(process.stderr));
  try {
    const result = await f();
    return { result, out: out.join(""), err: err.join("") };
  } finally {
    [process.stdout.write, process.stderr.write] = [o, e];
  }
}

describe("job watch: reconnects", () => {
  it("UNAVAILABLE: watched again after the backoff (1 s), then the outcome decides the exit code", async () => {
    const { conn, calls } = fakeConnection([
      unavailable,
      async function* () {
        yield { job: job(JobState.JOB_STATE_RUNNING) };
        yield { job: job(JobState.JOB_STATE_FAILED) };
      },
    ]);
    const t0 = Date.now();
    const r = await captured(() => watchJob(conn, "job-1", { json: true }));
    assert.equal(r.result, 1, "FAILED → exit code 1");
    assert.equal(calls.n, 2);
    assert.ok(Date.now() - t0 >= 990, `waited ${Date.now() - t0} ms before watching again`);
    assert.match(r.err, /^rbdbackup: connection refused; watching again$/m);
    assert.equal(r.out.trim().split("\n").length, 2, "one JobEvent per line");
  });

  it("Ctrl-C during the wait before watching again: stops at once with 130, the job goes on", async () => {
    const { conn, calls } = fakeConnection([
      async function* () {
        yield* [];
        // Once the failure is handled and the backoff wait has begun, the user presses Ctrl-C.
        setImmediate(() => process.emit("SIGINT"));
        throw new ClientError("/rbdbackup.v1.BackupService/WatchJob", Status.UNAVAILABLE, "gone");
      },
    ]);
    const t0 = Date.now();
    const r = await captured(() => watchJob(conn, "job-1", { json: true }));
    assert.equal(r.result, 130);
    assert.ok(Date.now() - t0 < 900, `stopped after ${Date.now() - t0} ms, before the 1 s backoff ended`);
    assert.equal(calls.n, 1);
    assert.match(r.err, /interrupted; job job-1 goes on/);
    assert.equal(process.listenerCount("SIGINT"), 0, "the SIGINT handler is removed");
  });

  it("an error not worth retrying (NOT_FOUND) ends the watch at once", async () => {
    const { conn, calls } = fakeConnection([
      async function* () {
        yield* [];
        throw new ClientError("/rbdbackup.v1.BackupService/WatchJob", Status.NOT_FOUND, "no job-1");
      },
    ]);
    await assert.rejects(
      captured(() => watchJob(conn, "job-1", { json: true })),
      (e: ClientError) => e.code === Status.NOT_FOUND,
    );
    assert.equal(calls.n, 1);
  });
});
