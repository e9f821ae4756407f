/**
 * A daemon's exit code when it cannot start (src/common/start-failure.ts): 1 — systemd starts it again —
 * for what is not there yet (a database or monitors still booting, a port still held), 2 — it does not —
 * for what the operator must fix.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AppError, Status } from "../../../src/common/errors";
import { startFailureExitCode, TransientStartError } from "../../../src/common/start-failure";

const sysErr = (code: string) => Object.assign(new Error(code), { code });

describe("start failure exit codes", () => {
  it("1 for a catalog that does not answer, a port still held, a cluster not reachable yet", () => {
    assert.equal(startFailureExitCode(new AppError(Status.UNAVAILABLE, "the catalog database is unavailable")), 1);
    assert.equal(startFailureExitCode(new AppError(Status.DEADLINE_EXCEEDED, "did not answer")), 1);
    assert.equal(startFailureExitCode(sysErr("EADDRINUSE")), 1);
    assert.equal(startFailureExitCode(sysErr("ECONNREFUSED")), 1);
    assert.equal(startFailureExitCode(new TransientStartError("connect: cannot connect to cluster site-a")), 1);
  });

  it("2 for what the operator must fix: a bad value, a newer catalog schema, anything unknown", () => {
    assert.equal(startFailureExitCode(new AppError(Status.INVALID_ARGUMENT, "catalog.url must be …")), 2);
    assert.equal(startFailureExitCode(new AppError(Status.FAILED_PRECONDITION, "schema version 9, newer")), 2);
    assert.equal(startFailureExitCode(sysErr("EACCES")), 2);
    assert.equal(startFailureExitCode(new Error("boom")), 2);
    assert.equal(startFailureExitCode(undefined), 2);
  });
});
