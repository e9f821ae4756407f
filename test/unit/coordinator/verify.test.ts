/**
 * Verification on the coordinator, without Ceph: the real BackupService handlers on 127.0.0.1:0, an
 * in-memory catalog, fake agents, a scheduler ticked by hand. Asserts VerifyBackup's refusals (exact
 * statuses), the VERIFY lease (backup cluster; SOURCE on the volume's cluster with the digest map the
 * coordinator fetched), a mismatch making the backup CORRUPT (job SUCCEEDED, integrity naming the
 * extent), RestoreBackup refusing CORRUPT unless allow_corrupt, the next backup to that location leased
 * FULL with the reason, and a failed delete of a CORRUPT backup leaving it CORRUPT.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import Database from "better-sqlite3";
import { Status } from "nice-grpc-common";
import client from "prom-client";
import { AppError } from "../../../src/common/errors";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import type { Backup } from "../../../src/coordinator/model";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { VerifyMetrics } from "../../../src/coordinator/verify-metrics";
import { BackupMode, RestoreMode, VerifyMode, type VerifyResult } from "../../../src/gen/rbdbackup/v1/agent";
import {
  BackupIntegrity,
  Backup as BackupMsg,
  BackupStatus,
  JobKind,
  JobState,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import type { Answer, FakeAgentSession } from "../../helpers/fake-agent";
import { type Api, type ApiServer, assertStatus, serveHarness } from "./api-server";
import { backupResult, Harness, newBackup, vol } from "./harness";

const DIGEST = "ab".repeat(32);
const MAP = new Uint8Array([82, 66, 68, 68, 77, 65, 80, 49]);

/** Snapshots on the source volumes (cluster a), by image; maps kept on cluster b, by backup id. */
const sourceSnaps = new Map<string, string[]>();
const maps = new Map<string, Uint8Array>();

/** Run when the volume's cluster is probed (what happens meanwhile elsewhere), then cleared. */
let duringProbe: (() => void) | null = null;

function answerOf(h: Harness, cluster: string) {
  return (req: CallRequest): Answer => {
    if (req.$case === "probe" && cluster === "a") {
      duringProbe?.();
      duringProbe = null;
      const q = req.value;
      const snaps = q.image ? sourceSnaps.get(q.image.image) : undefined;
      const value = {
        missingPools: [],
        missingNamespaces: [],
        imageExists: snaps !== undefined,
        imageSize: snaps ? 1 << 20 : 0,
        imageSnapshots: (snaps ?? []).map((name) => ({ name, backupId: "", timestamp: 1, snapId: 1, size: 1 })),
      };
      return { $case: "probe", value };
    }
    if (req.$case === "digestMap") {
      const m = maps.get(req.value.backupId);
      return { $case: "digestMap", value: { found: !!m, map: m ?? new Uint8Array() } };
    }
    return h.destinationAnswer(cluster, req);
  };
}

const result = (backupId: string, mode: VerifyMode, ok: boolean): VerifyResult => ({
  backupId,
  mode,
  ok,
  blocksChecked: 16,
  bytesRead: 1 << 20,
  badBlocks: ok ? 0 : 1,
  firstBadOffset: ok ? 0 : 4 << 20,
  firstBadLength: ok ? 0 : 65536,
  reason: ok ? "" : "block 64: crc32c 0x1234abcd, map says 0x0badf00d",
  seconds: 0.5,
  warnings: [],
});

describe("verification (coordinator)", () => {
  let h: Harness;
  let served: ApiServer;
  let api: Api;
  let a1: FakeAgentSession;
  let b1: FakeAgentSession;
  let metrics: VerifyMetrics;

  /** An AVAILABLE backup of `v` kept in b/backups (with a digest map unless `digest` is ""). */
  function available(v: VolumeRef, digest = DIGEST, baseOf?: Backup): Backup {
    const b = newBackup(v, "b", h.t);
    h.advance(1000);
    const made = backupResult(b.id);
    Object.assign(b, {
      baseImage: baseOf?.baseImage ?? made.baseImage,
      snapshot: made.snapshot,
      status: BackupStatus.BACKUP_STATUS_AVAILABLE,
      completedAt: new Date(h.t),
    });
    if (digest) {
      b.integrity = BackupIntegrity.fromPartial({ imageDigest: digest, digestBlockSize: 65536 });
    }
    h.catalog.insertBackup(b);
    return b;
  }

  /** A SOURCE verification of `b` asked through the API (the job, queued). */
  const askSource = (b: Backup) =>
    api.verifyBackup({ backupId: b.id, mode: VerifyMode.VERIFY_MODE_SOURCE, samplePercent: 0, idempotencyKey: "" });

  /** Runs a VERIFY of `b` through the API to its outcome on `agent`; returns the job id. */
  async function verify(b: Backup, mode: VerifyMode, ok: boolean, agent = b1): Promise<string> {
    const job = await api.verifyBackup({ backupId: b.id, mode, samplePercent: 0, idempotencyKey: "" });
    h.tick();
    await h.settle();
    h.tick();
    assert.equal(agent.lease(job.id).operation?.$case, "verify");
    h.outcome(agent, job.id, Status.OK, "", { $case: "verify", value: result(b.id, mode, ok) });
    return job.id;
  }

  before(async () => {
    h = new Harness();
    served = await serveHarness(h);
    api = served.api;
    a1 = h.connect("a1", "a");
    a1.answer = answerOf(h, "a");
    b1 = h.connect("b1", "b");
    b1.answer = answerOf(h, "b");
    metrics = new VerifyMetrics(h.catalog, h.scheduler);
  });
  after(async () => {
    await served.close();
    h.close();
  });
  beforeEach(() => {
    // Each test starts with an empty queue: what an earlier test left running is finished.
    for (const j of h.catalog.activeJobs()) h.scheduler.cancel(j);
  });

  it("VerifyBackup refuses what it cannot verify, with the exact status", async () => {
    const v = vol("refuse");
    const old = available(v, "");
    const ask = (backupId: string, mode = VerifyMode.VERIFY_MODE_UNSPECIFIED, samplePercent = 0) =>
      api.verifyBackup({ backupId, mode, samplePercent, idempotencyKey: "" });
    await assertStatus(ask("nope"), Status.INVALID_ARGUMENT, /^backup_id/);
    await assertStatus(ask("0b0e2a4c-0000-4000-8000-000000000000"), Status.NOT_FOUND, /not found/);
    await assertStatus(ask(old.id, 9 as VerifyMode), Status.INVALID_ARGUMENT, /^mode: unknown value 9/);
    await assertStatus(ask(old.id, VerifyMode.VERIFY_MODE_SAMPLE, 101), Status.INVALID_ARGUMENT, /^sample_percent/);
    await assertStatus(ask(old.id, VerifyMode.VERIFY_MODE_FULL, 20), Status.INVALID_ARGUMENT, /only mode SAMPLE/);
    await assertStatus(
      ask(old.id, VerifyMode.VERIFY_MODE_FULL),
      Status.FAILED_PRECONDITION,
      new RegExp(`backup ${old.id} was made before digest maps existed: mode FULL`),
    );
    // SAMPLE (UNSPECIFIED) too; METADATA is allowed without a map.
    await assertStatus(ask(old.id), Status.FAILED_PRECONDITION, /mode SAMPLE needs one/);
    const meta = await ask(old.id, VerifyMode.VERIFY_MODE_METADATA);
    assert.equal(meta.kind, JobKind.JOB_KIND_VERIFY);
    const creating = newBackup(v, "b", h.t);
    h.catalog.insertBackup(creating);
    await assertStatus(ask(creating.id), Status.FAILED_PRECONDITION, /is BACKUP_STATUS_CREATING; only an available/);
    // SOURCE: the volume must still hold the backup's snapshot.
    const b = available(v);
    sourceSnaps.set("refuse", []);
    await assertStatus(
      ask(b.id, VerifyMode.VERIFY_MODE_SOURCE),
      Status.FAILED_PRECONDITION,
      new RegExp(`no longer holds snapshot ${b.snapshot} of backup ${b.id}`),
    );
    sourceSnaps.delete("refuse");
    await assertStatus(ask(b.id, VerifyMode.VERIFY_MODE_SOURCE), Status.FAILED_PRECONDITION, /no longer exists/);
  });

  it("SOURCE: a backup that turned DELETING while its volume was probed is refused, no job queued", async () => {
    const v = vol("deleted-meanwhile");
    const b = available(v);
    sourceSnaps.set("deleted-meanwhile", [b.snapshot]);
    duringProbe = () => {
      // DeleteBackup admitted during the probe's wait.
      const now = h.catalog.getBackup(b.id) as Backup;
      h.catalog.updateBackup({ ...now, status: BackupStatus.BACKUP_STATUS_DELETING });
    };
    const jobsBefore = h.catalog.activeJobs().length;
    await assertStatus(
      api.verifyBackup({ backupId: b.id, mode: VerifyMode.VERIFY_MODE_SOURCE, samplePercent: 0, idempotencyKey: "" }),
      Status.FAILED_PRECONDITION,
      /is BACKUP_STATUS_DELETING; only an available/,
    );
    assert.equal(h.catalog.activeJobs().length, jobsBefore, "no VERIFY queued on a backup being deleted");
    sourceSnaps.delete("deleted-meanwhile");
  });

  it("the same idempotency key returns the same job; with another request it is ALREADY_EXISTS", async () => {
    const b = available(vol("idem"));
    const req = { backupId: b.id, mode: VerifyMode.VERIFY_MODE_SAMPLE, samplePercent: 10, idempotencyKey: "v-1" };
    const j1 = await api.verifyBackup(req);
    // UNSPECIFIED and 0 mean SAMPLE 10: the same request.
    const j2 = await api.verifyBackup({ ...req, mode: VerifyMode.VERIFY_MODE_UNSPECIFIED, samplePercent: 0 });
    assert.equal(j2.id, j1.id);
    await assertStatus(api.verifyBackup({ ...req, samplePercent: 50 }), Status.ALREADY_EXISTS, /different request/);
  });

  it("a clean FULL verify: leased to the backup's cluster, SUCCEEDED, integrity says ok, backup AVAILABLE", async () => {
    const b = available(vol("clean"));
    const id = await verify(b, VerifyMode.VERIFY_MODE_FULL, true);
    const l = b1.lease(id);
    assert.ok(l.operation?.$case === "verify");
    const rq = l.operation.value;
    assert.deepEqual(
      [rq.backupId, rq.mode, rq.backupPool, rq.baseImage, rq.snapshot, rq.imageDigest, rq.jobId],
      [b.id, VerifyMode.VERIFY_MODE_FULL, "backups", b.baseImage, b.snapshot, DIGEST, id],
    );
    assert.equal(rq.source, undefined);
    assert.equal(h.job(id).state, JobState.JOB_STATE_SUCCEEDED);
    const after = h.backup(b.id);
    assert.equal(after.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.equal(after.integrity?.lastVerifyOk, true);
    assert.equal(after.integrity?.lastVerifyMode, VerifyMode.VERIFY_MODE_FULL);
    assert.equal(after.integrity?.lastVerifiedAt?.getTime(), h.t);
    assert.equal(after.integrity?.imageDigest, DIGEST);
    const job = await api.getJob({ jobId: id });
    assert.equal(job.verify?.ok, true);
    assert.equal(job.verify?.blocksChecked, 16);
  });

  it("a mismatch: CORRUPT naming the extent, restore refused unless allow_corrupt, next backup FULL with the reason", async () => {
    const v = vol("bad");
    const base = available(v);
    const b = available(v, DIGEST, base); // an incremental on base's chain
    const id = await verify(base, VerifyMode.VERIFY_MODE_SAMPLE, false);
    assert.equal(h.job(id).state, JobState.JOB_STATE_SUCCEEDED, "the job did its work");
    const bad = h.backup(base.id);
    assert.equal(bad.status, BackupStatus.BACKUP_STATUS_CORRUPT);
    assert.equal(bad.integrity?.lastVerifyOk, false);
    assert.equal(bad.integrity?.firstBadOffset, 4 << 20);
    assert.equal(bad.integrity?.firstBadLength, 65536);
    assert.match(bad.integrity?.corruptReason ?? "", /^block 64: crc32c/);
    assert.equal(h.backup(b.id).status, BackupStatus.BACKUP_STATUS_AVAILABLE, "only the verified backup is marked");

    const restore = (allowCorrupt: boolean) =>
      api.restoreBackup({
        backupId: base.id,
        target: vol("bad-restored"),
        mode: RestoreMode.RESTORE_MODE_NEW,
        idempotencyKey: "",
        flatten: false,
        allowCorrupt,
      });
    sourceSnaps.delete("bad-restored");
    await assertStatus(
      restore(false),
      Status.FAILED_PRECONDITION,
      new RegExp(`^backup ${base.id} is CORRUPT: .* at offset ${4 << 20} \\(\\+65536 bytes\\).*allow_corrupt`),
    );
    const r = await restore(true);
    assert.equal(r.kind, JobKind.JOB_KIND_RESTORE);
    h.scheduler.cancel(h.job(r.id));

    // The next backup of the volume to b/backups extends base's chain: leased FULL, with the reason.
    const next = h.queueBackup(v, "b");
    h.tick();
    const lease = a1.lease(next.id);
    assert.ok(lease.operation?.$case === "backup");
    assert.equal(lease.operation.value.mode, BackupMode.BACKUP_MODE_FULL);
    await h.backupDone(a1, next);
    const made = h.backup(next.backupId);
    assert.equal(made.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.match(made.forcedFullReason, new RegExp(`^backup ${base.id} of chain .* is CORRUPT \\(block 64`));

    // The chain after it is a new one: the backup after that is AUTO again.
    const after = h.queueBackup(v, "b");
    await h.tickAfterSweep();
    const l2 = a1.lease(after.id);
    assert.ok(l2.operation?.$case === "backup");
    assert.equal(l2.operation.value.mode, BackupMode.BACKUP_MODE_AUTO);
    await h.backupDone(a1, after);
    assert.equal(h.backup(after.backupId).forcedFullReason, "");
  });

  it("a volume that outgrew its chain's digest map (over 3·2^18 blocks of the chain's size): the next backup is FULL, with the reason", async () => {
    for (const [blocks, mode] of [
      [3 * 2 ** 18, BackupMode.BACKUP_MODE_AUTO],
      [3 * 2 ** 18 + 1, BackupMode.BACKUP_MODE_FULL],
    ] as const) {
      const v = vol(`grown-${blocks}`);
      available(v); // its chain's map has 64 KiB blocks
      const next = h.queueBackup(v, "b");
      h.catalog.updateBackup({ ...h.backup(next.backupId), sizeBytes: blocks * 65536 }); // as the probe found it
      await h.tickAfterSweep();
      const lease = a1.lease(next.id);
      assert.ok(lease.operation?.$case === "backup");
      assert.equal(BackupMode[lease.operation.value.mode], BackupMode[mode], `${blocks} blocks`);
      await h.backupDone(a1, next);
      const reason = h.backup(next.backupId).forcedFullReason;
      if (mode === BackupMode.BACKUP_MODE_FULL) {
        assert.match(
          reason,
          new RegExp(`^the volume grew to ${blocks * 65536} bytes: chain .* would hold ${blocks} blocks`),
        );
      } else assert.equal(reason, "");
    }
  });

  it("a backup to another location is not forced FULL by a corrupt chain elsewhere", async () => {
    const v = vol("elsewhere");
    const bad = available(v);
    const id = await verify(bad, VerifyMode.VERIFY_MODE_FULL, false);
    assert.equal(h.job(id).state, JobState.JOB_STATE_SUCCEEDED);
    h.connect("c1", "c").answer = (req) => h.destinationAnswer("c", req);
    const other = h.queueBackup(v, "c");
    h.tick();
    const l = a1.lease(other.id);
    assert.ok(l.operation?.$case === "backup");
    assert.equal(l.operation.value.mode, BackupMode.BACKUP_MODE_AUTO);
  });

  it("SOURCE: the digest map fetched from the backup's cluster goes to an agent of the volume's cluster", async () => {
    const b = available(vol("src"));
    sourceSnaps.set("src", [b.snapshot]);
    maps.set(b.id, MAP);
    const id = await verify(b, VerifyMode.VERIFY_MODE_SOURCE, true, a1);
    const l = a1.lease(id);
    assert.ok(l.operation?.$case === "verify");
    assert.deepEqual(l.operation.value.source, { pool: "rbd", namespace: "", image: "src" });
    assert.deepEqual([...l.operation.value.digestMap], [...MAP]);
    assert.equal(l.operation.value.backupPool, "backups");
    assert.ok(
      b1.sent.some((m) => m.$case === "call" && m.value.request?.$case === "digestMap"),
      "the map was asked of cluster b",
    );
    assert.equal(h.job(id).state, JobState.JOB_STATE_SUCCEEDED);
    assert.equal(h.backup(b.id).integrity?.lastVerifyMode, VerifyMode.VERIFY_MODE_SOURCE);
  });

  it("SOURCE when the backup's cluster has no map: the job FAILS with FAILED_PRECONDITION, nothing leased", async () => {
    const b = available(vol("nomap"));
    sourceSnaps.set("nomap", [b.snapshot]);
    const job = await askSource(b);
    h.tick();
    await h.settle();
    const j = h.job(job.id);
    assert.equal(j.state, JobState.JOB_STATE_FAILED);
    assert.equal(j.errorCode, "FAILED_PRECONDITION");
    assert.match(j.errorMessage, new RegExp(`backup ${b.id} has no digest map`));
    assert.equal(a1.leases().filter((l) => l.jobId === job.id).length, 0);
  });

  it("SOURCE while no agent of the backup's cluster is connected: it waits, then fails UNAVAILABLE after placementTimeoutMs (its backup lock goes)", async () => {
    const b = available(vol("mapgone"));
    sourceSnaps.set("mapgone", [b.snapshot]);
    h.disconnect(b1); // site b down: the SOURCE check itself needs only cluster a
    try {
      const job = await askSource(b);
      h.tick();
      assert.match(
        h.job(job.id).waitingReason,
        /^waiting for an agent of cluster b \(it keeps the digest map\) to connect$/,
      );
      for (let left = h.cfg.placementTimeoutMs; left > 0; left -= 30_000) {
        h.advance(Math.min(left, 30_000));
        h.tick();
      }
      const j = h.job(job.id);
      assert.equal(j.state, JobState.JOB_STATE_FAILED, "not queued for ever, holding its backup's lock");
      assert.equal(j.errorCode, "UNAVAILABLE");
    } finally {
      b1 = h.connect("b1", "b");
      b1.answer = answerOf(h, "b");
    }
  });

  it("a backup made with a digest map records it; a failed delete of a CORRUPT backup leaves it CORRUPT", async () => {
    const v = vol("made");
    const j = h.queueBackup(v, "b");
    h.tick();
    const r = { ...backupResult(j.backupId), imageDigest: DIGEST, digestBlockSize: 65536 };
    h.commit(j, r);
    h.outcome(a1, j.id, Status.OK, "", { $case: "backup", value: r });
    await h.settle();
    const b = h.backup(j.backupId);
    assert.equal(b.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.equal(b.integrity?.imageDigest, DIGEST);
    assert.equal(b.integrity?.digestBlockSize, 65536);
    await verify(b, VerifyMode.VERIFY_MODE_FULL, false);
    assert.equal(h.backup(b.id).status, BackupStatus.BACKUP_STATUS_CORRUPT);
    // DeleteBackup takes a CORRUPT backup; its delete failing for good puts it back to CORRUPT.
    const del = await api.deleteBackup({ backupId: b.id, idempotencyKey: "" });
    assert.equal(h.backup(b.id).status, BackupStatus.BACKUP_STATUS_DELETING);
    h.tick();
    h.outcome(b1, del.id, Status.PERMISSION_DENIED, "no");
    assert.equal(h.job(del.id).state, JobState.JOB_STATE_FAILED);
    assert.equal(h.backup(b.id).status, BackupStatus.BACKUP_STATUS_CORRUPT);
  });

  it("the catalog keeps Backup.policy in its own column (ListBackups filters by it) and the last verification", () => {
    const b = available(vol("pol"));
    b.policy = "nightly";
    h.catalog.updateBackup(b);
    const got = h.catalog.listBackups({ policy: "nightly" }, 10, "").items.map((x) => x.id);
    assert.deepEqual(got, [b.id]);
    assert.equal(h.catalog.getBackup(b.id)?.policy, "nightly");
    assert.deepEqual(h.catalog.listBackups({ policy: "other" }, 10, "").items, []);
  });

  it("metrics: verify runs by mode and result; CORRUPT backups by the cluster that keeps them", async () => {
    const r = new client.Registry();
    for (const m of metrics.all()) r.registerMetric(m);
    const text = await r.metrics();
    const value = (line: string) =>
      Number(
        text
          .split("\n")
          .find((l) => l.startsWith(`${line} `))
          ?.split(" ")[1],
      );
    // Earlier tests: two FULL and one SAMPLE found corrupt; FULL and SOURCE ok; two SOURCE failed (no map;
    // no agent of the map's cluster within the placement timeout).
    assert.equal(value('rbdbackup_verify_runs_total{mode="full",result="corrupt"}'), 2);
    assert.equal(value('rbdbackup_verify_runs_total{mode="sample",result="corrupt"}'), 1);
    assert.equal(value('rbdbackup_verify_runs_total{mode="source",result="ok"}'), 1);
    assert.equal(value('rbdbackup_verify_runs_total{mode="source",result="failed"}'), 2);
    const corrupt = h.catalog.listBackups({ statuses: [BackupStatus.BACKUP_STATUS_CORRUPT] }, 100, "").items;
    assert.equal(corrupt.length, 3);
    assert.equal(value('rbdbackup_backups_corrupt{location_cluster="b"}'), 3);
    assert.equal(value('rbdbackup_backups_corrupt{location_cluster="a"}'), 0);
  });

  it("an agent that answers a digest_map call with an error leaves the job queued and retried", async () => {
    const b = available(vol("flaky"));
    sourceSnaps.set("flaky", [b.snapshot]);
    maps.set(b.id, MAP);
    let fail = true;
    const was = b1.answer;
    b1.answer = (req) =>
      req.$case === "digestMap" && fail ? new AppError(Status.UNAVAILABLE, "rados timed out") : was(req);
    const job = await askSource(b);
    h.tick();
    await h.settle();
    h.tick();
    assert.equal(h.job(job.id).state, JobState.JOB_STATE_QUEUED);
    assert.match(h.job(job.id).waitingReason, /could not fetch the digest map .*rados timed out/);
    fail = false;
    h.advance(h.cfg.backoffBaseMs);
    h.tick();
    await h.settle();
    h.tick();
    assert.equal(h.job(job.id).state, JobState.JOB_STATE_RUNNING);
    b1.answer = was;
  });
});

describe("catalog columns added to an older catalog", () => {
  it("backups.policy and verified_at are added and filled from the records", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-catalog-"));
    try {
      const file = path.join(dir, "catalog.db");
      const b = newBackup(vol("old"), "b", Date.UTC(2026, 0, 1));
      b.policy = "nightly";
      b.status = BackupStatus.BACKUP_STATUS_CORRUPT;
      const at = new Date(Date.UTC(2026, 0, 2));
      b.integrity = {
        imageDigest: DIGEST,
        digestBlockSize: 65536,
        lastVerifiedAt: at,
        lastVerifyMode: VerifyMode.VERIFY_MODE_FULL,
        lastVerifyOk: false,
        corruptReason: "x",
        firstBadOffset: 0,
        firstBadLength: 65536,
      };
      // The backups table as version 1 made it, before the columns.
      const db = new Database(file);
      db.exec(`CREATE TABLE backups (id TEXT PRIMARY KEY, status INTEGER NOT NULL, cluster TEXT NOT NULL,
        pool TEXT NOT NULL, namespace TEXT NOT NULL, image TEXT NOT NULL, volume_id TEXT NOT NULL,
        location_cluster TEXT NOT NULL, created_at TEXT NOT NULL, doc TEXT NOT NULL)`);
      db.prepare("INSERT INTO backups VALUES (?, ?, 'a', 'rbd', '', 'old', '', 'b', ?, ?)").run(
        b.id,
        b.status,
        (b.createdAt as Date).toISOString(),
        JSON.stringify(BackupMsg.toJSON(b)),
      );
      db.close();
      const c = new SqliteCatalog(file);
      try {
        assert.deepEqual(
          c.listBackups({ policy: "nightly" }, 10, "").items.map((x) => x.id),
          [b.id],
        );
        assert.equal(c.getBackup(b.id)?.status, BackupStatus.BACKUP_STATUS_CORRUPT);
      } finally {
        c.close();
      }
      const raw = new Database(file, { readonly: true });
      const row = raw.prepare("SELECT policy, verified_at FROM backups WHERE id = ?").get(b.id);
      raw.close();
      assert.deepEqual(row, { policy: "nightly", verified_at: at.getTime() });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
