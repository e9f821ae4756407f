/**
 * TransferOptions (common.proto) from the public API to the agent, without Ceph: CreateBackup,
 * RestoreBackup and FailbackVolume refuse a bad compression or bandwidth cap with INVALID_ARGUMENT naming
 * the field and create nothing; good options are kept on the job's operation (empty ones are not) and
 * reach the agent in the lease's BackupRequest / RestoreRequest; an idempotency key reused with other
 * options is ALREADY_EXISTS, like any other differing field.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { BackupMode, RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import { BackupStatus, type CreateBackupRequest, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { Compression, type TransferOptions } from "../../../src/gen/rbdbackup/v1/common";
import type { Answer, FakeAgentSession } from "../../helpers/fake-agent";
import { type Api, type ApiServer, assertStatus, serveApi } from "./api-server";
import { backupResult, Harness, newBackup, vol } from "./harness";

const MiB = 1048576;
const IMAGES: Record<string, Record<string, number>> = { a: { v1: MiB, v2: MiB, v3: MiB }, b: {} };

function probeAnswer(cluster: string) {
  return (req: CallRequest): Answer => {
    if (req.$case !== "probe") return new AppError(Status.UNIMPLEMENTED, req.$case);
    const size = req.value.image ? IMAGES[cluster]?.[req.value.image.image] : undefined;
    return {
      $case: "probe",
      value: {
        missingPools: [],
        missingNamespaces: [],
        imageExists: size !== undefined,
        imageSize: size ?? 0,
        imageSnapshots: [],
      },
    };
  };
}

const request = (o: Partial<CreateBackupRequest> = {}): Partial<CreateBackupRequest> => ({
  volume: vol("v1"),
  location: { cluster: "b", pool: "", namespace: "" },
  mode: BackupMode.BACKUP_MODE_AUTO,
  ...o,
});

const BAD: Array<[string, Partial<TransferOptions>, RegExp]> = [
  ["an unknown compression", { compression: 9 as Compression }, /^transfer\.compression: unknown value 9 \(expected/],
  [
    "a cap of 1 byte/s",
    { bandwidthLimitBytesPerSecond: 1 },
    /^transfer\.bandwidth_limit_bytes_per_second: 1 is not 0 \(no cap\) or in \[1048576/,
  ],
  [
    "a cap just under 1 MiB/s",
    { bandwidthLimitBytesPerSecond: MiB - 1 },
    /^transfer\.bandwidth_limit_bytes_per_second: 1048575 is not 0/,
  ],
  [
    "a cap above 1 TiB/s",
    { bandwidthLimitBytesPerSecond: 2 ** 40 + 1 },
    /^transfer\.bandwidth_limit_bytes_per_second: 1099511627777 is not 0/,
  ],
  [
    "a cap above 2^53 (the message cannot be decoded)",
    { bandwidthLimitBytesPerSecond: 2 ** 60 },
    /^the request message could not be decoded \(.*MAX_SAFE_INTEGER.*\): a 64-bit number field holds more than 2\^53/,
  ],
];

describe("TransferOptions through the API", () => {
  let h: Harness;
  let served: ApiServer;
  let api: Api;
  let a1: FakeAgentSession;
  let b1: FakeAgentSession;
  const jobs = () => h.catalog.listJobs({}, 1000, "").items.length;

  before(async () => {
    h = new Harness(); // its scheduler is not started: a test's tick() leases
    const deps = { catalog: h.catalog, sessions: h.sessions, scheduler: h.scheduler, log: h.log, maxAttempts: 3 };
    served = await serveApi(deps);
    api = served.api;
    a1 = h.connect("a1", "a");
    a1.answer = probeAnswer("a");
    b1 = h.connect("b1", "b");
    b1.answer = probeAnswer("b");
  });
  after(async () => {
    await served.close();
    h.close();
  });

  describe("bad options: INVALID_ARGUMENT naming the field, nothing created", () => {
    for (const [what, t, message] of BAD) {
      const transfer = { compression: Compression.COMPRESSION_NONE, bandwidthLimitBytesPerSecond: 0, ...t };
      it(`CreateBackup, RestoreBackup and FailbackVolume with ${what}`, async () => {
        const before = jobs();
        await assertStatus(api.createBackup(request({ transfer })), Status.INVALID_ARGUMENT, message);
        const ready = available();
        await assertStatus(
          api.restoreBackup({ backupId: ready.id, target: vol("new", "a"), transfer }),
          Status.INVALID_ARGUMENT,
          message,
        );
        await assertStatus(
          api.failbackVolume({ volume: vol("v1"), source: vol("v1-failover", "b"), transfer }),
          Status.INVALID_ARGUMENT,
          message,
        );
        assert.equal(jobs(), before);
      });
    }
  });

  /** An available backup of a/rbd/v1 in b/backups. */
  function available() {
    const b = newBackup(vol("v1"), "b", h.t);
    const made = backupResult(b.id);
    Object.assign(b, {
      baseImage: made.baseImage,
      snapshot: made.snapshot,
      status: BackupStatus.BACKUP_STATUS_AVAILABLE,
    });
    h.catalog.insertBackup(b);
    return b;
  }

  it("a backup's options are kept on its job and sent to the source agent in the lease", async () => {
    const transfer = { compression: Compression.COMPRESSION_ZSTD, bandwidthLimitBytesPerSecond: 8 * MiB };
    const j = await api.createBackup(request({ volume: vol("v2"), transfer, idempotencyKey: "t-1" }));
    const op = h.job(j.id).operation;
    assert.equal(op.kind, "backup");
    assert.deepEqual(op.kind === "backup" && op.transfer, transfer);
    h.tick();
    const lease = a1.lease(j.id);
    assert.equal(lease.operation?.$case, "backup");
    assert.deepEqual(lease.operation?.$case === "backup" && lease.operation.value.transferOptions, transfer);
    // The same key: the same options replay the job; other options are another request.
    assert.equal((await api.createBackup(request({ volume: vol("v2"), transfer, idempotencyKey: "t-1" }))).id, j.id);
    await assertStatus(
      api.createBackup(
        request({
          volume: vol("v2"),
          transfer: { ...transfer, bandwidthLimitBytesPerSecond: 0 },
          idempotencyKey: "t-1",
        }),
      ),
      Status.ALREADY_EXISTS,
      /^idempotency_key "t-1" was used for a different request/,
    );
    await api.cancelJob({ jobId: j.id });
  });

  it("options that ask for nothing are not kept, and replay like no options at all", async () => {
    const j = await api.createBackup(request({ volume: vol("v3"), idempotencyKey: "t-2" }));
    const op = h.job(j.id).operation;
    assert.ok(op.kind === "backup" && !("transfer" in op));
    const zero = { compression: Compression.COMPRESSION_NONE, bandwidthLimitBytesPerSecond: 0 };
    const again = await api.createBackup(request({ volume: vol("v3"), transfer: zero, idempotencyKey: "t-2" }));
    assert.equal(again.id, j.id);
    await api.cancelJob({ jobId: j.id });
  });

  it("a restore's options are kept and sent to the backup cluster's agent", async () => {
    const ready = available();
    const transfer = { compression: Compression.COMPRESSION_LZ4, bandwidthLimitBytesPerSecond: MiB };
    const j = await api.restoreBackup({
      backupId: ready.id,
      target: vol("restored", "a"),
      mode: RestoreMode.RESTORE_MODE_NEW,
      transfer,
    });
    assert.equal(j.state, JobState.JOB_STATE_QUEUED);
    const op = h.job(j.id).operation;
    assert.deepEqual(op.kind === "restore" && op.transfer, transfer);
    h.tick();
    const lease = b1.lease(j.id);
    assert.deepEqual(lease.operation?.$case === "restore" && lease.operation.value.transferOptions, transfer);
    await api.cancelJob({ jobId: j.id });
  });
});
