/**
 * The free-space margin check (agents/transfer/sink/room.ts) through runSink, against the fake cluster:
 * a full backup or restore that fits with the margin proceeds; one that does not is refused with
 * RESOURCE_EXHAUSTED and a message an operator can act on, before anything is created or journalled;
 * incrementals are left to the full flags.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runSink } from "../../../agents/transfer/sink";
import { bytesToWrite, human } from "../../../agents/transfer/sink/room";
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
  it("a full backup that fits with the margin proceeds", async () => {
    const ceph = cluster(6 * MiB); // 256 KiB + 5 MiB ≤ 6 MiB
    const h = header();
    const s = await runSink(sinkDeps(ceph), new Feed(messages(h, chunkParts(4, CHUNK))));
    assert.equal(s.imageCreated, true);
    assert.equal(s.snapshotCreated, h.toSnapshot);
  });

  it("a full backup that does not fit: RESOURCE_EXHAUSTED, nothing created or journalled", async () => {
    const ceph = cluster(5 * MiB + 100 * KiB); // 256 KiB + 5 MiB > 5.1 MiB
    const before = poolState(ceph, "backups");
    const deps = sinkDeps(ceph);
    const e = await runSink(deps, new Feed(messages(header(), chunkParts(4, CHUNK)))).catch((x) => x);
    assert.ok(e instanceof AppError, String(e));
    assert.equal(e.status, Status.RESOURCE_EXHAUSTED);
    assert.equal(
      e.message,
      "cluster site-b is too full for this full backup: it has 5.1 MiB available, " +
        "this full backup needs 256 KiB plus a 5 % margin (5 MiB): free space or add capacity",
    );
    assert.equal(poolState(ceph, "backups"), before);
    assert.deepEqual(ceph.log, [], "no call changed the cluster");
    assert.equal(deps.journal.entries.size, 0);
  });

  it("a restore over the original that does not fit: RESOURCE_EXHAUSTED, the image untouched", async () => {
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
    assert.match(e.message, /this restore needs 256 KiB plus a 5 % margin .*: free space or add capacity/);
    assert.equal(poolState(ceph, "rbd"), before);
    assert.equal(original.opens, 0);
  });

  it("an incremental is not held to the image size (only to the full flags)", async () => {
    const ceph = cluster(1 * MiB);
    const base = ceph.addImage("backups", "vol.backup.p", pattern(256 * KiB, 1), ["backup.p.snap.1"]);
    const h = header({
      kind: TransferKind.BACKUP_INCREMENTAL,
      fromSnapshot: "backup.p.snap.1",
      destination: { pool: "backups", namespace: "", image: "vol.backup.p" },
    });
    const s = await runSink(sinkDeps(ceph), new Feed(messages(h, chunkParts(1, CHUNK))));
    assert.equal(s.snapshotCreated, h.toSnapshot);
    assert.equal(base.snaps.length, 2);
  });

  it("bytesToWrite per kind; human() sizes", () => {
    assert.equal(bytesToWrite(header({ imageSize: 7 })), 7);
    assert.equal(bytesToWrite(header({ kind: TransferKind.RESTORE_NEW, imageSize: 7 })), 7);
    assert.equal(bytesToWrite(header({ kind: TransferKind.BACKUP_INCREMENTAL, imageSize: 7 })), 0);
    assert.equal(human(300), "300 B");
    assert.equal(human(1.2 * 2 ** 30), "1.2 GiB");
    assert.equal(human(4 * 2 ** 30), "4 GiB");
    assert.equal(human(512 * MiB), "512 MiB");
  });
});
