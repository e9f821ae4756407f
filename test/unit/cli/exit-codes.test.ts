/** The one mapping from API statuses and job outcomes to exit codes, and the stderr line of a failure. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ClientError, Status } from "nice-grpc-common";
import { UsageError } from "../../../src/cli/args";
import {
  CliFailure,
  DeadlineError,
  ExitCode,
  exitCodeForJobState,
  exitCodeForStatus,
  reportError,
  statusName,
} from "../../../src/cli/exit-codes";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";

describe("exit codes", () => {
  it("API statuses", () => {
    const expected: [Status, number][] = [
      [Status.NOT_FOUND, 4],
      [Status.UNAUTHENTICATED, 5],
      [Status.PERMISSION_DENIED, 5],
      [Status.UNAVAILABLE, 6],
      [Status.DEADLINE_EXCEEDED, 6],
      [Status.INVALID_ARGUMENT, 7],
      [Status.FAILED_PRECONDITION, 7],
      [Status.ALREADY_EXISTS, 7],
      [Status.RESOURCE_EXHAUSTED, 7],
      [Status.INTERNAL, 7],
      [Status.UNKNOWN, 7],
      [Status.CANCELLED, 7],
      [Status.UNIMPLEMENTED, 7],
      [Status.DATA_LOSS, 7],
    ];
    for (const [status, code] of expected) assert.equal(exitCodeForStatus(status), code, Status[status]);
  });

  it("job outcomes", () => {
    assert.equal(exitCodeForJobState(JobState.JOB_STATE_SUCCEEDED), 0);
    assert.equal(exitCodeForJobState(JobState.JOB_STATE_FAILED), 1);
    assert.equal(exitCodeForJobState(JobState.JOB_STATE_CANCELLED), 3);
    assert.equal(exitCodeForJobState(JobState.JOB_STATE_RUNNING), undefined);
    assert.equal(exitCodeForJobState(JobState.JOB_STATE_QUEUED), undefined);
  });

  it("status names", () => {
    assert.equal(statusName(Status.FAILED_PRECONDITION), "FAILED_PRECONDITION");
    assert.equal(statusName(99 as Status), "99");
  });
});

describe("error reports", () => {
  it("API errors: rbdbackup: <STATUS_NAME>: <details>", () => {
    const r = reportError(new ClientError("/rbdbackup.v1.BackupService/GetBackup", Status.NOT_FOUND, "backup x"));
    assert.deepEqual(r, { exitCode: ExitCode.NotFound, message: "rbdbackup: NOT_FOUND: backup x" });
    const a = reportError(new ClientError("/p", Status.UNAUTHENTICATED, "no credentials"));
    assert.deepEqual(a, { exitCode: 5, message: "rbdbackup: UNAUTHENTICATED: no credentials" });
  });

  it("our own deadline is DEADLINE_EXCEEDED", () => {
    assert.deepEqual(reportError(new DeadlineError("no answer within 30 s")), {
      exitCode: 6,
      message: "rbdbackup: DEADLINE_EXCEEDED: no answer within 30 s",
    });
  });

  it("usage errors and chosen failures", () => {
    assert.deepEqual(reportError(new UsageError("bad")), { exitCode: 2, message: "rbdbackup: bad" });
    assert.deepEqual(reportError(new CliFailure(ExitCode.Unavailable, "gone")), {
      exitCode: 6,
      message: "rbdbackup: gone",
    });
  });

  it("anything else: exit code 1 with the stack", () => {
    const r = reportError(new TypeError("oops"));
    assert.equal(r.exitCode, 1);
    assert.match(r.message, /^rbdbackup: TypeError: oops/);
  });
});
