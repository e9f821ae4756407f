/**
 * Conformance: `activeJob(id)` answers a QUEUED or RUNNING job (a fresh copy, like getJob's) and nothing
 * once the job has ended or for an unknown id — whether the store keeps its active jobs in memory
 * (SQLite) or asks its database (PostgreSQL). A rolled-back update leaves the answer as it was.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { rolledBack } from "../rollback";
import { job, type OpenCatalog, T0, using } from "./records";

export function activeJob(open: OpenCatalog): void {
  describe("active job lookup", () => {
    it("answers queued and running jobs, not ended or unknown ones, through updates and a rollback", () =>
      using(open, (c) => {
        const j = job(T0);
        c.insertJob(j);
        assert.equal(c.activeJob(j.id)?.state, JobState.JOB_STATE_QUEUED);
        // A fresh record: editing the answer does not change the store.
        const copy = c.activeJob(j.id);
        if (copy) copy.agentId = "edited";
        assert.equal(c.activeJob(j.id)?.agentId, "");
        c.updateJob({ ...j, state: JobState.JOB_STATE_RUNNING, attempts: 1, agentId: "ag1" });
        assert.equal(c.activeJob(j.id)?.state, JobState.JOB_STATE_RUNNING);
        assert.equal(c.activeJob(j.id)?.agentId, "ag1");
        rolledBack(c, () => {
          c.updateJob({ ...j, state: JobState.JOB_STATE_SUCCEEDED, attempts: 1, agentId: "ag1", finishedAt: T0 + 5 });
        });
        assert.equal(c.activeJob(j.id)?.state, JobState.JOB_STATE_RUNNING);
        c.updateJob({ ...j, state: JobState.JOB_STATE_FAILED, attempts: 1, agentId: "ag1", finishedAt: T0 + 9 });
        assert.equal(c.activeJob(j.id), undefined);
        assert.equal(c.getJob(j.id)?.state, JobState.JOB_STATE_FAILED);
        assert.equal(c.activeJob("00000000-0000-4000-8000-000000000000"), undefined);
      }));
  });
}
