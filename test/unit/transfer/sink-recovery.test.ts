/**
 * Crash recovery (agents/transfer/sink/recovery.ts) from journal entries, against an in-memory
 * cluster: what it removes, rolls back and keeps, the dead client fenced, and a second run a no-op.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import type { JournalEntry } from "../../../agents/transfer/journal";
import { INCOMPLETE_KEY, recoverInterrupted, sweepLeftovers } from "../../../agents/transfer/sink";
import { LEFTOVER_GRACE_MS } from "../../../agents/transfer/sink/abandon";
import { claimImageAlone } from "../../../agents/transfer/sink/running";
import { TransferHeader, TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { FakeCeph, poolState } from "./fakes/fake-ceph";
import { sinkDeps } from "./fakes/sink-deps";
import { KiB, pattern } from "./fakes/stream";

const DEAD = "10.0.0.9:0/77";

function entry(over: Partial<JournalEntry>): JournalEntry {
  return {
    transferId: randomUUID(),
    kind: TransferKind.BACKUP_FULL,
    pool: "backups",
    namespace: "",
    image: "x",
    createdImage: false,
    clientAddr: DEAD,
    startedAt: new Date().toISOString(),
    ...over,
  };
}

describe("sink crash recovery", () => {
  it("the periodic sweep undoes an entry a failed cleanup left (not held, not running, old enough); a recent or a running one stays", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const size = 64 * KiB;
    const old = new Date(Date.now() - LEFTOVER_GRACE_MS - 1000).toISOString();
    const left = entry({ image: "left", createdImage: true, toSnapshot: "backup.l.snap.1", startedAt: old });
    ceph.addImage("backups", "left", pattern(size, 1)).meta.set(INCOMPLETE_KEY, left.transferId);
    const recent = entry({ image: "recent", createdImage: true, toSnapshot: "backup.r.snap.1" });
    ceph.addImage("backups", "recent", pattern(size, 2)).meta.set(INCOMPLETE_KEY, recent.transferId);
    const busy = entry({ image: "busy", createdImage: true, toSnapshot: "backup.b.snap.1", startedAt: old });
    ceph.addImage("backups", "busy", pattern(size, 3)).meta.set(INCOMPLETE_KEY, busy.transferId);
    for (const e of [left, recent, busy]) await deps.journal.write(e);
    const unclaim = await claimImageAlone(
      TransferHeader.fromPartial({ destination: { pool: "backups", namespace: "", image: "busy" } }),
      0,
    );
    assert.ok(unclaim, "a transfer into busy runs");
    try {
      const done = (await sweepLeftovers(deps)).join("\n");
      assert.match(done, /backups\/left left behind by a failed cleanup was undone/);
      assert.doesNotMatch(done, /recent|busy/);
      const p = ceph.pool("backups");
      assert.equal(p.images.has("left"), false, "the leftover is undone");
      assert.ok(p.images.has("recent") && p.images.has("busy"), "a recent entry and a running transfer's stay");
      assert.deepEqual([...deps.journal.entries.values()].map((e) => e.image).sort(), ["busy", "recent"]);
    } finally {
      unclaim();
    }
  });

  it("an uncommitted backup's map and metadata go only when its commit had begun (metaCreated); otherwise they are another backup's", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const objects = ceph.pool("backups").objects;
    // Crashed before its commit, under a backup id another backup has: that backup's objects stay.
    const early = entry({ kind: TransferKind.BACKUP_INCREMENTAL, image: "c1", backupId: "reused" });
    ceph.addImage("backups", "c1", pattern(64 * KiB, 1));
    objects.set("backup.reused.meta", Buffer.from("{}"));
    objects.set("backup.reused.digests", Buffer.from("map"));
    // Crashed in its commit: its own two objects go.
    const late = entry({ kind: TransferKind.BACKUP_INCREMENTAL, image: "c2", backupId: "mine", metaCreated: true });
    ceph.addImage("backups", "c2", pattern(64 * KiB, 2));
    objects.set("backup.mine.meta", Buffer.from("{}"));
    objects.set("backup.mine.digests", Buffer.from("map"));
    for (const e of [early, late]) await deps.journal.write(e);
    await recoverInterrupted(deps);
    assert.ok(objects.has("backup.reused.meta") && objects.has("backup.reused.digests"), "another backup's: untouched");
    assert.equal(objects.has("backup.mine.meta") || objects.has("backup.mine.digests"), false, "its own: removed");
  });

  it("removes, rolls back or keeps exactly what each interrupted transfer left; fences the dead client; safe twice", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const size = 64 * KiB;
    const half = entry({
      image: "half",
      createdImage: true,
      toSnapshot: "backup.h.snap.1",
      backupId: "h",
      metaCreated: true,
    });
    ceph.addImage("backups", "half", pattern(size, 1)).meta.set(INCOMPLETE_KEY, half.transferId);
    ceph.pool("backups").objects.set("backup.h.meta", Buffer.from("{}"));

    const done = entry({ image: "done", createdImage: true, toSnapshot: "backup.d.snap.1" });
    const doneImg = ceph.addImage("backups", "done", pattern(size, 2), ["backup.d.snap.1"]);
    doneImg.meta.set(INCOMPLETE_KEY, done.transferId);

    const foreign = entry({ image: "foreign", createdImage: true, toSnapshot: "backup.f.snap.1" });
    ceph.addImage("backups", "foreign", pattern(size, 3)).meta.set(INCOMPLETE_KEY, randomUUID());

    const parent = pattern(size, 4);
    const incr = entry({ kind: TransferKind.BACKUP_INCREMENTAL, image: "chain", rollbackTo: "backup.p.snap.1" });
    const chain = ceph.addImage("backups", "chain", parent, ["backup.p.snap.1"]);
    chain.data.fill(9, 0, 4096);

    const gone = entry({ pool: "deleted-pool", image: "y" });
    for (const e of [half, done, foreign, incr, gone]) await deps.journal.write(e);

    const report = await recoverInterrupted(deps);
    assert.deepEqual(ceph.blocklisted, [DEAD]);
    const p = ceph.pool("backups");
    assert.equal(p.images.has("half"), false, "the half-written image it created is removed");
    assert.equal(p.objects.has("backup.h.meta"), false, "with the metadata object of the uncommitted backup");
    assert.equal(doneImg.meta.has(INCOMPLETE_KEY), false, "a committed image keeps its data, loses the marker");
    assert.ok(p.images.has("foreign"), "an image carrying another transfer's marker is not ours to remove");
    assert.ok(chain.data.equals(parent), "the chain's head is rolled back to its parent");
    assert.equal(deps.journal.entries.size, 0, "every entry is done");
    assert.equal(report.length, 3, report.join("\n")); // fenced, removed, rolled back

    const after = poolState(ceph, "backups");
    assert.deepEqual(await recoverInterrupted(deps), []);
    assert.equal(poolState(ceph, "backups"), after, "a second run changes nothing");
  });

  it("killed between creating a base image and marking it: the empty base image goes; a restore's volume stays", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const size = 64 * KiB;
    // A full backup's base image, created, never marked nor written: removed.
    const bare = entry({ image: "vol.backup.b", createdImage: true, toSnapshot: "backup.b.snap.1", backupId: "b" });
    ceph.addImage("backups", "vol.backup.b", Buffer.alloc(size));
    // The same, but written (not ours to judge without the marker): kept.
    const written = entry({ image: "vol.backup.w", createdImage: true, toSnapshot: "backup.w.snap.1", backupId: "w" });
    ceph.addImage("backups", "vol.backup.w", pattern(size, 5));
    // A restore's new volume without the marker (the caller's name; perhaps the caller's image): kept.
    const restore = entry({ kind: TransferKind.RESTORE_NEW, image: "users-volume", createdImage: true });
    ceph.addImage("backups", "users-volume", Buffer.alloc(size));
    for (const e of [bare, written, restore]) await deps.journal.write(e);
    const done = await recoverInterrupted(deps);
    const images = ceph.pool("backups").images;
    assert.equal(images.has("vol.backup.b"), false, done.join("\n"));
    assert.ok(images.has("vol.backup.w"));
    assert.ok(images.has("users-volume"));
    assert.equal(deps.journal.entries.size, 0);
  });

  it("an entry whose recovery fails stays for the next start", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const e = entry({ image: "half", createdImage: true });
    ceph.addImage("backups", "half", pattern(4 * KiB, 1)).meta.set(INCOMPLETE_KEY, e.transferId);
    // A pool that cannot be opened: recovery logs it and keeps the entry.
    ceph.openIoCtx = async () => {
      throw new Error("cluster unreachable");
    };
    await deps.journal.write(e);
    await recoverInterrupted(deps);
    assert.equal(deps.journal.entries.size, 1);
    assert.ok(ceph.pool("backups").images.has("half"));
    assert.ok(deps.lines.some((l) => l.level === "error" && /will retry at next start/.test(l.msg)));
  });
});

describe("sink crash recovery: a backup committed by a later attempt, and an image already gone", () => {
  it("a stale entry of backup X whose retry committed X under its own snapshot: X's metadata and digest map stay, nothing rolled back", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const size = 64 * KiB;
    const x = randomUUID();
    // Attempt 1 (snapshot N1) failed and its cleanup failed too, so its entry stayed; the retry
    // committed X as N2 on the same chain.
    const stale = entry({
      kind: TransferKind.BACKUP_INCREMENTAL,
      image: "vol.backup.chain",
      rollbackTo: "backup.p.snap.1",
      toSnapshot: `backup.${x}.snap.1`,
      backupId: x,
      metaCreated: true,
    });
    const img = ceph.addImage("backups", "vol.backup.chain", pattern(size, 4), [
      "backup.p.snap.1",
      `backup.${x}.snap.2`,
    ]);
    img.data.fill(7, 0, 4096); // the head after the retry's commit (X's data)
    const objects = ceph.pool("backups").objects;
    objects.set(`backup.${x}.meta`, Buffer.from("{}"));
    objects.set(`backup.${x}.digests`, Buffer.from("map"));
    await deps.journal.write(stale);
    const head = Buffer.from(img.data);

    await recoverInterrupted(deps);
    assert.ok(objects.has(`backup.${x}.meta`), "X's metadata object stays");
    assert.ok(objects.has(`backup.${x}.digests`), "X's digest map stays");
    assert.ok(img.data.equals(head), "the head is not rolled back");
    assert.deepEqual(await deps.journal.list(), [], "the entry is gone");
  });

  it("an entry whose image is already gone: the uncommitted backup's metadata object and digest map are removed", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const x = randomUUID();
    const objects = ceph.pool("backups").objects;
    objects.set(`backup.${x}.meta`, Buffer.from("{}"));
    objects.set(`backup.${x}.digests`, Buffer.from("map"));
    objects.set("backup.other.meta", Buffer.from("{}"));
    await deps.journal.write(
      entry({
        image: `vol.backup.${x}`,
        createdImage: true,
        toSnapshot: `backup.${x}.snap.1`,
        backupId: x,
        metaCreated: true,
      }),
    );
    await recoverInterrupted(deps);
    assert.equal(objects.has(`backup.${x}.meta`), false, "else every retry of X fails ALREADY_EXISTS");
    assert.equal(objects.has(`backup.${x}.digests`), false);
    assert.ok(objects.has("backup.other.meta"), "nothing else touched");
    assert.deepEqual(await deps.journal.list(), []);
  });
});
