/**
 * FlattenVolume in the coordinator, without Ceph: the real BackupService handlers, an in-memory catalog,
 * fake agents, a scheduler ticked by hand. The backup found (the one listing the clone) or named, the
 * FLATTEN job (run by the backup's cluster, locking only the clone), its success removing the clone from
 * Backup.clones, idempotency, and the exact statuses of bad requests with nothing queued.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import type { Backup } from "../../../src/coordinator/model";
import { lockOfVolume } from "../../../src/coordinator/scheduler";
import { BackupStatus, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import type { FakeAgentSession } from "../../helpers/fake-agent";
import { type Api, type ApiServer, assertStatus, serveApi } from "./api-server";
import { Harness, newBackup, vol } from "./harness";

describe("FlattenVolume (coordinator)", () => {
  let h: Harness;
  let served: ApiServer;
  let api: Api;
  let b1: FakeAgentSession;

  function available(v: VolumeRef, clones: VolumeRef[] = []): Backup {
    const b = newBackup(v, "b", h.t);
    Object.assign(b, {
      baseImage: `base-${b.id}`,
      snapshot: `snap-${b.id}`,
      status: BackupStatus.BACKUP_STATUS_AVAILABLE,
    });
    b.clones = clones;
    h.catalog.insertBackup(b);
    return b;
  }
  const flattens = () => h.catalog.listJobs({ kind: JobKind.JOB_KIND_FLATTEN }, 100, "").items.length;

  before(async () => {
    h = new Harness();
    const deps = { catalog: h.catalog, sessions: h.sessions, scheduler: h.scheduler, log: h.log, maxAttempts: 3 };
    served = await serveApi(deps);
    api = served.api;
    h.connect("a1", "a");
    b1 = h.connect("b1", "b");
  });
  after(async () => {
    await served.close();
    h.close();
  });

  it("finds the backup listing the clone; the FLATTEN job detaches it on success", async () => {
    const clone = vol("c1", "b");
    const other = vol("c2", "b");
    available(vol("v1"));
    const b = available(vol("v1"), [clone, other]);
    const j = await api.flattenVolume({ volume: clone, backupId: "", idempotencyKey: "f-1" });
    assert.equal(j.kind, JobKind.JOB_KIND_FLATTEN);
    assert.equal(j.backupId, b.id);
    const rec = h.job(j.id);
    assert.deepEqual(rec.operation, { kind: "flatten", target: clone });
    assert.equal(rec.execCluster, "b");
    assert.deepEqual(rec.locks, [lockOfVolume(clone)]);
    assert.equal((await api.flattenVolume({ volume: clone, backupId: "", idempotencyKey: "f-1" })).id, j.id);
    await assertStatus(
      api.flattenVolume({ volume: clone, backupId: b.id, idempotencyKey: "" }),
      Status.FAILED_PRECONDITION,
      new RegExp(`in use by job ${j.id}`),
    );
    h.tick();
    const lease = b1.lease(j.id);
    assert.equal(lease.operation?.$case, "flatten");
    h.outcome(b1, j.id, Status.OK, "", {
      $case: "flatten",
      value: { image: { pool: "rbd", namespace: "", image: "c1" }, flattened: false, seconds: 0, warnings: ["w"] },
    });
    await h.settle();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_SUCCEEDED);
    assert.deepEqual(h.backup(b.id).clones, [other], "the flattened clone left the list");
  });

  it("bad requests: exact statuses, nothing queued", async () => {
    const before = flattens();
    const b = available(vol("v2"), [vol("c3", "b")]);
    await assertStatus(
      api.flattenVolume({ volume: vol("nope", "b"), backupId: "", idempotencyKey: "" }),
      Status.NOT_FOUND,
      /no backup lists b\/rbd\/nope/,
    );
    await assertStatus(
      api.flattenVolume({ volume: vol("nope", "b"), backupId: b.id, idempotencyKey: "" }),
      Status.NOT_FOUND,
      new RegExp(`backup ${b.id} does not list`),
    );
    await assertStatus(
      api.flattenVolume({ volume: vol("c3", "b"), backupId: "not-a-uuid", idempotencyKey: "" }),
      Status.INVALID_ARGUMENT,
      /backup_id/,
    );
    await assertStatus(
      api.flattenVolume({ volume: undefined, backupId: "", idempotencyKey: "" }),
      Status.INVALID_ARGUMENT,
      /volume/,
    );
    assert.equal(flattens(), before);
  });
});
