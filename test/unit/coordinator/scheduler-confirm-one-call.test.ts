/**
 * A backup's confirmation with a destination agent that names "confirm_backup" in Register.features:
 * one Call (confirm_backup) instead of `snapshots` + `metadata`, judged the same way; an agent that
 * does not name it (an older one) is asked the two questions, and is never sent the new Call.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { CONFIRM_FEATURE } from "../../../src/coordinator/scheduler/confirmation";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { BackupStatus, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { FakeAgentSession } from "../../helpers/fake-agent";
import { backupResult, Harness, vol } from "./harness";

const { JOB_STATE_SUCCEEDED: SUCCEEDED, JOB_STATE_FAILED: FAILED } = JobState;

const callsTo = (s: FakeAgentSession): CallRequest[] =>
  s.sent.flatMap((m) => (m.$case === "call" && m.value.request ? [m.value.request] : []));

describe("scheduler: one-call confirmation (confirm_backup)", () => {
  let h: Harness;
  let a1: FakeAgentSession;
  afterEach(() => h.close());
  beforeEach(() => {
    h = new Harness();
    a1 = h.connect("a1", "a", 4, [CONFIRM_FEATURE]);
  });

  /** A backup of `image` leased to a1, its outcome reported (committed at the destination when `commit`). */
  async function made(image: string, commit = true) {
    const j = h.queueBackup(vol(image));
    h.tick();
    const r = backupResult(j.backupId);
    if (commit) h.commit(j, r);
    assert.equal(h.outcome(a1, j.id, Status.OK, "", { $case: "backup", value: r }), true);
    await h.settle();
    return { j, r };
  }

  it("an agent that names the ability is asked once; the backup is AVAILABLE", async () => {
    const b1 = h.connect("b1", "b", 4, [CONFIRM_FEATURE]);
    const { j, r } = await made("v1");
    assert.deepEqual(callsTo(b1), [
      {
        $case: "confirmBackup",
        value: {
          image: { pool: "backups", namespace: "", image: r.baseImage },
          backupId: j.backupId,
          snapshot: r.snapshot,
        },
      },
    ]);
    assert.equal(h.job(j.id).state, SUCCEEDED);
    assert.equal(h.backup(j.backupId).status, BackupStatus.BACKUP_STATUS_AVAILABLE);
  });

  it("denied in one answer: no snapshot, or metadata naming another backup → DATA_LOSS", async () => {
    h.connect("b1", "b", 4, [CONFIRM_FEATURE]);
    const { j } = await made("v1", false);
    assert.equal(h.job(j.id).state, FAILED);
    assert.equal(h.job(j.id).errorCode, "DATA_LOSS");
    assert.match(h.job(j.id).errorMessage, /no snapshot backup\..* \(agent b1 of cluster b\)$/);

    const k = h.queueBackup(vol("v2"));
    h.tick();
    const r = backupResult(k.backupId);
    const c = h.commit(k, r);
    c.meta = JSON.stringify({ ...JSON.parse(c.meta), backup_id: "someone-else" });
    h.outcome(a1, k.id, Status.OK, "", { $case: "backup", value: r });
    await h.settle();
    assert.equal(h.job(k.id).errorCode, "DATA_LOSS");
    assert.match(h.job(k.id).errorMessage, /backup\..*\.meta names backup someone-else/);
  });

  it("an agent that does not name it (older) gets `snapshots` + `metadata`, never confirm_backup", async () => {
    const old = h.connect("b-old", "b");
    const { j, r } = await made("v1");
    assert.deepEqual(callsTo(old), [
      { $case: "snapshots", value: { image: { pool: "backups", namespace: "", image: r.baseImage } } },
      { $case: "metadata", value: { backupId: j.backupId, pool: "backups", namespace: "" } },
    ]);
    assert.equal(h.job(j.id).state, SUCCEEDED);
  });
});
