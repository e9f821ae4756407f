/** The coordinator's session calls reach the operations: prune_snapshots (source snapshot hygiene). */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { answerCall } from "../../../agents/agent/calls";
import { FakeOps } from "./fakes";

describe("agent: session calls", () => {
  it("prune_snapshots is answered by the operation with the removed snapshots", async () => {
    const ops = new FakeOps();
    const id = randomUUID();
    const image = { pool: "rbd", namespace: "", image: "v1" };
    const reply = await answerCall(ops, {
      callId: "p1",
      request: { $case: "pruneSnapshots", value: { image, backupIds: [id] } },
    });
    assert.equal(reply.code, Status.OK);
    assert.deepEqual(reply.result, {
      $case: "pruneSnapshots",
      value: { removed: [`backup.${id}.snap.1`], warnings: [] },
    });
    assert.deepEqual(ops.pruned, [{ image: "v1", backupIds: [id] }]);
  });
});
