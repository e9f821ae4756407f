/**
 * Conformance: agents, cluster pins, backups and jobs are kept and read back as written; an update of
 * a record that is not there throws; a taken idempotency key is a UNIQUE error; the active jobs.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { registeredFsid } from "../../../src/coordinator/catalog/catalog";
import { isUniqueViolation } from "../../../src/coordinator/jobs/new-job";
import { BackupStatus, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { agent, backup, job, type OpenCatalog, T0, using, vol } from "./records";

export function recordsCrud(open: OpenCatalog): void {
  describe("records", () => {
    it("says what it is: kind, schema version, a paging key", () =>
      using(open, (c) => {
        assert.ok(c.kind === "sqlite" || c.kind === "postgresql");
        assert.ok(c.schemaVersion >= 1);
        assert.ok(c.pagingKey.length >= 16);
      }));

    it("agents: upsert replaces, listed by (cluster, agent id)", () =>
      using(open, (c) => {
        c.upsertAgent(agent("z1", "b"));
        c.upsertAgent(agent("a2", "a"));
        c.upsertAgent(agent("a1", "a"));
        c.upsertAgent(agent("a1", "a", 42));
        assert.deepEqual(
          c.listAgents().map((a) => [a.agentId, a.lastSeen]),
          [
            ["a1", 42],
            ["a2", 0],
            ["z1", 0],
          ],
        );
      }));

    it("agents: remove takes one record out, once; the cluster's pin stays", () =>
      using(open, (c) => {
        c.pinClusterFsid("a", "fsid-1", "a1");
        c.upsertAgent(agent("a1", "a"));
        c.upsertAgent(agent("a2", "a"));
        assert.equal(c.removeAgent("a1"), true);
        assert.equal(c.removeAgent("a1"), false, "already gone");
        assert.equal(c.removeAgent("nobody"), false);
        assert.deepEqual(
          c.listAgents().map((a) => a.agentId),
          ["a2"],
        );
        assert.equal(c.pinClusterFsid("a", "fsid-2", "a3").fsid, "fsid-1", "the pin is not the agents'");
        c.pinClusterFsid("b", "fsid-b", "b1");
        assert.deepEqual(
          c.clusterPins().map(({ name, fsid }) => ({ name, fsid })),
          [
            { name: "a", fsid: "fsid-1" },
            { name: "b", fsid: "fsid-b" },
          ],
        );
        assert.equal(c.clusterPins().find((p) => p.name === "b")?.pinnedBy, "b1", "who pinned it");
        c.removeAgent("a2");
        assert.equal(registeredFsid(c, "a"), "fsid-1", "a cluster's fsid outlives its agents' records");
      }));

    it("cluster pins: the first fsid wins", () =>
      using(open, (c) => {
        const p = c.pinClusterFsid("a", "fsid-1", "agent-1");
        assert.equal(p.fsid, "fsid-1");
        assert.equal(p.pinnedBy, "agent-1");
        const again = c.pinClusterFsid("a", "fsid-2", "agent-2");
        assert.deepEqual(again, p);
      }));

    it("backups: insert, get, update, per volume oldest first; an unknown update throws", () =>
      using(open, (c) => {
        const v = vol("v1");
        const b2 = backup(v, T0 + 2000);
        const b1 = backup(v, T0 + 1000, { status: BackupStatus.BACKUP_STATUS_CREATING, completedAt: undefined });
        const other = backup(vol("v2"), T0);
        for (const b of [b2, b1, other]) c.insertBackup(b);
        assert.deepEqual(c.getBackup(b1.id), b1);
        assert.equal(c.getBackup("nope"), undefined);
        const done = { ...b1, status: BackupStatus.BACKUP_STATUS_AVAILABLE, completedAt: new Date(T0 + 5000) };
        c.updateBackup(done);
        assert.deepEqual(c.getBackup(b1.id), done);
        assert.deepEqual(
          c.backupsOfVolume("a", "rbd", "", "v1").map((b) => b.id),
          [b1.id, b2.id],
        );
        assert.throws(() => c.updateBackup(backup(v, T0)), /not in the catalog/);
        assert.throws(() => c.insertBackup(b2), isUniqueViolation, "a second insert of one id: a unique violation");
      }));

    it("jobs: insert, get, update, by idempotency key; a taken key is a UNIQUE error", () =>
      using(open, (c) => {
        const j = job(T0, { idempotencyKey: "k1" });
        c.insertJob(j);
        c.insertJob(job(T0 + 1)); // "" keys do not collide
        c.insertJob(job(T0 + 2));
        assert.deepEqual(c.getJob(j.id), j);
        assert.deepEqual(c.jobByIdempotencyKey("k1"), j);
        assert.equal(c.jobByIdempotencyKey("k2"), undefined);
        let err: unknown;
        try {
          c.insertJob(job(T0 + 3, { idempotencyKey: "k1" }));
        } catch (e) {
          err = e;
        }
        assert.ok(err instanceof Error && /UNIQUE/.test(err.message), `a UNIQUE error, got ${err}`);
        assert.ok(isUniqueViolation(err), "isUniqueViolation recognises it");
        const running = { ...j, state: JobState.JOB_STATE_RUNNING, attempts: 1, agentId: "ag" };
        c.updateJob(running);
        assert.deepEqual(c.getJob(j.id), running);
        assert.throws(() => c.updateJob(job(T0)), /not in the catalog/);
      }));

    it("activeJobs: QUEUED and RUNNING, oldest first", () =>
      using(open, (c) => {
        const q = job(T0 + 30);
        const r = job(T0 + 10, { state: JobState.JOB_STATE_RUNNING });
        const s = job(T0 + 20, { state: JobState.JOB_STATE_SUCCEEDED });
        const f = job(T0 + 5, { state: JobState.JOB_STATE_FAILED });
        for (const x of [q, r, s, f]) c.insertJob(x);
        assert.deepEqual(
          c.activeJobs().map((x) => x.id),
          [r.id, q.id],
        );
      }));
  });
}
