/**
 * The coordinator's session calls reach the operations: prune_snapshots (source snapshot hygiene) and
 * confirm_backup (a backup's confirmation: the base image's snapshot and the metadata object, one reply).
 */
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

  const image = { pool: "backups", namespace: "", image: "v1.backup.x" };
  const snap = (id: string) => ({ name: `backup.${id}.snap.7`, backupId: id, timestamp: 7, snapId: 3, size: 1 });

  it("confirm_backup answers the snapshot and the metadata object in one reply", async () => {
    const ops = new FakeOps();
    const id = randomUUID();
    ops.snapshots.set(image.image, [snap(randomUUID()), snap(id)]);
    ops.metadata.set(id, '{"backup_id":"x"}');
    const reply = await answerCall(ops, {
      callId: "c1",
      request: { $case: "confirmBackup", value: { image, backupId: id, snapshot: `backup.${id}.snap.7` } },
    });
    assert.equal(reply.code, Status.OK);
    assert.deepEqual(reply.result, {
      $case: "confirmBackup",
      value: { snapshot: snap(id), metadata: { found: true, json: '{"backup_id":"x"}' } },
    });
  });

  it("confirm_backup: no such snapshot is the answer; no base image is NOT_FOUND", async () => {
    const ops = new FakeOps();
    const id = randomUUID();
    ops.snapshots.set(image.image, [snap(randomUUID())]);
    const ask = (img = image) =>
      answerCall(ops, {
        callId: "c2",
        request: { $case: "confirmBackup", value: { image: img, backupId: id, snapshot: `backup.${id}.snap.7` } },
      });
    const none = await ask();
    assert.equal(none.code, Status.OK, "the metadata's failure does not hide the snapshot's absence");
    assert.deepEqual(none.result, {
      $case: "confirmBackup",
      value: { snapshot: undefined, metadata: { found: false, json: "" } },
    });
    const gone = await ask({ ...image, image: "other" });
    assert.equal(gone.code, Status.NOT_FOUND);
  });

  it("confirm_backup with a backup id that is not a UUID, or no image, is refused before anything is read", async () => {
    const ops = new FakeOps();
    for (const value of [
      { image, backupId: "../x", snapshot: "backup.x.snap.1" },
      { image: undefined, backupId: randomUUID(), snapshot: "s" },
      { image, backupId: randomUUID(), snapshot: "" },
    ]) {
      const reply = await answerCall(ops, { callId: "c3", request: { $case: "confirmBackup", value } });
      assert.equal(reply.code, Status.INVALID_ARGUMENT, JSON.stringify(value));
      assert.match(reply.message, /^confirm_backup: /);
    }
    assert.deepEqual(ops.asked, [], "nothing was read");
  });
});
