/**
 * Which failed attempts keep their source snapshot for the coordinator's retry (agents/engine/resume.ts
 * keepsForRetry): a transfer cut short — the peer's reset (CANCELLED from the destination) included —
 * but never this attempt's own cancel, a refusal or bad data.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { keepsForRetry } from "../../../agents/engine/resume";
import { AppError, Status } from "../../../src/common/errors";

const failed = (code: Status) => new AppError(code, "failed");

describe("keepsForRetry", () => {
  it("cut short (a lost peer, a peer's reset): kept while the lease is resumable", () => {
    const running = new AbortController().signal;
    for (const code of [Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.CANCELLED, Status.ABORTED])
      assert.equal(keepsForRetry(true, running, failed(code)), true, Status[code]);
    assert.equal(keepsForRetry(false, running, failed(Status.UNAVAILABLE)), false, "not resumable");
  });

  it("this attempt cancelled, refused or bad data: not kept", () => {
    assert.equal(keepsForRetry(true, AbortSignal.abort(), failed(Status.CANCELLED)), false, "its own cancel");
    const running = new AbortController().signal;
    for (const code of [
      Status.INVALID_ARGUMENT,
      Status.DATA_LOSS,
      Status.FAILED_PRECONDITION,
      Status.PERMISSION_DENIED,
    ])
      assert.equal(keepsForRetry(true, running, failed(code)), false, Status[code]);
  });
});
