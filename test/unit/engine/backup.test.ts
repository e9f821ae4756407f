/**
 * The backup's decisions (earlier attempts, AUTO fallback, base image features, header, lost-outcome
 * result) and the control flow of its phases against a fake cluster: which snapshots are created and
 * removed, which header is sent, what is reported. No Ceph, no data.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { backup } from "../../../agents/engine/backup";
import { backupHeader, baseImageFeatures, isStriped, sourceFacts } from "../../../agents/engine/backup-header";
import { earlierAttempt, fallbackPlan, fullPlan } from "../../../agents/engine/backup-plan";
import {
  COMMITTED_WHILE_STOPPED_WARNING,
  COMPLETED_EARLIER_WARNING,
  completedEarlier,
  SOURCE_SNAPSHOTS,
  type WithSourceSnapshots,
} from "../../../agents/engine/backup-result";
import { SourceReadError } from "../../../agents/transfer/source";
import { AppError, Status } from "../../../src/common/errors";
import { backupSnapName, parseBackupSnap } from "../../../src/common/ids";
import type { Logger } from "../../../src/common/log";
import { BackupMode, BackupRequest, BackupResult } from "../../../src/gen/rbdbackup/v1/agent";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { FakeBackupCluster } from "./fake-cluster";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => quiet };

function request(over: Partial<BackupRequest> = {}): BackupRequest {
  return BackupRequest.fromPartial({
    backupId: randomUUID(),
    source: { $case: "volume", value: { pool: "rbd", namespace: "", image: "vol" } },
    mode: BackupMode.BACKUP_MODE_AUTO,
    ...over,
  });
}

function statusOf(e: unknown): Status {
  assert.ok(e instanceof AppError, `expected an AppError, got ${String(e)}`);
  return e.status;
}

describe("backup decisions", () => {
  const snap = (backupId: string, snapId: number) => ({
    name: backupSnapName(backupId, snapId * 1000),
    backupId,
    snapId,
    size: 1,
  });

  it("earlier attempts: nothing, a leftover snapshot, a lost outcome, a conflict", () => {
    const req = request({ jobId: "job-1" });
    const mine = snap(req.backupId, 2);
    const chain = { baseImage: "vol.backup.x", snapshots: [snap(randomUUID(), 1), mine] };
    assert.deepEqual(earlierAttempt(req, ["user", snap(randomUUID(), 3).name], [chain]), { kind: "none" });
    // Committed on the destination, but only the volume's snapshot tells an earlier attempt ran.
    assert.deepEqual(earlierAttempt(req, [], [chain]), { kind: "none" });
    assert.deepEqual(earlierAttempt(req, [mine.name], []), { kind: "leftovers", snapshots: [mine.name] });
    assert.deepEqual(earlierAttempt(req, [mine.name], [chain]), { kind: "completed", chain });
    assert.deepEqual(earlierAttempt({ ...req, jobId: "" }, [mine.name], [chain]), {
      kind: "exists",
      baseImage: "vol.backup.x",
    });
  });

  it("AUTO redoes only an incremental whose source read failed, in full", () => {
    const req = request();
    const inc = { ...fullPlan("vol", req.backupId, ""), incremental: true, parent: "p", baseImage: "vol.backup.x" };
    const full = fallbackPlan(req, "vol", inc, new SourceReadError("bad diff"));
    assert.deepEqual(full, fullPlan("vol", req.backupId, "the incremental diff from p failed (bad diff)"));
    assert.equal(fallbackPlan(req, "vol", inc, new Error("network")), null);
    assert.equal(
      fallbackPlan({ ...req, mode: BackupMode.BACKUP_MODE_INCREMENTAL }, "vol", inc, new SourceReadError("x")),
      null,
    );
    assert.equal(fallbackPlan(req, "vol", fullPlan("vol", req.backupId, ""), new SourceReadError("x")), null);
  });

  it("base image features keep what a base image may carry, striping only when really striped", () => {
    const info = { size: 1, features: 0xffn, order: 22, stripeUnit: 4 << 20, stripeCount: 1 };
    assert.equal(isStriped(info), false);
    assert.equal(baseImageFeatures(info), 1 | 4 | 8 | 16 | 32);
    const striped = { ...info, stripeUnit: 64 << 10, stripeCount: 4 };
    assert.equal(isStriped(striped), true);
    assert.equal(baseImageFeatures(striped), 63);
    assert.equal(baseImageFeatures({ ...info, features: 0n }), 1, "layering always");
  });

  it("a source's recorded features leave out 'operations' (set by librbd while a snapshot is being removed), nothing else", () => {
    const info = { size: 1, features: 0x13dn, order: 22, stripeUnit: 0, stripeCount: 0 }; // 0x100: operations
    assert.deepEqual(sourceFacts(info), { ...info, features: 0x3dn });
    assert.deepEqual(sourceFacts({ ...info, features: 0x3dn }), { ...info, features: 0x3dn });
  });

  it("the header names the plan's kind, base image, snapshots and the expected destination", () => {
    const req = request({ jobId: "j", destination: { address: "peer:1", clusterFsid: "" } });
    const plan = { ...fullPlan("vol", req.backupId, ""), incremental: true, parent: "p", baseImage: "vol.backup.x" };
    const info = { size: 5 << 20, features: 1n, order: 22, stripeUnit: 64 << 10, stripeCount: 2 };
    const meta = {} as never;
    const h = backupHeader(
      { source: { chunkSize: 1 << 20, readsInFlight: 1 } },
      req,
      plan,
      "s",
      info,
      { pool: "b", namespace: "n", fsid: "f" },
      meta,
    );
    assert.equal(h.kind, TransferKind.BACKUP_INCREMENTAL);
    assert.deepEqual(h.destination, { pool: "b", namespace: "n", image: "vol.backup.x" });
    assert.deepEqual([h.fromSnapshot, h.toSnapshot, h.imageSize, h.chunkSize], ["p", "s", 5 << 20, 1 << 20]);
    assert.deepEqual([h.stripeUnit, h.stripeCount, h.expectedFsid, h.jobId], [64 << 10, 2, "f", "j"]);
  });

  it("a lost outcome's result names the committed snapshot, its parent, and says the counts are unknown", () => {
    const req = request();
    const older = snap(randomUUID(), 1);
    const mine = { ...snap(req.backupId, 2), size: 77 };
    const r = completedEarlier(req, { baseImage: "vol.backup.x", snapshots: [older, mine] }, Date.now(), {
      destPool: "backups",
      destNs: "",
      fsid: "fsid-b",
    });
    assert.deepEqual(
      [r.baseImage, r.snapshot, r.incremental, r.parentSnapshot, r.imageSize, r.dataBytesSent],
      ["vol.backup.x", mine.name, true, older.name, 77, 0],
    );
    assert.deepEqual(r.warnings, [COMPLETED_EARLIER_WARNING]);
    assert.equal(r.destinationFsid, "fsid-b");
  });
});

describe("backup phases against a fake cluster", () => {
  const run = (fc: FakeBackupCluster, req: BackupRequest) =>
    backup(fc.context(quiet), req, new AbortController().signal);

  it("a full backup: snapshot created, header sent, result reported, everything closed", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    const req = request();
    const r = await run(fc, req);
    assert.equal(fc.headers.length, 1);
    assert.equal(fc.headers[0]?.kind, TransferKind.BACKUP_FULL);
    assert.equal(fc.headers[0]?.destination?.image, `vol.backup.${req.backupId}`);
    assert.equal(r.snapshot, fc.headers[0]?.toSnapshot);
    assert.deepEqual(
      vol.snaps.map((s) => s.name),
      [r.snapshot],
    );
    assert.equal(vol.snaps[0]?.quiesced, true, "a volume's snapshot asks its clients to quiesce (their hooks run)");
    assert.equal(parseBackupSnap(r.snapshot)?.backupId, req.backupId);
    assert.match(r.forcedFullReason, /no earlier backup/);
    assert.deepEqual([vol.open, fc.ioOpen], [0, 0]);
    assert.equal(vol.opened, 1, "the volume is opened once: its handle moves to the snapshot and back");
    assert.deepEqual(vol.moves, [r.snapshot, null]);
  });

  it("an incremental diffs from the common snapshot and prunes the chain's older ones", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    const names = fc.chain("vol.backup.x", [randomUUID(), randomUUID()]);
    for (const n of names) vol.addSnap(n);
    const r = await run(fc, request());
    assert.deepEqual([r.incremental, r.parentSnapshot, r.baseImage], [true, names[1], "vol.backup.x"]);
    assert.equal(fc.headers[0]?.fromSnapshot, names[1]);
    assert.deepEqual(r.sourceSnapshotsRemoved, names);
    assert.deepEqual(
      vol.snaps.map((s) => s.name),
      [r.snapshot],
    );
  });

  it("the backup snapshots its prune left on the volume ride on the result (the lease runner lists nothing more)", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    const names = fc.chain("vol.backup.x", [randomUUID(), randomUUID()]);
    for (const n of names) vol.addSnap(n);
    vol.addSnap("not-a-backup-snapshot");
    // Kept by request: pruned neither on the volume nor from the carried list.
    const keep = names[0] as string;
    const r: WithSourceSnapshots = await run(fc, request({ keepSnapshots: [keep] }));
    assert.deepEqual(r.sourceSnapshotsRemoved, [names[1]]);
    const left = vol.snaps.filter((s) => parseBackupSnap(s.name)).map((s) => s.name);
    assert.deepEqual(left, [keep, r.snapshot]);
    assert.deepEqual(
      r[SOURCE_SNAPSHOTS]?.map((s) => s.name),
      left,
    );
    assert.equal(r[SOURCE_SNAPSHOTS]?.[1]?.backupId, r.backupId);
    // Never on the wire: the generated encoder knows only the message's fields.
    const plain = BackupResult.fromPartial({ backupId: r.backupId });
    const carrying: WithSourceSnapshots = { ...plain, [SOURCE_SNAPSHOTS]: r[SOURCE_SNAPSHOTS] };
    assert.deepEqual(BackupResult.encode(carrying).finish(), BackupResult.encode(plain).finish());
  });

  it("a coordinator's lease (skip_source_prune) removes no snapshot and carries them all to the outcome", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    const names = fc.chain("vol.backup.x", [randomUUID(), randomUUID()]);
    for (const n of names) vol.addSnap(n);
    const r: WithSourceSnapshots = await run(fc, request({ skipSourcePrune: true, maxSnapshots: 1 }));
    assert.deepEqual([r.incremental, r.parentSnapshot], [true, names[1]]);
    assert.deepEqual(r.sourceSnapshotsRemoved, []);
    assert.deepEqual(r.warnings, []);
    const all = [...(names as string[]), r.snapshot];
    assert.deepEqual(
      vol.snaps.map((s) => s.name),
      all,
      "every snapshot stays (max_snapshots is the hygiene's to apply)",
    );
    assert.deepEqual(
      r[SOURCE_SNAPSHOTS]?.map((s) => s.name),
      all,
    );
    assert.deepEqual(vol.moves, [r.snapshot, null], "the listing is made at the head");
  });

  it("a job's retry that finds its backup committed reports it (lost outcome) without a new snapshot", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    const req = request({ jobId: "job-1" });
    const [committed] = fc.chain("vol.backup.x", [req.backupId]);
    vol.addSnap(committed as string); // the earlier attempt's snapshot, never pruned
    const r = await run(fc, req);
    assert.equal(fc.headers.length, 0, "nothing is sent again");
    assert.deepEqual([r.snapshot, r.baseImage, r.incremental], [committed, "vol.backup.x", false]);
    assert.deepEqual(r.warnings, [COMPLETED_EARLIER_WARNING]);
    assert.deepEqual(
      vol.snaps.map((s) => s.name),
      [committed],
    );
    // Without a job, the same backup id again is a conflict.
    await assert.rejects(run(fc, { ...req, jobId: "" }), (e) => statusOf(e) === Status.ALREADY_EXISTS);
    assert.deepEqual([vol.open, fc.ioOpen], [0, 0]);
  });

  it("a leftover snapshot of an interrupted attempt is removed, with a warning", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    const req = request();
    const leftover = backupSnapName(req.backupId, 1000);
    vol.addSnap(leftover);
    const r = await run(fc, req);
    assert.ok(!vol.snaps.some((s) => s.name === leftover));
    assert.match(r.warnings[0] ?? "", /^removed .* interrupted attempt/);
  });

  it("a failed transfer removes the new source snapshot and reports the destination's status", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    fc.onTransfer = async () => {
      throw new AppError(Status.RESOURCE_EXHAUSTED, "the backup pool is full");
    };
    await assert.rejects(run(fc, request()), (e) => statusOf(e) === Status.RESOURCE_EXHAUSTED);
    assert.deepEqual(vol.snaps, []);
    assert.deepEqual([vol.open, fc.ioOpen], [0, 0]);
  });

  it("stopped (a cancel) after the destination committed: the backup is the result, its source snapshot kept", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    const req = request({ jobId: "job-1" });
    const ac = new AbortController();
    fc.onTransfer = async (h) => {
      // The destination had every byte and committed; the source's wait for its answer is then cut short.
      fc.chains.push({
        baseImage: h.destination?.image as string,
        snapshots: [{ name: h.toSnapshot, backupId: req.backupId, timestamp: 1, snapId: 1, size: h.imageSize }],
      } as never);
      ac.abort();
      throw new AppError(Status.CANCELLED, "cancelled while waiting for the destination's answer");
    };
    const r = await backup(fc.context(quiet), req, ac.signal);
    assert.equal(r.snapshot, fc.headers[0]?.toSnapshot);
    assert.equal(r.baseImage, `vol.backup.${req.backupId}`);
    assert.deepEqual(r.warnings, [COMMITTED_WHILE_STOPPED_WARNING]);
    assert.deepEqual(
      vol.snaps.map((s) => s.name),
      [r.snapshot],
      "the source snapshot stays: the chain's next incremental starts from it",
    );
    assert.deepEqual([vol.open, fc.ioOpen], [0, 0]);
  });

  it("stopped before the destination committed: cancelled, the source snapshot removed; a failure not stopped asks nothing", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    const ac = new AbortController();
    fc.onTransfer = async () => {
      ac.abort();
      throw new AppError(Status.CANCELLED, "cancelled");
    };
    await assert.rejects(backup(fc.context(quiet), request(), ac.signal), (e) => statusOf(e) === Status.CANCELLED);
    assert.deepEqual(vol.snaps, []);
    assert.equal(fc.listed, 2, "the plan's listing, then the question");
    const plain = new FakeBackupCluster();
    plain.volume("vol");
    plain.onTransfer = async () => {
      throw new AppError(Status.DATA_LOSS, "digest mismatch");
    };
    await assert.rejects(run(plain, request()), (e) => statusOf(e) === Status.DATA_LOSS);
    assert.equal(plain.listed, 1, "only the plan's listing");
  });

  it("AUTO: an incremental whose source read failed is redone in full", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    const names = fc.chain("vol.backup.x", [randomUUID()]);
    vol.addSnap(names[0] as string);
    fc.onTransfer = async (_h, n) => {
      if (n === 1) throw new SourceReadError("diff failed");
      return { destinationFsid: "fsid-b", warnings: [] } as never;
    };
    const req = request();
    const r = await run(fc, req);
    assert.deepEqual(
      fc.headers.map((h) => h.kind),
      [TransferKind.BACKUP_INCREMENTAL, TransferKind.BACKUP_FULL],
    );
    assert.deepEqual([r.incremental, r.baseImage], [false, `vol.backup.${req.backupId}`]);
    assert.match(r.forcedFullReason, /incremental diff from .* failed \(diff failed\)/);
  });

  it("a missing pool or volume is NOT_FOUND, an INCREMENTAL without a chain FAILED_PRECONDITION", async () => {
    const fc = new FakeBackupCluster();
    fc.volume("vol");
    const other = (pool: string, image: string) =>
      request({ source: { $case: "volume", value: { pool, namespace: "", image } } });
    await assert.rejects(run(fc, other("nopool", "vol")), (e) => statusOf(e) === Status.NOT_FOUND);
    await assert.rejects(run(fc, other("rbd", "novol")), (e) => statusOf(e) === Status.NOT_FOUND);
    await assert.rejects(
      run(fc, request({ mode: BackupMode.BACKUP_MODE_INCREMENTAL })),
      (e) => statusOf(e) === Status.FAILED_PRECONDITION,
    );
    assert.equal(fc.headers.length, 0);
    assert.equal(fc.ioOpen, 0);
  });
});
