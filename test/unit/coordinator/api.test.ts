/**
 * The BackupService's admission without Ceph: the real handlers and error middleware on a gRPC server
 * on 127.0.0.1:0, an in-memory catalog, fake agents answering the probes, and a stopped scheduler (jobs
 * stay QUEUED). Asserts the exact status each bad request gets and the field its message names.
 */
import assert from "node:assert/strict";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { Catalog } from "../../../src/coordinator/catalog/catalog";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { BackupMode, RestoreMode, type VerifyMode } from "../../../src/gen/rbdbackup/v1/agent";
import {
  BackupIntegrity,
  BackupStatus,
  type CreateBackupRequest,
  JobKind,
  JobState,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import type { Answer, FakeAgentSession } from "../../helpers/fake-agent";
import { type Api, type ApiServer, assertStatus, serveApi } from "./api-server";
import { backupResult, Harness, newBackup, vol } from "./harness";

/** What the fake clusters hold: pools and images (name → size). */
const CLUSTERS: Record<string, { pools: string[]; images: Record<string, number> }> = {
  a: { pools: ["rbd"], images: { v1: 1 << 20, v2: 1 << 20, empty: 0, taken: 1 << 20 } },
  b: { pools: ["backups"], images: {} },
};

function clusterAnswer(cluster: string) {
  return (req: CallRequest): Answer => {
    const c = CLUSTERS[cluster] ?? { pools: [], images: {} };
    if (req.$case !== "probe") return new AppError(Status.UNIMPLEMENTED, req.$case);
    const q = req.value;
    const size = q.image ? c.images[q.image.image] : undefined;
    const value = {
      missingPools: q.pools.filter((p) => !c.pools.includes(p)),
      missingNamespaces: q.namespaces.map((n) => n.namespace),
      imageExists: size !== undefined,
      imageSize: size ?? 0,
      imageSnapshots: [],
    };
    return { $case: "probe", value };
  };
}

const request = (o: Partial<CreateBackupRequest> = {}): Partial<CreateBackupRequest> => ({
  volume: vol("v1"),
  location: { cluster: "b", pool: "", namespace: "" },
  mode: BackupMode.BACKUP_MODE_AUTO,
  ...o,
});

describe("BackupService admission", () => {
  let h: Harness;
  let catalog: Catalog;
  let served: ApiServer;
  let api: Api;
  let a1: FakeAgentSession;
  /** Set by a test to make the catalog fail (an internal error). */
  let breakCatalog = false;

  before(async () => {
    h = new Harness();
    h.scheduler.stop();
    catalog = new Proxy(h.catalog, {
      get(target, prop, receiver) {
        if (prop === "getJob" && breakCatalog) return () => assert.fail("disk on fire");
        const v = Reflect.get(target, prop, receiver);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const deps = { catalog, sessions: h.sessions, scheduler: h.scheduler, log: h.log, maxAttempts: 3 };
    served = await serveApi(deps);
    api = served.api;
    a1 = h.connect("a1", "a");
    a1.answer = clusterAnswer("a");
    h.connect("b1", "b").answer = clusterAnswer("b");
    h.catalog.upsertAgent({ ...a1.info, agentId: "z1", clusterName: "z" }); // known, never connected
  });
  after(async () => {
    await served.close();
    h.close();
  });
  beforeEach(() => {
    breakCatalog = false;
  });
  afterEach(() => {
    breakCatalog = false;
  });

  describe("bad input is INVALID_ARGUMENT naming the field", () => {
    const cases: Array<[string, Partial<CreateBackupRequest>, RegExp]> = [
      ["no volume", { volume: undefined }, /^volume is required$/],
      ["a pool with a slash", { volume: { ...vol("v1"), pool: "r/bd" } }, /^volume\.pool "r\/bd" is not a valid name/],
      ["no image", { volume: { ...vol("v1"), image: "" } }, /^volume\.image is required$/],
      ["a bad cluster name", { volume: { ...vol("v1"), cluster: "-x" } }, /^volume\.cluster "-x" must be/],
      ["no location", { location: undefined }, /^location is required$/],
      [
        "a namespace without a pool",
        { location: { cluster: "b", pool: "", namespace: "ns" } },
        /location\.namespace needs location\.pool/,
      ],
      ["an unknown mode", { mode: 42 as BackupMode }, /^mode: unknown value 42/],
      ["a bad idempotency key", { idempotencyKey: "not ok" }, /^idempotency_key must be/],
      [
        "a policy run's idempotency key",
        { idempotencyKey: "pol:gold:1764547260000:0123abcd" },
        /^idempotency_key may not start with "pol:": policy runs use those/,
      ],
      [
        "a policy verification's idempotency key",
        { idempotencyKey: "policy-verify:0123abcd" },
        /^idempotency_key may not start with "policy-verify:"/,
      ],
      ["too many snapshots", { maxSnapshots: 5000 }, /^max_snapshots 5000 is above 1000/],
      ["an empty metadata key", { volumeMetadata: { "": "x" } }, /volume_metadata keys must not be empty/],
      ["a NUL in volume_id (PostgreSQL's text cannot hold it)", { volumeId: "a\u0000b" }, /^volume_id contains NUL/],
      [
        "a volume named like a base image",
        { volume: vol(`v1.backup.${crypto.randomUUID()}`) },
        /^volume\.image "v1\.backup\..*" is named like a backup's base image/,
      ],
    ];
    for (const [what, o, message] of cases) {
      it(`CreateBackup with ${what}`, () =>
        assertStatus(api.createBackup(request(o)), Status.INVALID_ARGUMENT, message));
    }

    it("ids, page sizes and page tokens of the other methods", async () => {
      await assertStatus(
        api.getJob({ jobId: "nope" }),
        Status.INVALID_ARGUMENT,
        /^job_id "nope" must be a lowercase UUID/,
      );
      await assertStatus(api.getBackup({ backupId: "" }), Status.INVALID_ARGUMENT, /^backup_id is required/);
      await assertStatus(api.listBackups({ pageSize: 5000 }), Status.INVALID_ARGUMENT, /^page_size 5000/);
      // Filters no index serves (a scan of every backup): a pool or an image without its cluster.
      await assertStatus(api.listBackups({ image: "v1" }), Status.INVALID_ARGUMENT, /^image needs cluster/);
      await assertStatus(api.listBackups({ pool: "rbd", image: "v1" }), Status.INVALID_ARGUMENT, /^pool needs cluster/);
      await assertStatus(api.listBackups({ volumeId: "a\u0000b" }), Status.INVALID_ARGUMENT, /^volume_id contains NUL/);
      assert.deepEqual((await api.listBackups({ cluster: "a", image: "nope" })).backups, []);
      await assertStatus(api.listJobs({ pageToken: "garbage" }), Status.INVALID_ARGUMENT, /page_token/);
      await assertStatus(
        api.restoreBackup({ backupId: crypto.randomUUID(), target: undefined }),
        Status.INVALID_ARGUMENT,
        /^target is required/,
      );
      // A restore over a chain's base image would rewrite its head (the backup need not exist: refused first).
      await assertStatus(
        api.restoreBackup({ backupId: crypto.randomUUID(), target: vol(`v1.backup.${crypto.randomUUID()}`, "b") }),
        Status.INVALID_ARGUMENT,
        /^target\.image "v1\.backup\..*" is named like a backup's base image/,
      );
      await assertStatus(
        api.importBackupRecord({ record: { version: 2, backup: newBackup(vol("v1"), "b", 0) } }),
        Status.INVALID_ARGUMENT,
        /^record\.version 2 is not supported/,
      );
      const notBase = newBackup(vol("v1"), "b", 0);
      notBase.baseImage = "prod-volume";
      notBase.snapshot = `backup.${notBase.id}.snap.1`;
      notBase.status = BackupStatus.BACKUP_STATUS_AVAILABLE;
      await assertStatus(
        api.importBackupRecord({ record: { version: 1, backup: notBase } }),
        Status.INVALID_ARGUMENT,
        /^record\.backup\.base_image "prod-volume" is not a base image name/,
      );
      const badClone = newBackup(vol("v1"), "b", 0);
      badClone.baseImage = `v1.backup.${badClone.id}`;
      badClone.snapshot = `backup.${badClone.id}.snap.1`;
      badClone.status = BackupStatus.BACKUP_STATUS_AVAILABLE;
      badClone.clones = [{ cluster: "", pool: "rbd", namespace: "", image: "a@b" }];
      await assertStatus(
        api.importBackupRecord({ record: { version: 1, backup: badClone } }),
        Status.INVALID_ARGUMENT,
        /^record\.backup\.clones\[0\]/,
      );
      const good = () => {
        const b = newBackup(vol("v1"), "b", 0);
        Object.assign(b, {
          baseImage: `v1.backup.${b.id}`,
          snapshot: `backup.${b.id}.snap.1`,
          status: BackupStatus.BACKUP_STATUS_AVAILABLE,
        });
        return b;
      };
      const integrity = (imageDigest: string, digestBlockSize: number) =>
        BackupIntegrity.fromPartial({ imageDigest, digestBlockSize });
      for (const [over, why] of [
        [{ integrity: integrity("AB".repeat(32), 65536) }, /^record\.backup\.integrity\.image_digest/],
        [{ integrity: integrity("ab".repeat(32), 4096) }, /^record\.backup\.integrity\.digest_block_size/],
        [{ integrity: integrity("", 65536) }, /^record\.backup\.integrity\.digest_block_size must be 0/],
        [
          { createdAt: new Date("+010000-01-01T00:00:00Z") },
          /^record\.backup\.created_at must be between 1970 and 9999/,
        ],
        [
          { integrity: BackupIntegrity.fromPartial({ lastVerifiedAt: new Date("+010000-01-01T00:00:00Z") }) },
          /^record\.backup\.integrity\.last_verified_at must be between 1970 and 9999/,
        ],
        [
          { integrity: BackupIntegrity.fromPartial({ lastVerifyMode: 99 as VerifyMode }) },
          /^record\.backup\.integrity\.last_verify_mode/,
        ],
      ] as const) {
        await assertStatus(
          api.importBackupRecord({ record: { version: 1, backup: { ...good(), ...over } } }),
          Status.INVALID_ARGUMENT,
          why,
        );
      }
    });

    it("WatchJob refuses a bad id with the same status (through the streaming path)", async () => {
      const watch = async () => {
        for await (const _ of api.watchJob({ jobId: "x" })) assert.fail("no event expected");
      };
      await assertStatus(watch(), Status.INVALID_ARGUMENT, /^job_id "x"/);
    });
  });

  describe("clusters and volumes", () => {
    it("an unknown cluster is NOT_FOUND naming the field", async () => {
      await assertStatus(
        api.createBackup(request({ volume: vol("v1", "nowhere") })),
        Status.NOT_FOUND,
        /^volume\.cluster: cluster nowhere is unknown/,
      );
      await assertStatus(
        api.createBackup(request({ location: { cluster: "nowhere", pool: "", namespace: "" } })),
        Status.NOT_FOUND,
        /^location\.cluster: cluster nowhere is unknown/,
      );
    });

    it("a known cluster with no agent connected is UNAVAILABLE", () =>
      assertStatus(
        api.createBackup(request({ volume: vol("v1", "z") })),
        Status.UNAVAILABLE,
        /no agent of cluster z is connected/,
      ));

    it("what the agents do not find is NOT_FOUND; an empty volume FAILED_PRECONDITION", async () => {
      await assertStatus(
        api.createBackup(request({ location: { cluster: "b", pool: "nopool", namespace: "" } })),
        Status.NOT_FOUND,
        /^location\.pool: pool nopool not found on cluster b/,
      );
      await assertStatus(
        api.createBackup(request({ location: { cluster: "b", pool: "backups", namespace: "ns" } })),
        Status.NOT_FOUND,
        /^location\.namespace: RBD namespace ns not found on cluster b/,
      );
      await assertStatus(
        api.createBackup(request({ volume: vol("ghost") })),
        Status.NOT_FOUND,
        /^volume a\/rbd\/ghost not found/,
      );
      await assertStatus(api.createBackup(request({ volume: vol("empty") })), Status.FAILED_PRECONDITION, /has size 0/);
    });

    it("INCREMENTAL without a parent backup in that location is FAILED_PRECONDITION", () =>
      assertStatus(
        api.createBackup(request({ mode: BackupMode.BACKUP_MODE_INCREMENTAL })),
        Status.FAILED_PRECONDITION,
        /^mode INCREMENTAL: no available backup of a\/rbd\/v1 in b\/backups/,
      ));
  });

  describe("jobs", () => {
    it("a good request queues a job and a CREATING backup in the agent's default backup pool", async () => {
      const j = await api.createBackup(request({ volume: vol("v2") }));
      assert.equal(j.state, JobState.JOB_STATE_QUEUED);
      assert.equal(j.maxAttempts, 3);
      const b = h.backup(j.backupId);
      assert.equal(b.status, BackupStatus.BACKUP_STATUS_CREATING);
      assert.equal(b.location?.pool, "backups");
      assert.equal(b.jobId, j.id);
      await api.cancelJob({ jobId: j.id });
    });

    it("the volume's probe asks its agent to keep the volume open for the backup (keep_open)", async () => {
      const asked: Array<[string, boolean]> = [];
      const record = (cluster: string, answer: (req: CallRequest) => Answer) => (req: CallRequest) => {
        if (req.$case === "probe")
          asked.push([req.value.image ? `${cluster} volume` : `${cluster} location`, req.value.keepOpen]);
        return answer(req);
      };
      a1.answer = record("a", clusterAnswer("a"));
      try {
        const j = await api.createBackup(request({ volume: vol("v2") }));
        await api.cancelJob({ jobId: j.id });
      } finally {
        a1.answer = clusterAnswer("a");
      }
      assert.deepEqual(asked, [["a volume", true]]);
    });

    it("an idempotency key returns the same job; reused for another request, ALREADY_EXISTS (not naming the job: keys are one namespace)", async () => {
      const meta = { x: "1", y: "2" };
      const first = await api.createBackup(request({ idempotencyKey: "k-1", volumeMetadata: meta }));
      const again = await api.createBackup(request({ idempotencyKey: "k-1", volumeMetadata: { y: "2", x: "1" } }));
      assert.equal(again.id, first.id, "metadata order does not matter");
      await assertStatus(
        api.createBackup(request({ idempotencyKey: "k-1", volume: vol("v2") })),
        Status.ALREADY_EXISTS,
        /^idempotency_key "k-1" was used for a different request: give each request its own key$/,
      );
      await api.cancelJob({ jobId: first.id });
    });

    it("CancelJob ends a queued job at once; a finished job cannot be cancelled; WatchJob ends with it", async () => {
      const j = await api.createBackup(request());
      const events: JobState[] = [];
      const watching = (async () => {
        for await (const e of api.watchJob({ jobId: j.id })) if (e.job) events.push(e.job.state);
      })();
      const c = await api.cancelJob({ jobId: j.id });
      assert.equal(c.state, JobState.JOB_STATE_CANCELLED);
      await watching;
      assert.equal(events.at(-1), JobState.JOB_STATE_CANCELLED);
      await assertStatus(
        api.cancelJob({ jobId: j.id }),
        Status.FAILED_PRECONDITION,
        /has already finished \(JOB_STATE_CANCELLED\)/,
      );
      await assertStatus(api.getJob({ jobId: crypto.randomUUID() }), Status.NOT_FOUND, /^job .* not found/);
    });

    it("restore and delete check the backup's state and the target", async () => {
      const ready = newBackup(vol("v1"), "b", h.t);
      const made = backupResult(ready.id);
      Object.assign(ready, {
        baseImage: made.baseImage,
        snapshot: made.snapshot,
        status: BackupStatus.BACKUP_STATUS_AVAILABLE,
      });
      h.catalog.insertBackup(ready);
      const creating = newBackup(vol("v1"), "b", h.t);
      h.catalog.insertBackup(creating);
      const restore = (backupId: string, image: string, mode = RestoreMode.RESTORE_MODE_NEW) =>
        api.restoreBackup({ backupId, target: vol(image), mode });
      await assertStatus(restore(crypto.randomUUID(), "new"), Status.NOT_FOUND, /^backup .* not found/);
      await assertStatus(
        restore(creating.id, "new"),
        Status.FAILED_PRECONDITION,
        /is BACKUP_STATUS_CREATING; only an available/,
      );
      await assertStatus(restore(ready.id, "taken"), Status.ALREADY_EXISTS, /^target a\/rbd\/taken exists/);
      await assertStatus(
        restore(ready.id, "gone", RestoreMode.RESTORE_MODE_ORIGINAL),
        Status.NOT_FOUND,
        /^target a\/rbd\/gone not found/,
      );
      const r = await restore(ready.id, "fresh");
      await assertStatus(restore(ready.id, "fresh"), Status.FAILED_PRECONDITION, new RegExp(`in use by job ${r.id}`));
      await assertStatus(
        api.deleteBackup({ backupId: ready.id }),
        Status.FAILED_PRECONDITION,
        new RegExp(`QUEUED JOB_KIND_RESTORE job ${r.id}`),
      );
      await api.cancelJob({ jobId: r.id });
      const d = await api.deleteBackup({ backupId: ready.id });
      assert.equal(h.backup(ready.id).status, BackupStatus.BACKUP_STATUS_DELETING);
      await api.cancelJob({ jobId: d.id });
    });

    it("DeleteBackup of a DELETED backup: refused, unless its delete did not finish (then it removes what is left)", async () => {
      const gone = newBackup(vol("v1"), "b", h.t);
      Object.assign(gone, {
        status: BackupStatus.BACKUP_STATUS_DELETED,
        baseImage: `v1.backup.${gone.id}`,
        snapshot: "s",
      });
      catalog.insertBackup(gone);
      await assertStatus(
        api.deleteBackup({ backupId: gone.id }),
        Status.FAILED_PRECONDITION,
        /is BACKUP_STATUS_DELETED; only an available, corrupt or failed backup, or a deleted one whose delete did not finish/,
      );
      gone.error = "delete unfinished: base image busy";
      catalog.updateBackup(gone);
      const d = await api.deleteBackup({ backupId: gone.id });
      assert.equal(d.kind, JobKind.JOB_KIND_DELETE);
      await api.cancelJob({ jobId: d.id });
    });

    it("DeleteBackup of a FAILED backup: a DELETE job that knows the backup failed (its attempt may have left data on the destination)", async () => {
      const failed = newBackup(vol("v1"), "b", h.t);
      Object.assign(failed, { status: BackupStatus.BACKUP_STATUS_FAILED, error: "UNAVAILABLE: agent gone" });
      catalog.insertBackup(failed);
      const d = await api.deleteBackup({ backupId: failed.id });
      assert.equal(d.kind, JobKind.JOB_KIND_DELETE);
      assert.equal(h.backup(failed.id).status, BackupStatus.BACKUP_STATUS_DELETING);
      assert.deepEqual(catalog.getJob(d.id)?.operation, { kind: "delete", failedBackup: true });
      await api.cancelJob({ jobId: d.id });
      assert.equal(h.backup(failed.id).status, BackupStatus.BACKUP_STATUS_FAILED);
    });

    it("ListAgents shows which agents are connected", async () => {
      const { agents } = await api.listAgents({});
      assert.deepEqual(
        agents.map((a) => [a.agentId, a.connected]),
        [
          ["a1", true],
          ["b1", true],
          ["z1", false],
        ],
      );
    });

    it("ListAgents shows a connected agent's last_seen from its session, not the catalog's older copy", async () => {
      const stored = h.catalog.listAgents().find((a) => a.agentId === "a1")?.lastSeen ?? 0;
      const beat = stored + 5_000;
      assert.equal(a1.seen(beat), false, "inside the window: not written");
      assert.equal(h.catalog.listAgents().find((a) => a.agentId === "a1")?.lastSeen, stored);
      const { agents } = await api.listAgents({});
      assert.equal(agents.find((a) => a.agentId === "a1")?.lastSeen?.getTime(), beat);
    });
  });

  it("an unexpected failure is INTERNAL with a generic message; the details go to the log", async () => {
    breakCatalog = true;
    await assertStatus(
      api.getJob({ jobId: crypto.randomUUID() }),
      Status.INTERNAL,
      /^internal error \(see the server's log\)$/,
    );
    const line = h.log.lines.findLast((l) => l.level === "error");
    assert.equal(line?.msg, "/rbdbackup.v1.BackupService/GetJob failed");
    assert.match(String((line?.fields?.err as Error)?.message), /disk on fire/);
  });
});
