/** Progress of a watched job: the bar, the live line, the change lines, and what each mode writes. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { changeLine, ProgressReporter, progressBar, progressLine } from "../../../src/cli/progress";
import { Job, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function job(over: Parameters<typeof Job.fromPartial>[0]): Job {
  return Job.fromPartial({ id: "job-1", kind: JobKind.JOB_KIND_BACKUP, ...over });
}

const transfer = {
  phase: "transfer",
  bytesDone: 4 * GiB,
  bytesTotal: 10 * GiB,
  bytesTransferred: 1.5 * GiB,
  rateBytesPerSecond: 120 * MiB,
};
const running = job({ state: JobState.JOB_STATE_RUNNING, progress: transfer });

describe("progress bar", () => {
  it("fills in proportion, clamped", () => {
    assert.equal(progressBar(0, 10), "[----------]");
    assert.equal(progressBar(0.42, 10), "[####------]");
    assert.equal(progressBar(1, 10), "[##########]");
    assert.equal(progressBar(1.7, 4), "[####]");
    assert.equal(progressBar(-1, 4), "[----]");
    assert.equal(progressBar(Number.NaN, 4), "[----]");
  });
});

describe("live line", () => {
  it("running: phase, bar, percentage, bytes, sent, rate", () => {
    assert.equal(
      progressLine(running, 200),
      "transfer  [#########---------------]  40.0%  4.0 GiB/10.0 GiB  sent 1.5 GiB  120.0 MiB/s",
    );
  });

  it("fits the terminal", () => {
    const line = progressLine(running, 40);
    assert.equal(line.length, 39);
    assert.ok(line.endsWith("…"));
  });

  it("without a total: no bar", () => {
    const j = job({ state: JobState.JOB_STATE_RUNNING, progress: { phase: "snapshot" } });
    assert.equal(progressLine(j, 80), "snapshot");
  });

  it("queued: why, and the retry", () => {
    const j = job({
      state: JobState.JOB_STATE_QUEUED,
      waitingReason: "backoff after UNAVAILABLE",
      attempts: 1,
      maxAttempts: 5,
      nextAttemptAt: new Date(Date.UTC(2025, 0, 1)),
    });
    assert.equal(
      progressLine(j, 200),
      "queued  backoff after UNAVAILABLE  attempt 2/5  retry at 2025-01-01T00:00:00.000Z",
    );
  });

  it("cancelling", () => {
    assert.match(progressLine({ ...running, cancelRequested: true }, 200), /^transfer \(cancelling\)/);
  });
});

describe("change lines", () => {
  it("time, job, state, phase, percentage", () => {
    const now = new Date(Date.UTC(2025, 0, 1, 12));
    assert.equal(changeLine(running, now), "2025-01-01T12:00:00.000Z job job-1 running transfer 40.0%");
    const failed = job({ state: JobState.JOB_STATE_FAILED, errorCode: "DATA_LOSS", errorMessage: "bad chunk" });
    assert.equal(changeLine(failed, now), "2025-01-01T12:00:00.000Z job job-1 failed DATA_LOSS: bad chunk");
  });
});

function sink() {
  const err: string[] = [];
  const out: string[] = [];
  return {
    err,
    out,
    io: { err: { write: (s: string) => err.push(s), columns: 200 }, out: { write: (s: string) => out.push(s) } },
  };
}

describe("reporter", () => {
  it("off a terminal: one line per state or phase change", () => {
    const s = sink();
    const r = new ProgressReporter("lines", s.io, () => new Date(0));
    const queued = job({ state: JobState.JOB_STATE_QUEUED });
    const more = { ...running, progress: { ...transfer, bytesDone: 5 * GiB } };
    const prune = { ...running, progress: { ...transfer, phase: "prune" } };
    for (const j of [queued, queued, running, more, more, prune, job({ state: JobState.JOB_STATE_SUCCEEDED })]) {
      r.update(j);
    }
    assert.deepEqual(
      s.err.map((l) => l.replace("1970-01-01T00:00:00.000Z job job-1 ", "")),
      ["queued\n", "running transfer 40.0%\n", "running prune 40.0%\n", "succeeded\n"],
    );
    assert.deepEqual(s.out, []);
  });

  it("on a terminal: redrawn with \\r, erased at the end", () => {
    const s = sink();
    const r = new ProgressReporter("tty", s.io);
    r.update(running);
    r.clear();
    assert.equal(s.err.length, 2);
    assert.ok(s.err[0]?.startsWith("\r\x1b[Ktransfer"));
    assert.equal(s.err[1], "\r\x1b[K");
    r.clear();
    assert.equal(s.err.length, 2, "nothing to erase twice");
  });

  it("--json: every event as one JSON line on stdout", () => {
    const s = sink();
    const r = new ProgressReporter("json", s.io);
    r.update(running);
    r.update(running);
    assert.equal(s.out.length, 2);
    const ev = JSON.parse(s.out[0] ?? "");
    assert.equal(ev.job.id, "job-1");
    assert.equal(ev.job.state, "JOB_STATE_RUNNING");
    assert.equal(ev.job.progress.phase, "transfer");
    assert.ok(s.out[0]?.endsWith("}\n") && !s.out[0].slice(0, -1).includes("\n"));
    assert.deepEqual(s.err, []);
  });
});
