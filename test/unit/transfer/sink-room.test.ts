/**
 * The free-space margin check (agents/transfer/sink/room.ts) through runSink, against the fake cluster:
 * a cluster with more than the margin free takes any transfer (images are thin: their size does not
 * count); one within the margin refuses every kind with RESOURCE_EXHAUSTED and a message an operator
 * can act on, before anything is created or journalled.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runSink } from "../../../agents/transfer/sink";
import { human } from "../../../agents/transfer/sink/room";
import { AppError, Status } from "../../../src/common/errors";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { FakeCeph, poolState } from "./fakes/fake-ceph";
import { sinkDeps } from "./fakes/sink-deps";
import { chunkParts, Feed, header, KiB, messages, pattern } from "./fakes/stream";

const MiB = 1024 * KiB;
const CHUNK = 64 * KiB;

/** A 100 MiB cluster (margin: 5 MiB) with `available` bytes free. */
function cluster(available: number): FakeCeph {
  const ceph = new FakeCeph("backups", "rbd");
  ceph.capacity = 100 * MiB;
  ceph.available = available;
  return ceph;
}

describe("runSink: free-space margin", () => {
  it("a cluster with more than the margin free: a full backup proceeds, even of an image larger than that (thin)", async () => {
    const ceph = cluster(6 * MiB); // 6 MiB free > 5 MiB margin; the image is 64 MiB, its data 256 KiB
    const h = header({ imageSize: 64 * MiB });
    const s = await runSink(sinkDeps(ceph), new Feed(messages(h, chunkParts(4, CHUNK))));
    assert.equal(s.imageCreated, true);
    assert.equal(s.snapshotCreated, h.toSnapshot);
  });

  it("a cluster within the margin: RESOURCE_EXHAUSTED, nothing created or journalled", async () => {
    const ceph = cluster(5 * MiB - 100 * KiB);
    const before = poolState(ceph, "backups");
    const deps = sinkDeps(ceph);
    const e = await runSink(deps, new Feed(messages(header(), chunkParts(4, CHUNK)))).catch((x) => x);
    assert.ok(e instanceof AppError, String(e));
    assert.equal(e.status, Status.RESOURCE_EXHAUSTED);
    assert.equal(
      e.message,
      "cluster site-b is nearly full: 4.9 MiB of 100 MiB available, at most the 5 % kept free (5 MiB); " +
        "this full backup was not started: free space or add capacity",
    );
    assert.equal(poolState(ceph, "backups"), before);
    assert.deepEqual(ceph.log, [], "no call changed the cluster");
    assert.equal(deps.journal.entries.size, 0);
  });

  it("a restore over the original into a nearly full cluster: RESOURCE_EXHAUSTED, the image untouched", async () => {
    const ceph = cluster(1 * MiB);
    const original = ceph.addImage("rbd", "volume-1", pattern(128 * KiB, 3), ["user-snap"]);
    const before = poolState(ceph, "rbd");
    const h = header({
      kind: TransferKind.RESTORE_ORIGINAL,
      destination: { pool: "rbd", namespace: "", image: "volume-1" },
    });
    const e = await runSink(sinkDeps(ceph), new Feed(messages(h, chunkParts(4, CHUNK)))).catch((x) => x);
    assert.ok(e instanceof AppError, String(e));
    assert.equal(e.status, Status.RESOURCE_EXHAUSTED);
    assert.match(e.message, /nearly full: .* this restore was not started: free space or add capacity/);
    assert.equal(poolState(ceph, "rbd"), before);
    assert.equal(original.opens, 0);
  });

  it("an incremental into a nearly full cluster is refused too; with room it proceeds", async () => {
    const full = cluster(1 * MiB);
    const base = full.addImage("backups", "vol.backup.p", pattern(256 * KiB, 1), ["backup.p.snap.1"]);
    const h = header({
      kind: TransferKind.BACKUP_INCREMENTAL,
      fromSnapshot: "backup.p.snap.1",
      destination: { pool: "backups", namespace: "", image: "vol.backup.p" },
    });
    const e = await runSink(sinkDeps(full), new Feed(messages(h, chunkParts(1, CHUNK)))).catch((x) => x);
    assert.equal((e as AppError).status, Status.RESOURCE_EXHAUSTED);
    assert.equal(base.snaps.length, 1);
    const roomy = cluster(50 * MiB);
    const base2 = roomy.addImage("backups", "vol.backup.p", pattern(256 * KiB, 1), ["backup.p.snap.1"]);
    const s = await runSink(sinkDeps(roomy), new Feed(messages(h, chunkParts(1, CHUNK))));
    assert.equal(s.snapshotCreated, h.toSnapshot);
    assert.equal(base2.snaps.length, 2);
  });

  it("a cluster that reports no usage (no manager: 0 of 0 bytes) is not judged: the transfer proceeds", async () => {
    const ceph = cluster(0);
    ceph.capacity = 0;
    const h = header();
    const s = await runSink(sinkDeps(ceph), new Feed(messages(h, chunkParts(4, CHUNK))));
    assert.equal(s.snapshotCreated, h.toSnapshot);
  });

  it("human() sizes", () => {
    assert.equal(human(300), "300 B");
    assert.equal(human(1.2 * 2 ** 30), "1.2 GiB");
    assert.equal(human(4 * 2 ** 30), "4 GiB");
    assert.equal(human(512 * MiB), "512 MiB");
  });
});
