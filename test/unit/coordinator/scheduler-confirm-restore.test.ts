/**
 * A restore becomes SUCCEEDED only when an agent of its TARGET cluster confirms the restored image
 * (it exists, at the restored size) — not on the word of the agent that ran it (the backup cluster's).
 * The fake target agents answer the probe from what the harness says was restored (`restored`).
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { RestoreResult } from "../../../src/gen/rbdbackup/v1/agent";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { FakeAgentSession } from "../../helpers/fake-agent";
import { Harness, vol } from "./harness";

const { JOB_STATE_QUEUED: QUEUED, JOB_STATE_RUNNING: RUNNING } = JobState;
const { JOB_STATE_SUCCEEDED: SUCCEEDED, JOB_STATE_FAILED: FAILED, JOB_STATE_CANCELLED: CANCELLED } = JobState;

const callsTo = (s: FakeAgentSession): CallRequest[] =>
  s.sent.flatMap((m) => (m.$case === "call" && m.value.request ? [m.value.request] : []));

describe("scheduler: restores are confirmed by their target cluster", () => {
  let h: Harness;
  let a1: FakeAgentSession;
  let b1: FakeAgentSession;
  const result = (imageSize: number) => RestoreResult.fromPartial({ imageSize, warnings: ["w"] });

  /** A backup of a/rbd/v1 on b, AVAILABLE, and a restore of it to a/rbd/v1-restored leased to b1. */
  async function leasedRestore(h: Harness) {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    await h.backupDone(a1, j);
    const r = h.queueRestore(j.backupId, vol("v1-restored"));
    h.tick();
    assert.equal(b1.lease(r.id).operation?.$case, "restore");
    return r;
  }

  beforeEach(() => {
    h = new Harness();
    a1 = h.connect("a1", "a");
    b1 = h.connect("b1", "b");
  });
  afterEach(() => h.close());

  it("confirmed: the target cluster's agent is asked for the image, then SUCCEEDED with the reported result", async () => {
    const r = await leasedRestore(h);
    const before = callsTo(a1).length;
    h.restored.set("a/rbd//v1-restored", 8 << 20);
    assert.equal(h.outcome(b1, r.id, Status.OK, "", { $case: "restore", value: result(8 << 20) }), true);
    const confirming = h.job(r.id);
    assert.equal(confirming.state, RUNNING, "not SUCCEEDED on the restoring agent's word");
    assert.equal(confirming.lease, null);
    assert.match(confirming.waitingReason, /^confirming the restore of backup .* with target cluster a/);
    await h.settle();
    assert.deepEqual(callsTo(a1).slice(before), [
      {
        $case: "probe",
        value: {
          pools: [],
          namespaces: [],
          image: { pool: "rbd", namespace: "", image: "v1-restored" },
          keepOpen: false,
          checkTrash: false,
        },
      },
    ]);
    assert.equal(callsTo(b1).filter((c) => c.$case === "probe").length, 0, "the agent that ran it is not asked");
    const done = h.job(r.id);
    assert.equal(done.state, SUCCEEDED);
    assert.equal(done.confirming, null);
    assert.deepEqual(done.warnings, ["w"]);
    assert.equal(RestoreResult.fromJSON(done.result).imageSize, 8 << 20);
  });

  it("no target image → the attempt fails DATA_LOSS (not SUCCEEDED), naming the image", async () => {
    const r = await leasedRestore(h);
    h.outcome(b1, r.id, Status.OK, "", { $case: "restore", value: result(8 << 20) });
    await h.settle();
    const j = h.job(r.id);
    assert.equal(j.state, FAILED);
    assert.equal(j.errorCode, "DATA_LOSS");
    assert.match(j.errorMessage, /reported success but the target cluster has no image a\/rbd\/v1-restored/);
  });

  it("a target image of another size → DATA_LOSS", async () => {
    const r = await leasedRestore(h);
    h.restored.set("a/rbd//v1-restored", 4 << 20);
    h.outcome(b1, r.id, Status.OK, "", { $case: "restore", value: result(8 << 20) });
    await h.settle();
    const j = h.job(r.id);
    assert.equal(j.errorCode, "DATA_LOSS");
    assert.match(j.errorMessage, /is 4194304 bytes, not the restored 8388608/);
  });

  it("no agent of the target connected: RUNNING, waiting; past confirmTimeoutMs DEADLINE_EXCEEDED (retried)", async () => {
    h.close();
    h = new Harness({ confirmTimeoutMs: 10_000 });
    a1 = h.connect("a1", "a");
    b1 = h.connect("b1", "b");
    const r = await leasedRestore(h);
    h.disconnect(a1);
    h.restored.set("a/rbd//v1-restored", 8 << 20);
    h.outcome(b1, r.id, Status.OK, "", { $case: "restore", value: result(8 << 20) });
    await h.settle();
    const w = h.job(r.id);
    assert.equal(w.state, RUNNING);
    assert.match(w.waitingReason, /waiting for an agent of cluster a to connect/);
    h.advance(10_000);
    h.tick();
    await h.settle();
    const q = h.job(r.id);
    assert.equal(q.state, QUEUED);
    assert.equal(q.errorCode, "DEADLINE_EXCEEDED");
    assert.match(q.errorMessage, /^could not confirm the restore of backup .* within 10000 ms/);
  });

  it("an agent of the target that cannot answer: checked again after a backoff, then confirmed", async () => {
    const r = await leasedRestore(h);
    const answer = a1.answer;
    a1.answer = () => new AppError(Status.UNAVAILABLE, "ceph is slow");
    h.restored.set("a/rbd//v1-restored", 8 << 20);
    h.outcome(b1, r.id, Status.OK, "", { $case: "restore", value: result(8 << 20) });
    await h.settle();
    assert.equal(h.job(r.id).state, RUNNING);
    assert.equal(h.job(r.id).confirming?.checks, 1);
    a1.answer = answer;
    h.advance(h.cfg.backoffBaseMs);
    h.tick();
    await h.settle();
    assert.equal(h.job(r.id).state, SUCCEEDED);
  });

  it("a restore reported done without its result fails INTERNAL", async () => {
    const r = await leasedRestore(h);
    h.outcome(b1, r.id, Status.OK, "");
    const j = h.job(r.id);
    assert.equal(j.errorCode, "INTERNAL");
    assert.match(j.errorMessage, /reported a restore done without its result/);
  });

  it("a restore cancelled while its report was confirmed, whose confirmation then timed out: CANCELLED, never run again", async () => {
    const r = await leasedRestore(h);
    h.disconnect(a1); // the target cluster's agent away: the confirmation waits
    h.outcome(b1, r.id, Status.OK, "", { $case: "restore", value: result(8 << 20) });
    await h.settle();
    h.scheduler.cancel(h.job(r.id));
    h.advance(h.cfg.confirmTimeoutMs + 1);
    h.tick();
    await h.settle();
    assert.equal(h.job(r.id).state, CANCELLED);
    h.connect("a1", "a");
    h.advance(120_000);
    h.tick();
    assert.equal(b1.leases().filter((l) => l.jobId === r.id).length, 1, "the restore was not leased again");
  });
});
