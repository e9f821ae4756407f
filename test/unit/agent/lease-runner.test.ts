/** The lease runner on its own (no transport): progress sent only on change, and the change notifier's waits. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Changes } from "../../../agents/agent/changes";
import { LeaseRunner } from "../../../agents/agent/lease-runner";
import { BackupRequest, VerifyMode, VerifyRequest, VerifyResult } from "../../../src/gen/rbdbackup/v1/agent";
import type { AgentMessage } from "../../../src/gen/rbdbackup/v1/session";
import { changes, FakeOps, recordingLogger, waitFor } from "./fakes";

describe("lease runner", () => {
  it("reports progress only when it changed since the last report", async () => {
    const sent: AgentMessage["msg"][] = [];
    const ops = new FakeOps();
    const runner = new LeaseRunner("agent-a", ops, recordingLogger(), (m) => sent.push(m), changes);
    runner.start({
      jobId: "j",
      attempt: 2,
      token: "t",
      ttlMs: 1000,
      operation: { $case: "backup", value: BackupRequest.fromPartial({}) },
      fenceClientAddrs: [],
      fenceSeconds: 0,
    });
    await waitFor("the attempt", () => ops.attempts.length === 1);
    const progress = sent.filter((m) => m?.$case === "progress");
    runner.reportProgress();
    runner.reportProgress();
    assert.equal(sent.filter((m) => m?.$case === "progress").length - progress.length, 1, "unchanged: sent once");
    const p = ops.attempts[0]?.progress;
    assert.ok(p);
    p.phase = "transfer";
    runner.reportProgress();
    runner.reportProgress();
    const reports = sent.flatMap((m) => (m?.$case === "progress" ? [m.value] : []));
    assert.deepEqual(
      reports.map((r) => r.phase),
      ["starting", "transfer"],
    );
    assert.deepEqual(runner.held(), [{ jobId: "j", attempt: 2, token: "t" }]);
    runner.shutdown();
    await waitFor("the outcome", () => runner.runningCount === 0);
    assert.deepEqual(runner.held(), [{ jobId: "j", attempt: 0, token: "t" }]);
    runner.acknowledge(["t"]);
    assert.deepEqual(runner.held(), []);
  });
});

describe("lease runner: VERIFY", () => {
  it("runs a verify lease with its progress and reports its VerifyResult", async () => {
    const sent: AgentMessage["msg"][] = [];
    const ops = new FakeOps();
    const runner = new LeaseRunner("agent-a", ops, recordingLogger(), (m) => sent.push(m), changes);
    const req = VerifyRequest.fromPartial({ backupId: "b", mode: VerifyMode.VERIFY_MODE_FULL });
    runner.start({
      jobId: "jv",
      attempt: 1,
      token: "tv",
      ttlMs: 1000,
      operation: { $case: "verify", value: req },
      fenceClientAddrs: [],
      fenceSeconds: 0,
    });
    await waitFor("the attempt", () => ops.attempts.length === 1);
    const a = ops.attempts[0];
    assert.equal(a?.kind, "verify");
    assert.deepEqual(a?.req, req);
    assert.ok(a?.progress, "the attempt reports progress");
    a?.resolve(VerifyResult.fromPartial({ backupId: "b", ok: false, firstBadOffset: 4194304 }));
    await waitFor("the outcome", () => sent.some((m) => m?.$case === "outcome"));
    const outcome = sent.flatMap((m) => (m?.$case === "outcome" ? [m.value] : []))[0];
    assert.equal(outcome?.code, 0);
    assert.equal(outcome?.result?.$case, "verify");
    assert.equal(outcome?.result?.$case === "verify" && outcome.result.value.firstBadOffset, 4194304);
  });
});

describe("change notifier", () => {
  it("wakes a waiter on a change, and gives up at its deadline", async () => {
    const c = new Changes();
    let x = 0;
    const waiting = c.until(() => x === 2, 60_000);
    x = 1;
    c.notify();
    x = 2;
    c.notify();
    assert.equal(await waiting, true);
    assert.equal(await c.until(() => false, 5), false);
  });
});
