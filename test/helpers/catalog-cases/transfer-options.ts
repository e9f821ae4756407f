/**
 * Conformance: TransferOptions (common.proto) survive the catalog — on a backup job's and a restore job's
 * operation (the JSON document of the job) through insert, update and reads, and on a policy through
 * insert, update and the policy listings; a record without them reads back without them.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { JobRecord } from "../../../src/coordinator/model";
import { JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import { job, type OpenCatalog, policy, T0, using, vol } from "./records";

const ZSTD_8M = { compression: Compression.COMPRESSION_ZSTD, bandwidthLimitBytesPerSecond: 8 * 1048576 };
const LZ4 = { compression: Compression.COMPRESSION_LZ4, bandwidthLimitBytesPerSecond: 0 };

export function transferOptions(open: OpenCatalog): void {
  describe("transfer options", () => {
    it("a job's operation keeps its TransferOptions through insert, update and the listings", () =>
      using(open, (c) => {
        const backup = job(T0, {
          operation: { kind: "backup", mode: 0, maxSnapshots: 2, transfer: ZSTD_8M } as JobRecord["operation"],
        });
        const restore = job(T0 + 1, {
          kind: JobKind.JOB_KIND_RESTORE,
          operation: { kind: "restore", target: vol("r1"), mode: 0, transfer: LZ4 } as JobRecord["operation"],
        });
        const plain = job(T0 + 2);
        for (const j of [backup, restore, plain]) c.insertJob(j);
        assert.deepEqual(c.getJob(backup.id)?.operation, backup.operation);
        assert.deepEqual(c.getJob(restore.id)?.operation, restore.operation);
        assert.ok(!("transfer" in (c.getJob(plain.id)?.operation ?? {})));
        c.updateJob({ ...backup, state: JobState.JOB_STATE_RUNNING, attempts: 1 });
        const after = c.getJob(backup.id);
        assert.equal(after?.state, JobState.JOB_STATE_RUNNING);
        assert.deepEqual(after?.operation, backup.operation);
        const active = c.activeJobs().find((j) => j.id === restore.id);
        assert.deepEqual(active?.operation, restore.operation);
      }));

    it("a policy keeps its TransferOptions through insert, update and the listings", () =>
      using(open, (c) => {
        const p = c.policies;
        p.insertPolicy({ ...policy("t1"), transfer: ZSTD_8M });
        p.insertPolicy(policy("t2"));
        assert.deepEqual(p.getPolicy("t1")?.transfer, ZSTD_8M);
        assert.equal(p.getPolicy("t2")?.transfer, undefined);
        p.updatePolicy({ ...policy("t1"), revision: 2, transfer: LZ4 });
        assert.deepEqual(p.getPolicy("t1")?.transfer, LZ4);
        assert.deepEqual(
          p.listPolicies(10, "").items.map((x) => [x.name, x.transfer]),
          [
            ["t1", LZ4],
            ["t2", undefined],
          ],
        );
        assert.deepEqual(p.allPolicies().find((x) => x.name === "t1")?.transfer, LZ4);
      }));
  });
}
