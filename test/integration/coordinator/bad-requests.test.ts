/**
 * Bad requests to the public API, table-driven: each must fail at once with its exact gRPC status and a
 * message naming what is wrong, and none may change anything — the catalog (backups of every status,
 * jobs) and the clusters (images of pools rbd and backups on both sites, snapshots of the test volume)
 * are compared before and after the whole table. Requests that race a job in flight (a volume in use,
 * a backup with a running job, a cancelled backup) come after, each waiting for its legitimate job.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { ClientError, Status } from "nice-grpc";
import { BackupMode, RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import {
  type Backup,
  type BackupRecord,
  type BackupServiceClient,
  BackupStatus,
  type CreateBackupRequest,
  type Job,
  JobKind,
  JobState,
  type RestoreBackupRequest,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import { Compression, type ImageRef, type VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import { backupRequest, type Deployment, deploy, succeeded, waitJob } from "../../helpers/coordinator";
import { uniqueName } from "../../helpers/lab";
import { MiB, Volumes } from "../../helpers/volumes";

const CLUSTERS = ["site-a", "site-b"] as const;
const POOLS = ["rbd", "backups"] as const;
const ALL_STATUSES = [
  BackupStatus.BACKUP_STATUS_UNSPECIFIED,
  BackupStatus.BACKUP_STATUS_CREATING,
  BackupStatus.BACKUP_STATUS_AVAILABLE,
  BackupStatus.BACKUP_STATUS_FAILED,
  BackupStatus.BACKUP_STATUS_DELETING,
  BackupStatus.BACKUP_STATUS_DELETED,
];

const volRef = (cluster: string, v: ImageRef): VolumeRef => ({ cluster, ...v });

interface BadCase {
  name: string;
  code: Status;
  /** A part of the message the caller needs (the field, the name or id concerned). */
  msg: RegExp;
  call: (c: BackupServiceClient) => Promise<unknown>;
}

/** null when the call failed with `code` and a message matching `msg`, else what went wrong. */
async function check(c: BackupServiceClient, bc: BadCase): Promise<string | null> {
  try {
    const r = await bc.call(c);
    return `${bc.name}: expected ${Status[bc.code]}, but it succeeded: ${JSON.stringify(r)?.slice(0, 300)}`;
  } catch (e) {
    if (!(e instanceof ClientError)) return `${bc.name}: not a ClientError: ${(e as Error)?.stack ?? e}`;
    if (e.code !== bc.code) return `${bc.name}: expected ${Status[bc.code]}, got ${Status[e.code]}: ${e.details}`;
    if (!bc.msg.test(e.details)) return `${bc.name}: ${Status[e.code]} as expected, but "${e.details}" !~ ${bc.msg}`;
    return null;
  }
}

async function expectBad(c: BackupServiceClient, bc: BadCase): Promise<void> {
  const problem = await check(c, bc);
  assert.equal(problem, null);
}

async function allBackups(c: BackupServiceClient, status: BackupStatus): Promise<Backup[]> {
  const out: Backup[] = [];
  let pageToken = "";
  do {
    const r = await c.listBackups({
      cluster: "",
      pool: "",
      image: "",
      volumeId: "",
      locationCluster: "",
      status,
      pageSize: 1000,
      pageToken,
    });
    out.push(...r.backups);
    pageToken = r.nextPageToken;
  } while (pageToken);
  return out;
}

async function allJobs(c: BackupServiceClient): Promise<Job[]> {
  const out: Job[] = [];
  let pageToken = "";
  do {
    const r = await c.listJobs({ state: 0, kind: 0, backupId: "", pageSize: 1000, pageToken });
    out.push(...r.jobs);
    pageToken = r.nextPageToken;
  } while (pageToken);
  return out;
}

describe("coordinator: bad requests fail with their exact status and change nothing", () => {
  let d: Deployment;
  const vols = new Volumes();

  /** The test volume (site-a/rbd) with one available backup in site-b/backups. */
  let vol: VolumeRef;
  let available: Backup;
  let availableJob: Job;
  const createKey = `bad-requests-${randomUUID()}`;
  /** A backup of another volume, deleted. */
  let deleted: Backup;
  /** A volume of size 0; a 256 MiB volume never backed up (until the in-flight cases). */
  let empty: VolumeRef;
  let big: VolumeRef;
  let record: BackupRecord;
  /** Backups this file made (deleted in after()). */
  const ours: string[] = [];

  const snapshotState = async () => {
    const c = d.client;
    const backups: Record<string, Backup[]> = {};
    for (const s of ALL_STATUSES) backups[BackupStatus[s]] = await allBackups(c, s);
    const images: Record<string, string[]> = {};
    for (const cluster of CLUSTERS) {
      for (const pool of POOLS)
        images[`${cluster}/${pool}`] = (await (await vols.io(cluster, pool)).imageList()).sort();
    }
    return {
      backups,
      jobs: await allJobs(c),
      images,
      testVolumeSnapshots: (await vols.snapNames("site-a", vol)).sort(),
    };
  };

  before(async () => {
    d = await deploy();
    const c = d.client;
    // An available backup (restore, delete, export cases), made with an idempotency key.
    const v = await vols.create("site-a", "rbd", 16, 10, "bad");
    vol = volRef("site-a", v);
    const j = await c.createBackup({
      volume: vol,
      location: { cluster: "site-b", pool: "backups", namespace: "" },
      mode: BackupMode.BACKUP_MODE_AUTO,
      volumeId: "bad-requests-vol",
      volumeMetadata: { purpose: "bad-requests" },
      idempotencyKey: createKey,
      maxSnapshots: 0,
    });
    availableJob = await succeeded(c, j.id);
    assert.ok(availableJob.backup);
    available = availableJob.backup;
    ours.push(available.id);
    assert.equal(available.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    record = await c.exportBackupRecord({ backupId: available.id });

    // A deleted backup (of another volume, kept on site-a).
    const dv = await vols.create("site-a", "rbd", 8, 5, "bad-del");
    const dj = await c.createBackup({
      volume: volRef("site-a", dv),
      location: { cluster: "site-a", pool: "backups", namespace: "" },
      mode: BackupMode.BACKUP_MODE_FULL,
      volumeId: "",
      volumeMetadata: {},
      idempotencyKey: "",
      maxSnapshots: 0,
    });
    const db = (await succeeded(c, dj.id)).backup;
    assert.ok(db);
    await succeeded(c, (await c.deleteBackup({ backupId: db.id, idempotencyKey: "" })).id);
    deleted = await c.getBackup({ backupId: db.id });
    assert.equal(deleted.status, BackupStatus.BACKUP_STATUS_DELETED);

    // A volume of size 0.
    const emptyName = uniqueName("bad-empty");
    await (await vols.io("site-a", "rbd")).imageCreate(emptyName, 0);
    vols.track("site-a", "rbd", emptyName);
    empty = { cluster: "site-a", pool: "rbd", namespace: "", image: emptyName };

    // A 256 MiB volume with data, not backed up yet: long transfers for the in-flight cases.
    const bv = await vols.create("site-a", "rbd", 256, 0, "bad-big");
    await vols.change(bv, "site-a", { writes: 100, maxWrite: 4 * MiB });
    big = volRef("site-a", bv);

    // Every setup job has finished.
    const active = (await allJobs(c)).filter((x) => x.state < JobState.JOB_STATE_SUCCEEDED);
    assert.deepEqual(active, [], "no job left running after the setup");
  });

  after(async () => {
    // Best effort: delete the backups this file made, so their base images leave the lab.
    for (const id of ours) {
      try {
        const b = await d.client.getBackup({ backupId: id });
        if (b.status !== BackupStatus.BACKUP_STATUS_AVAILABLE) continue;
        await waitJob(d.client, (await d.client.deleteBackup({ backupId: id, idempotencyKey: "" })).id, 120_000);
      } catch (e) {
        console.log(`# cleanup: backup ${id} not deleted: ${(e as Error).message}`);
      }
    }
    await d?.stop();
    await vols.cleanup();
  });

  const createReq = (o: Partial<CreateBackupRequest>): CreateBackupRequest => backupRequest(vol, o);

  /** A restore that would be valid (the available backup to a fresh name on site-b) but for `o`. */
  function restoreReq(o: Partial<RestoreBackupRequest>): RestoreBackupRequest {
    return {
      backupId: available.id,
      target: { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName("bad-never") },
      mode: RestoreMode.RESTORE_MODE_NEW,
      idempotencyKey: "",
      allowCorrupt: false,
      flatten: false,
      transfer: undefined,
      allowOpen: false,
      skipImageMeta: false,
      ...o,
    };
  }

  function pureCases(): BadCase[] {
    const IA = Status.INVALID_ARGUMENT;
    const NF = Status.NOT_FOUND;
    const AE = Status.ALREADY_EXISTS;
    const FP = Status.FAILED_PRECONDITION;
    const unknownId = randomUUID();
    const missingImage = uniqueName("bad-missing");
    const missingPool = uniqueName("nopool");
    const long201 = "x".repeat(201);
    const withVol = (o: Partial<VolumeRef>) => ({ ...vol, ...o });
    const cb = (name: string, code: Status, msg: RegExp, o: Partial<CreateBackupRequest>): BadCase => ({
      name: `CreateBackup: ${name}`,
      code,
      msg,
      call: (c) => c.createBackup(createReq(o)),
    });
    const rb = (name: string, code: Status, msg: RegExp, o: Partial<RestoreBackupRequest>): BadCase => ({
      name: `RestoreBackup: ${name}`,
      code,
      msg,
      call: (c) => c.restoreBackup(restoreReq(o)),
    });
    const listB = (name: string, msg: RegExp, o: Record<string, unknown>): BadCase => ({
      name: `ListBackups: ${name}`,
      code: IA,
      msg,
      call: (c) =>
        c.listBackups({
          cluster: "",
          pool: "",
          image: "",
          volumeId: "",
          locationCluster: "",
          status: 0,
          pageSize: 0,
          pageToken: "",
          ...o,
        }),
    });
    const listJ = (name: string, msg: RegExp, o: Record<string, unknown>): BadCase => ({
      name: `ListJobs: ${name}`,
      code: IA,
      msg,
      call: (c) => c.listJobs({ state: 0, kind: 0, backupId: "", pageSize: 0, pageToken: "", ...o }),
    });
    const snaps = (name: string, code: Status, msg: RegExp, volume: VolumeRef | undefined): BadCase => ({
      name: `ListBackupSnapshots: ${name}`,
      code,
      msg,
      call: (c) => c.listBackupSnapshots({ volume }),
    });
    const imp = (name: string, code: Status, msg: RegExp, r: BackupRecord | undefined): BadCase => ({
      name: `ImportBackupRecord: ${name}`,
      code,
      msg,
      call: (c) => c.importBackupRecord({ record: r }),
    });
    const rec = (o: Partial<Backup>, version = 1): BackupRecord => ({
      version,
      backup: { ...(record.backup as Backup), ...o },
    });
    /** A record of a backup this catalog does not know (a fresh id and a snapshot name of it). */
    const freshRec = (o: Partial<Backup>): BackupRecord => {
      const id = randomUUID();
      return rec({ id, snapshot: `backup.${id}.snap.1700000000.000000`, ...o });
    };
    const watch = async (c: BackupServiceClient, jobId: string) => {
      for await (const _ of c.watchJob({ jobId })) {
        // the first event would mean the call was accepted
      }
    };
    const meta65 = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"]));

    return [
      // CreateBackup: names.
      cb("empty volume.pool", IA, /volume\.pool is required/, { volume: withVol({ pool: "" }) }),
      cb("volume.pool of 201 bytes", IA, /volume\.pool is longer than 200 bytes/, {
        volume: withVol({ pool: long201 }),
      }),
      cb('volume.pool with "/"', IA, /volume\.pool "rbd\/x"/, { volume: withVol({ pool: "rbd/x" }) }),
      cb("empty volume.image", IA, /volume\.image is required/, { volume: withVol({ image: "" }) }),
      cb("volume.image of 201 bytes", IA, /volume\.image is longer than 200 bytes/, {
        volume: withVol({ image: long201 }),
      }),
      cb("volume.image of 101 characters, 202 bytes", IA, /volume\.image is longer than 200 bytes/, {
        volume: withVol({ image: "é".repeat(101) }),
      }),
      cb('volume.image with "/"', IA, /volume\.image "a\/b"/, { volume: withVol({ image: "a/b" }) }),
      cb('volume.image with "@"', IA, /volume\.image "img@snap"/, { volume: withVol({ image: "img@snap" }) }),
      cb("volume.image with a leading space", IA, /volume\.image/, { volume: withVol({ image: ` ${vol.image}` }) }),
      cb('volume.image ".."', IA, /volume\.image/, { volume: withVol({ image: ".." }) }),
      cb("volume.image with a newline", IA, /volume\.image/, { volume: withVol({ image: "a\nb" }) }),
      cb('volume.namespace with "/"', IA, /volume\.namespace/, { volume: withVol({ namespace: "ns/x" }) }),
      cb("no volume", IA, /volume is required/, { volume: undefined }),
      cb("no location", IA, /location is required/, { location: undefined }),
      cb("empty volume.cluster", IA, /volume\.cluster is required/, { volume: withVol({ cluster: "" }) }),
      cb("empty location.cluster", IA, /location\.cluster is required/, {
        location: { cluster: "", pool: "backups", namespace: "" },
      }),
      cb("volume.cluster with bad characters", IA, /volume\.cluster "site a!"/, {
        volume: withVol({ cluster: "site a!" }),
      }),
      cb("volume.cluster of 65 characters", IA, /volume\.cluster/, { volume: withVol({ cluster: "c".repeat(65) }) }),
      cb("location.cluster with bad characters", IA, /location\.cluster "site\/b"/, {
        location: { cluster: "site/b", pool: "backups", namespace: "" },
      }),
      cb('location.pool with "/"', IA, /location\.pool "back\/ups"/, {
        location: { cluster: "site-b", pool: "back/ups", namespace: "" },
      }),
      cb("location.pool of 201 bytes", IA, /location\.pool is longer than 200 bytes/, {
        location: { cluster: "site-b", pool: long201, namespace: "" },
      }),
      cb("location.namespace without location.pool", IA, /location\.namespace needs location\.pool/, {
        location: { cluster: "site-b", pool: "", namespace: "ns" },
      }),
      cb("unknown volume.cluster", NF, /volume\.cluster.*site-nowhere/, {
        volume: withVol({ cluster: "site-nowhere" }),
      }),
      cb("unknown location.cluster", NF, /location\.cluster.*site-nowhere/, {
        location: { cluster: "site-nowhere", pool: "backups", namespace: "" },
      }),
      cb("unknown pool on the source", NF, new RegExp(`volume\\.pool.*${missingPool}`), {
        volume: withVol({ pool: missingPool }),
      }),
      cb("unknown image", NF, new RegExp(missingImage), { volume: withVol({ image: missingImage }) }),
      cb("unknown namespace on the source", NF, /bad-ns-missing/, { volume: withVol({ namespace: "bad-ns-missing" }) }),
      cb("unknown destination namespace", NF, /location\.namespace: RBD namespace backups\/bad-ns-missing not found/, {
        location: { cluster: "site-b", pool: "backups", namespace: "bad-ns-missing" },
      }),
      cb("unknown destination pool", NF, new RegExp(`location\\.pool.*${missingPool}`), {
        location: { cluster: "site-b", pool: missingPool, namespace: "" },
      }),
      cb("mode 7 (unknown)", IA, /mode: unknown value 7/, { mode: 7 as BackupMode }),
      cb("mode -1", IA, /mode: unknown value -1/, { mode: -1 as BackupMode }),
      cb("mode INCREMENTAL with no earlier backup", FP, /INCREMENTAL/, {
        volume: big,
        mode: BackupMode.BACKUP_MODE_INCREMENTAL,
      }),
      cb("mode INCREMENTAL with no earlier backup in that location", FP, /INCREMENTAL/, {
        location: { cluster: "site-a", pool: "backups", namespace: "" },
        mode: BackupMode.BACKUP_MODE_INCREMENTAL,
      }),
      cb("a volume of size 0", FP, /size 0/, { volume: empty }),
      cb("volume_id of 257 characters", IA, /volume_id is longer than 256/, { volumeId: "v".repeat(257) }),
      cb("65 metadata entries", IA, /volume_metadata has 65 entries/, { volumeMetadata: meta65 }),
      cb("a metadata value of 4097 characters", IA, /volume_metadata\["big"\] is longer than 4096/, {
        volumeMetadata: { ok: "1", big: "x".repeat(4097) },
      }),
      cb("an empty metadata key", IA, /volume_metadata keys must not be empty/, { volumeMetadata: { "": "v" } }),
      cb("a metadata key of 257 characters", IA, /volume_metadata key/, {
        volumeMetadata: { ["k".repeat(257)]: "v" },
      }),
      cb("a metadata value with NUL", IA, /volume_metadata\["nul"\] contains NUL/, {
        volumeMetadata: { nul: "a\u0000b" },
      }),
      cb("idempotency_key with spaces", IA, /idempotency_key/, { idempotencyKey: "my key" }),
      cb("idempotency_key of 200 characters", IA, /idempotency_key/, { idempotencyKey: "k".repeat(200) }),
      cb("max_snapshots 100000", IA, /max_snapshots 100000/, { maxSnapshots: 100000 }),
      // CreateBackup and RestoreBackup: TransferOptions (common.proto).
      cb("transfer.compression 9 (unknown)", IA, /transfer\.compression: unknown value 9/, {
        transfer: { compression: 9 as Compression, bandwidthLimitBytesPerSecond: 0 },
      }),
      cb("a bandwidth cap of 1 byte/s", IA, /transfer\.bandwidth_limit_bytes_per_second: 1 is not 0/, {
        transfer: { compression: Compression.COMPRESSION_NONE, bandwidthLimitBytesPerSecond: 1 },
      }),
      cb("a bandwidth cap of 1048575 bytes/s", IA, /transfer\.bandwidth_limit_bytes_per_second: 1048575/, {
        transfer: { compression: Compression.COMPRESSION_ZSTD, bandwidthLimitBytesPerSecond: 1048575 },
      }),
      cb("a bandwidth cap above 1 TiB/s", IA, /transfer\.bandwidth_limit_bytes_per_second: 1099511627777/, {
        transfer: { compression: Compression.COMPRESSION_NONE, bandwidthLimitBytesPerSecond: 2 ** 40 + 1 },
      }),
      rb("transfer.compression 3 (unknown)", IA, /transfer\.compression: unknown value 3/, {
        transfer: { compression: 3 as Compression, bandwidthLimitBytesPerSecond: 0 },
      }),
      rb("a restore's bandwidth cap of 1000 bytes/s", IA, /transfer\.bandwidth_limit_bytes_per_second: 1000/, {
        transfer: { compression: Compression.COMPRESSION_NONE, bandwidthLimitBytesPerSecond: 1000 },
      }),
      cb("idempotency_key of another request", AE, new RegExp(`idempotency_key "${createKey}"`), {
        idempotencyKey: createKey,
        mode: BackupMode.BACKUP_MODE_FULL,
      }),

      // RestoreBackup.
      rb("backup_id not a UUID", IA, /backup_id "not-a-uuid"/, { backupId: "not-a-uuid" }),
      rb("empty backup_id", IA, /backup_id is required/, { backupId: "" }),
      rb("backup_id in upper case", IA, /backup_id/, { backupId: available.id.toUpperCase() }),
      rb("unknown backup", NF, new RegExp(unknownId), { backupId: unknownId }),
      rb("no target", IA, /target is required/, { target: undefined }),
      rb("empty target.cluster", IA, /target\.cluster is required/, {
        target: { cluster: "", pool: "rbd", namespace: "", image: uniqueName("bad-never") },
      }),
      rb("target.cluster with bad characters", IA, /target\.cluster/, {
        target: { cluster: "site_b?", pool: "rbd", namespace: "", image: uniqueName("bad-never") },
      }),
      rb("empty target.pool", IA, /target\.pool is required/, {
        target: { cluster: "site-b", pool: "", namespace: "", image: uniqueName("bad-never") },
      }),
      rb('target.image with "/"', IA, /target\.image/, {
        target: { cluster: "site-b", pool: "rbd", namespace: "", image: "a/b" },
      }),
      rb("target.image of 201 bytes", IA, /target\.image is longer than 200 bytes/, {
        target: { cluster: "site-b", pool: "rbd", namespace: "", image: long201 },
      }),
      rb("mode 7 (unknown)", IA, /mode: unknown value 7/, { mode: 7 as RestoreMode }),
      rb("idempotency_key of 200 characters", IA, /idempotency_key/, { idempotencyKey: "k".repeat(200) }),
      rb("idempotency_key with spaces", IA, /idempotency_key/, { idempotencyKey: "a b" }),
      rb("idempotency_key of a backup request", AE, /idempotency_key/, { idempotencyKey: createKey }),
      rb("mode NEW over an existing volume", AE, new RegExp(`${vol.image} exists`), { target: vol }),
      rb("target namespace that does not exist", NF, /target\.namespace: RBD namespace rbd\/bad-ns-missing not found/, {
        target: { cluster: "site-b", pool: "rbd", namespace: "bad-ns-missing", image: uniqueName("bad-never") },
      }),
      rb("mode ORIGINAL to a missing volume", NF, new RegExp(`${missingImage} not found`), {
        target: { cluster: "site-b", pool: "rbd", namespace: "", image: missingImage },
        mode: RestoreMode.RESTORE_MODE_ORIGINAL,
      }),
      rb("unknown target cluster", NF, /target\.cluster.*site-nowhere/, {
        target: { cluster: "site-nowhere", pool: "rbd", namespace: "", image: uniqueName("bad-never") },
      }),
      rb("unknown target pool", NF, new RegExp(`target\\.pool.*${missingPool}`), {
        target: { cluster: "site-b", pool: missingPool, namespace: "", image: uniqueName("bad-never") },
      }),
      rb("a deleted backup", FP, /DELETED/, { backupId: deleted.id }),

      // DeleteBackup.
      {
        name: "DeleteBackup: backup_id not a UUID",
        code: IA,
        msg: /backup_id "x-y-z"/,
        call: (c) => c.deleteBackup({ backupId: "x-y-z", idempotencyKey: "" }),
      },
      {
        name: "DeleteBackup: empty backup_id",
        code: IA,
        msg: /backup_id is required/,
        call: (c) => c.deleteBackup({ backupId: "", idempotencyKey: "" }),
      },
      {
        name: "DeleteBackup: unknown backup",
        code: NF,
        msg: new RegExp(unknownId),
        call: (c) => c.deleteBackup({ backupId: unknownId, idempotencyKey: "" }),
      },
      {
        name: "DeleteBackup: idempotency_key with spaces (of an available backup)",
        code: IA,
        msg: /idempotency_key/,
        call: (c) => c.deleteBackup({ backupId: available.id, idempotencyKey: "not valid" }),
      },
      {
        name: "DeleteBackup: idempotency_key of a backup request",
        code: AE,
        msg: /idempotency_key/,
        call: (c) => c.deleteBackup({ backupId: available.id, idempotencyKey: createKey }),
      },
      {
        name: "DeleteBackup: a deleted backup",
        code: FP,
        msg: /DELETED/,
        call: (c) => c.deleteBackup({ backupId: deleted.id, idempotencyKey: "" }),
      },

      // GetBackup.
      {
        name: "GetBackup: backup_id not a UUID",
        code: IA,
        msg: /backup_id "1234"/,
        call: (c) => c.getBackup({ backupId: "1234" }),
      },
      {
        name: "GetBackup: empty backup_id",
        code: IA,
        msg: /backup_id is required/,
        call: (c) => c.getBackup({ backupId: "" }),
      },
      {
        name: "GetBackup: unknown backup",
        code: NF,
        msg: new RegExp(unknownId),
        call: (c) => c.getBackup({ backupId: unknownId }),
      },

      // ListBackups.
      listB("page_size 5000", /page_size 5000/, { pageSize: 5000 }),
      listB("a garbage page_token", /page_token/, { pageToken: "garbage-token!" }),
      listB("status 42", /status: unknown value 42/, { status: 42 }),
      listB("status -1", /status: unknown value -1/, { status: -1 }),
      listB("cluster with bad characters", /cluster "bad name!"/, { cluster: "bad name!" }),
      listB("location_cluster with bad characters", /location_cluster/, { locationCluster: "x/y" }),
      listB('pool with "/"', /pool "a\/b"/, { pool: "a/b" }),
      listB("image of 201 bytes", /image is longer than 200 bytes/, { image: long201 }),

      // ListJobs.
      listJ("state 99", /state: unknown value 99/, { state: 99 }),
      listJ("kind 99", /kind: unknown value 99/, { kind: 99 }),
      listJ("page_size 5000", /page_size 5000/, { pageSize: 5000 }),
      listJ("a garbage page_token", /page_token/, { pageToken: "garbage-token!" }),
      listJ("backup_id not a UUID", /backup_id "nope"/, { backupId: "nope" }),

      // GetJob, WatchJob, CancelJob.
      {
        name: "GetJob: unknown job",
        code: NF,
        msg: new RegExp(`job ${unknownId} not found`),
        call: (c) => c.getJob({ jobId: unknownId }),
      },
      {
        name: "GetJob: job_id not a UUID",
        code: IA,
        msg: /job_id "job-1"/,
        call: (c) => c.getJob({ jobId: "job-1" }),
      },
      {
        name: "GetJob: empty job_id",
        code: IA,
        msg: /job_id is required/,
        call: (c) => c.getJob({ jobId: "" }),
      },
      {
        name: "WatchJob: unknown job",
        code: NF,
        msg: new RegExp(`job ${unknownId} not found`),
        call: (c) => watch(c, unknownId),
      },
      {
        name: "WatchJob: job_id not a UUID",
        code: IA,
        msg: /job_id/,
        call: (c) => watch(c, "watch-me"),
      },
      {
        name: "CancelJob: unknown job",
        code: NF,
        msg: new RegExp(`job ${unknownId} not found`),
        call: (c) => c.cancelJob({ jobId: unknownId }),
      },
      {
        name: "CancelJob: job_id not a UUID",
        code: IA,
        msg: /job_id "42"/,
        call: (c) => c.cancelJob({ jobId: "42" }),
      },
      {
        name: "CancelJob: a finished job",
        code: FP,
        msg: new RegExp(`job ${availableJob.id} has already finished`),
        call: (c) => c.cancelJob({ jobId: availableJob.id }),
      },

      // CheckCluster.
      {
        name: "CheckCluster: unknown cluster",
        code: NF,
        msg: /cluster.*site-nowhere/,
        call: (c) => c.checkCluster({ cluster: "site-nowhere", backupPool: "" }),
      },
      {
        name: "CheckCluster: empty cluster",
        code: IA,
        msg: /cluster is required/,
        call: (c) => c.checkCluster({ cluster: "", backupPool: "" }),
      },
      {
        name: "CheckCluster: cluster with bad characters",
        code: IA,
        msg: /cluster/,
        call: (c) => c.checkCluster({ cluster: "-site", backupPool: "" }),
      },
      {
        name: 'CheckCluster: backup_pool with "/"',
        code: IA,
        msg: /backup_pool/,
        call: (c) => c.checkCluster({ cluster: "site-a", backupPool: "a/b" }),
      },

      // ListBackupSnapshots.
      snaps("a missing image", NF, new RegExp(missingImage), { ...vol, image: missingImage }),
      snaps("a missing pool", NF, new RegExp(missingPool), { ...vol, pool: missingPool }),
      snaps("unknown cluster", NF, /volume\.cluster.*site-nowhere/, { ...vol, cluster: "site-nowhere" }),
      snaps("no volume", IA, /volume is required/, undefined),
      snaps('image with "@"', IA, /volume\.image/, { ...vol, image: "a@b" }),

      // ExportBackupRecord.
      {
        name: "ExportBackupRecord: unknown backup",
        code: NF,
        msg: new RegExp(unknownId),
        call: (c) => c.exportBackupRecord({ backupId: unknownId }),
      },
      {
        name: "ExportBackupRecord: backup_id not a UUID",
        code: IA,
        msg: /backup_id/,
        call: (c) => c.exportBackupRecord({ backupId: "abc" }),
      },
      {
        name: "ExportBackupRecord: a deleted backup",
        code: FP,
        msg: /DELETED/,
        call: (c) => c.exportBackupRecord({ backupId: deleted.id }),
      },

      // ImportBackupRecord.
      imp("no record", IA, /record/, undefined),
      imp("a record without a backup", IA, /record\.backup is required/, { version: 1, backup: undefined }),
      imp("version 2", IA, /record\.version 2/, rec({}, 2)),
      imp("version 0", IA, /record\.version 0/, rec({}, 0)),
      imp("a malformed snapshot name", IA, /record\.backup\.snapshot "not-a-backup-snapshot"/, {
        version: 1,
        backup: { ...(record.backup as Backup), snapshot: "not-a-backup-snapshot" },
      }),
      imp("a snapshot name of another backup", IA, /record\.backup\.snapshot/, rec({ id: randomUUID() })),
      imp("backup.id not a UUID", IA, /record\.backup\.id/, rec({ id: "imported-1" })),
      imp("no location", IA, /record\.backup\.location is required/, freshRec({ location: undefined })),
      imp("no volume", IA, /record\.backup\.volume is required/, freshRec({ volume: undefined })),
      imp('base_image with "/"', IA, /record\.backup\.base_image/, freshRec({ baseImage: "a/b" })),
      imp("status CREATING", IA, /status/, freshRec({ status: BackupStatus.BACKUP_STATUS_CREATING })),
      imp("a backup already in the catalog", AE, new RegExp(`${available.id} is already in this catalog`), record),
      imp(
        "unknown location cluster",
        NF,
        /location\.cluster.*site-nowhere/,
        freshRec({ location: { cluster: "site-nowhere", pool: "backups", namespace: "" } }),
      ),
      imp("another cluster's fsid", FP, /fsid/, freshRec({ locationFsid: "00000000-0000-4000-8000-000000000000" })),
      imp("a snapshot that is not on the base image", FP, /snapshot .* not on/, freshRec({})),
      imp(
        "a base image that is not a base image name (a volume's)",
        IA,
        /record\.backup\.base_image "bad-volume.*" is not a base image name/,
        freshRec({ baseImage: uniqueName("bad-volume") }),
      ),
      imp(
        "a base image that does not exist",
        FP,
        /bad-nobase/,
        freshRec({ baseImage: `${uniqueName("bad-nobase")}.backup.${randomUUID()}` }),
      ),
    ];
  }

  it("every bad request of the table fails with its exact status, and nothing changes", async () => {
    const c = d.client;
    const cases = pureCases();
    assert.ok(cases.length >= 30, `${cases.length} cases`);
    const beforeState = await snapshotState();
    assert.ok(beforeState.images["site-a/rbd"]?.includes(vol.image));
    assert.ok(beforeState.testVolumeSnapshots.includes(available.snapshot));

    const problems: string[] = [];
    for (const bc of cases) {
      const p = await check(c, bc);
      if (p) problems.push(p);
    }
    console.log(`# ${cases.length} bad requests, ${cases.length - problems.length} as expected`);

    const afterState = await snapshotState();
    try {
      assert.deepStrictEqual(afterState, beforeState);
    } catch (e) {
      problems.push(`the bad requests changed the catalog or the clusters: ${(e as Error).message}`);
    }
    assert.deepEqual(problems, []);
  });

  it("requests that collide with a job in flight fail; only the legitimate jobs run", async () => {
    const c = d.client;
    const jobsBefore = new Set((await allJobs(c)).map((j) => j.id));
    const backupsBefore = new Set((await allBackups(c, 0)).map((b) => b.id));
    const legitJobs: string[] = [];
    const legitBackups: string[] = [];

    // A long backup of the big volume; a restore over that volume while it runs is refused.
    const running = await c.createBackup(createReq({ volume: big, mode: BackupMode.BACKUP_MODE_FULL }));
    legitJobs.push(running.id);
    legitBackups.push(running.backupId);
    await expectBad(c, {
      name: "RestoreBackup: mode ORIGINAL over a volume a backup job uses",
      code: Status.FAILED_PRECONDITION,
      msg: new RegExp(`${big.image} is in use by job ${running.id}`),
      call: (cl) => cl.restoreBackup(restoreReq({ target: big, mode: RestoreMode.RESTORE_MODE_ORIGINAL })),
    });

    // A second backup of the same volume waits for the first: cancelled while queued, it ends FAILED.
    const queued = await c.createBackup(createReq({ volume: big, mode: BackupMode.BACKUP_MODE_AUTO }));
    legitJobs.push(queued.id);
    legitBackups.push(queued.backupId);
    await c.cancelJob({ jobId: queued.id });
    const cancelled = await waitJob(c, queued.id, 60_000);
    assert.equal(cancelled.state, JobState.JOB_STATE_CANCELLED, `${cancelled.errorCode}: ${cancelled.errorMessage}`);
    const bigBackup = (await succeeded(c, running.id, 300_000)).backup;
    assert.ok(bigBackup);
    ours.push(bigBackup.id);
    const failed = await c.getBackup({ backupId: queued.backupId });
    assert.equal(failed.status, BackupStatus.BACKUP_STATUS_FAILED);

    for (const bc of [
      {
        name: "RestoreBackup: a cancelled (FAILED) backup",
        code: Status.FAILED_PRECONDITION,
        msg: new RegExp(`${failed.id} is BACKUP_STATUS_FAILED`),
        call: (cl: BackupServiceClient) => cl.restoreBackup(restoreReq({ backupId: failed.id })),
      },
      {
        name: "ExportBackupRecord: a cancelled (FAILED) backup",
        code: Status.FAILED_PRECONDITION,
        msg: new RegExp(failed.id),
        call: (cl: BackupServiceClient) => cl.exportBackupRecord({ backupId: failed.id }),
      },
      {
        name: "CancelJob: a cancelled job",
        code: Status.FAILED_PRECONDITION,
        msg: /already finished \(JOB_STATE_CANCELLED\)/,
        call: (cl: BackupServiceClient) => cl.cancelJob({ jobId: queued.id }),
      },
    ]) {
      await expectBad(c, bc);
    }

    // A restore of the big backup runs; deleting that backup meanwhile is refused.
    const target = { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName("bad-restored") };
    vols.track("site-b", "rbd", target.image);
    const restoring = await c.restoreBackup(restoreReq({ backupId: bigBackup.id, target }));
    legitJobs.push(restoring.id);
    await expectBad(c, {
      name: "DeleteBackup: a backup with a running restore job",
      code: Status.FAILED_PRECONDITION,
      msg: new RegExp(`${bigBackup.id} has a .* job ${restoring.id}`),
      call: (cl) => cl.deleteBackup({ backupId: bigBackup.id, idempotencyKey: "" }),
    });
    await succeeded(c, restoring.id, 300_000);
    assert.equal((await c.getBackup({ backupId: bigBackup.id })).status, BackupStatus.BACKUP_STATUS_AVAILABLE);

    // Only the legitimate jobs and backups were made.
    const newJobs = (await allJobs(c)).filter((j) => !jobsBefore.has(j.id));
    assert.deepEqual(newJobs.map((j) => j.id).sort(), [...legitJobs].sort());
    assert.ok(newJobs.every((j) => j.kind !== JobKind.JOB_KIND_DELETE));
    const newBackups = (await allBackups(c, 0)).filter((b) => !backupsBefore.has(b.id));
    assert.deepEqual(newBackups.map((b) => b.id).sort(), [...legitBackups].sort());

    // A FAILED backup may be deleted (its attempt may have left data on the destination): the DELETE
    // finds nothing of a backup cancelled while queued, succeeds, and the backup is DELETED.
    const del = await c.deleteBackup({ backupId: failed.id, idempotencyKey: "" });
    await succeeded(c, del.id, 120_000);
    assert.equal((await c.getBackup({ backupId: failed.id })).status, BackupStatus.BACKUP_STATUS_DELETED);
  });
});
