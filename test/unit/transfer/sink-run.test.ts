/**
 * runSink (agents/transfer/sink) against an in-memory cluster: what a transfer leaves on the
 * destination. Commit order (every write done → flush → metadata object → snapshot), checksum
 * failures never written, write failures reported with their status, and cleanup per kind on failure
 * or cancel — settled before runSink settles, and nothing touched outside the transfer's image.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { digestsObjectName } from "../../../agents/transfer/digests";
import { INCOMPLETE_KEY, RecentCommits, recoverInterrupted, runSink } from "../../../agents/transfer/sink";
import { AppError, Status } from "../../../src/common/errors";
import { metaObjectName } from "../../../src/common/ids";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { until } from "../../helpers/wait";
import { cephError, FakeCeph, type Gates, poolState } from "./fakes/fake-ceph";
import { sinkDeps } from "./fakes/sink-deps";
import { chunkParts, Feed, header, KiB, messages, pattern, type Released } from "./fakes/stream";

const CHUNK = 64 * KiB;

/** A pool with a bystander image (with a snapshot) and object: they must never change. */
function cluster(): FakeCeph {
  const ceph = new FakeCeph("backups");
  ceph.addImage("backups", "other.backup.x", pattern(64 * KiB, 9), ["backup.x.snap.1"]);
  ceph.pool("backups").objects.set("backup.x.meta", Buffer.from("{}"));
  return ceph;
}

function status(e: unknown): Status {
  assert.ok(e instanceof AppError, `an AppError, got ${String(e)}`);
  return e.status;
}

/** Index of the first log line starting with `prefix` (−1 if none). */
const at = (log: string[], prefix: string) => log.findIndex((l) => l.startsWith(prefix));
const lastAt = (log: string[], prefix: string) => log.findLastIndex((l) => l.startsWith(prefix));

/**
 * Holds the fake's `gate` shut; returns what opens it. Never blocks: it opens by itself after 8 s — a sink
 * that waited for the gated step before answering gets its answer then, and the test's asserts fail.
 */
function shut(ceph: FakeCeph, gate: keyof Gates): () => void {
  let open!: () => void;
  ceph.gates[gate] = new Promise<void>((r) => {
    open = r;
  });
  const safety = setTimeout(() => open(), 8_000); // inside the tests' 10 s; no pause of the process opens it early
  return () => {
    clearTimeout(safety);
    open();
  };
}

describe("runSink: commit", () => {
  it("a full backup: all writes done → flush → metadata object → snapshot; data byte-identical; buffers released once", async () => {
    const ceph = cluster();
    const deps = sinkDeps(ceph);
    const h = header();
    const name = h.destination?.image as string;
    const parts = chunkParts(4, CHUNK);
    const released: Released = { counts: [] };
    const s = await runSink(deps, new Feed(messages(h, parts, { released })));

    const log = ceph.log;
    const flush = at(log, `flush ${name}`);
    assert.ok(flush > lastAt(log, `write ${name}`), "flush after the last write");
    assert.deepEqual(ceph.inFlightAtFlush, [0], "no write in flight when flush was called");
    assert.ok(at(log, `objCreate ${metaObjectName(h.backupId)}`) > flush, "metadata object after the flush");
    assert.ok(
      at(log, `snapCreate ${name} ${h.toSnapshot}`) > at(log, "objCreate"),
      "snapshot after the metadata object",
    );
    assert.ok(at(log, `metaRemove ${name} ${INCOMPLETE_KEY}`) > at(log, "snapCreate"), "marker removed last");

    const img = ceph.pool("backups").images.get(name);
    assert.ok(img);
    assert.ok(img.data.equals(Buffer.concat(parts.map((p) => ("data" in p ? p.data : Buffer.alloc(0))))));
    assert.deepEqual(
      img.snaps.map((x) => x.name),
      [h.toSnapshot],
    );
    assert.equal(img.snaps[0]?.quiesced, false, "the base image's snapshot skips quiesce (no other client maps it)");
    assert.equal(img.meta.has(INCOMPLETE_KEY), false);
    assert.deepEqual(ceph.pool("backups").objects.get(metaObjectName(h.backupId)), Buffer.from(h.metadataJson));
    assert.equal(img.opens, 0, "the image was closed");
    assert.equal(deps.journal.entries.size, 0, "the journal entry is gone");
    assert.deepEqual(released.counts, [1, 1, 1, 1]);
    assert.ok(ceph.maxWritesInFlight <= 3, `at most writesInFlight writes at once (${ceph.maxWritesInFlight})`);
    assert.equal(s.snapshotCreated, h.toSnapshot);
    assert.equal(s.imageCreated, true);
    assert.equal(s.dataChunks, 4);
    assert.equal(s.dataBytesWritten, 4 * CHUNK);
    assert.equal(s.destinationFsid, "fsid-b");
  });

  it("a new image carries its incomplete marker before the sink takes its first chunk (recovery's unmarkedBase relies on it)", async () => {
    const ceph = cluster();
    const open = shut(ceph, "metaSet");
    const deps = sinkDeps(ceph);
    const h = header();
    const name = h.destination?.image as string;
    const msgs = messages(h, chunkParts(4, CHUNK));
    let taken = 0;
    async function* counted() {
      for (const m of msgs) {
        taken++;
        yield m;
      }
    }
    const run = runSink(deps, counted());
    await until(() => ceph.pool("backups").images.get(name)?.opens === 1, "the new image open");
    // Event-loop turns enough for a sink that did not wait for the marker to take and write chunks.
    for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
    assert.equal(taken, 1, "only the header taken while the marker waits");
    assert.equal(at(ceph.log, "write"), -1, "nothing written while the marker waits");
    open();
    const s = await run;
    assert.equal(s.snapshotCreated, h.toSnapshot);
    assert.ok(at(ceph.log, `metaSet ${name} ${INCOMPLETE_KEY}`) < at(ceph.log, `write ${name}`), "marker, then data");
  });

  it("a committed backup is remembered for its confirmation: the snapshot as listed, the metadata bytes written", async () => {
    const ceph = cluster();
    const commits = new RecentCommits();
    const deps = sinkDeps(ceph, { commits });
    const h = header();
    const dest = h.destination as NonNullable<typeof h.destination>;
    await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK))));
    const c = commits.find(h.backupId, dest, h.toSnapshot);
    assert.ok(c, "recorded");
    const size = ceph.pool("backups").images.get(dest.image)?.snaps[0]?.data.length;
    assert.equal(size, h.imageSize, "the snapshot's size is the image's");
    assert.deepEqual(await c.snapshot, {
      name: h.toSnapshot,
      backupId: h.backupId,
      timestamp: 1,
      snapId: 1,
      size,
    });
    assert.deepEqual(Buffer.from(c.committed.metadata), ceph.pool("backups").objects.get(metaObjectName(h.backupId)));
    await commits.idle(5_000);
    assert.equal(ceph.pool("backups").images.get(dest.image)?.opens, 0, "the committing handle was closed");
  });

  it("a recorded backup answers before its handle closes; a delete's wait and the stop's wait cover the closing", {
    timeout: 10_000,
  }, async () => {
    const ceph = cluster();
    const commits = new RecentCommits();
    const deps = sinkDeps(ceph, { commits });
    const open = shut(ceph, "close");
    const h = header();
    const dest = h.destination as NonNullable<typeof h.destination>;
    const summary = await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK))));
    assert.equal(summary.snapshotCreated, h.toSnapshot);
    const img = ceph.pool("backups").images.get(dest.image);
    assert.equal(img?.opens, 1, "answered while the committing handle is still open");
    // The listing came from the committing handle, before it closes: the confirmation need not wait.
    assert.equal((await commits.find(h.backupId, dest, h.toSnapshot)?.snapshot)?.name, h.toSnapshot);
    let settled = false;
    const waiting = commits.settled(h.backupId, 5_000).then(() => {
      settled = true;
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, "a delete of that backup waits for the close");
    open();
    await waiting;
    assert.equal(img?.opens, 0);
    assert.ok(ceph.log.indexOf(`snapCreate ${dest.image} ${h.toSnapshot}`) >= 0);
    assert.equal(deps.journal.entries.size, 0, "the journal entry is gone once settled");
  });

  it("a recorded backup answers before its image loses the incomplete marker; the marker goes before the journal entry", {
    timeout: 10_000,
  }, async () => {
    const ceph = cluster();
    const commits = new RecentCommits();
    const deps = sinkDeps(ceph, { commits });
    const open = shut(ceph, "metaRemove");
    const h = header();
    const dest = h.destination as NonNullable<typeof h.destination>;
    const summary = await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK))));
    assert.equal(summary.snapshotCreated, h.toSnapshot);
    const img = ceph.pool("backups").images.get(dest.image);
    assert.equal(img?.meta.get(INCOMPLETE_KEY), h.transferId, "answered with the marker still on the image");
    assert.equal(deps.journal.entries.size, 1, "the journal entry stays while the marker is there");
    open();
    await commits.settled(h.backupId, 5_000);
    assert.equal(img?.meta.has(INCOMPLETE_KEY), false);
    assert.equal(deps.journal.entries.size, 0);
    assert.equal(img?.opens, 0);
  });

  it("a restore loses the marker before it answers", async () => {
    const ceph = cluster();
    const deps = sinkDeps(ceph, { commits: new RecentCommits() });
    const open = shut(ceph, "metaRemove");
    const h = header({ kind: TransferKind.RESTORE_NEW });
    const dest = h.destination as NonNullable<typeof h.destination>;
    let answered = false;
    const running = runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK)))).then((s) => {
      answered = true;
      return s;
    });
    await until(() => at(ceph.log, "flush") >= 0, "the flush");
    await new Promise((r) => setImmediate(r));
    assert.equal(answered, false, "no answer while the marker is being removed");
    open();
    await running;
    assert.equal(ceph.pool("backups").images.get(dest.image)?.meta.has(INCOMPLETE_KEY), false);
  });

  it("a restore whose marker cannot be removed: answered with a warning, and recovery never removes the volume", async () => {
    const ceph = cluster();
    ceph.faults.metaRemove = cephError("ETIMEDOUT", "rbd_metadata_remove");
    const deps = sinkDeps(ceph);
    const h = header({ kind: TransferKind.RESTORE_NEW });
    const name = h.destination?.image as string;
    // The journal entry's removal fails too: it outlives the transfer, as after a crash.
    const remove = deps.journal.remove.bind(deps.journal);
    deps.journal.remove = async () => {
      throw new Error("EIO: cannot remove the entry");
    };
    const s = await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK))));
    assert.ok(s.warnings.some((w) => /marker/.test(w)));
    const img = ceph.pool("backups").images.get(name);
    assert.equal(img?.meta.get(INCOMPLETE_KEY), h.transferId, "the marker stayed");
    assert.equal(deps.journal.entries.get(h.transferId)?.createdImage, false, "no longer this transfer's to remove");
    deps.journal.remove = remove;
    delete ceph.faults.metaRemove;
    await recoverInterrupted(deps);
    assert.ok(ceph.pool("backups").images.get(name), "the restored volume is still there");
    assert.equal(deps.journal.entries.size, 0);
  });

  it("a listing that fails leaves the entry without a snapshot (the confirmation reads Ceph)", async () => {
    const ceph = cluster();
    const commits = new RecentCommits();
    const h = header();
    const dest = h.destination as NonNullable<typeof h.destination>;
    const deps = sinkDeps(ceph, { commits });
    // The sink lists nothing before its commit: the first listing is the committed snapshot's.
    ceph.faults.snapList = cephError("ETIMEDOUT", "rbd_snap_list");
    await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK))));
    assert.equal(await commits.find(h.backupId, dest, h.toSnapshot)?.snapshot, null);
    assert.ok(deps.lines.some((l) => l.msg.startsWith("could not list the snapshot just made")));
  });

  it("a failure after the commit (the journal, the close) is a warning: the backup stands and is answered", async () => {
    const ceph = cluster();
    const commits = new RecentCommits();
    const deps = sinkDeps(ceph, { commits });
    deps.journal.remove = async () => {
      throw new Error("journal unwritable");
    };
    const h = header();
    const summary = await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK))));
    assert.equal(summary.snapshotCreated, h.toSnapshot);
    await commits.idle(5_000);
    const dest = h.destination as NonNullable<typeof h.destination>;
    assert.equal((await commits.find(h.backupId, dest, h.toSnapshot)?.snapshot)?.name, h.toSnapshot);
    assert.ok(deps.lines.some((l) => l.msg === "could not remove the journal entry after the commit"));
    assert.deepEqual(
      ceph
        .pool("backups")
        .images.get(dest.image)
        ?.snaps.map((x) => x.name),
      [h.toSnapshot],
    );
  });

  it("a restore, or a backup that fails at its snapshot, is not remembered", async () => {
    const ceph = cluster();
    const commits = new RecentCommits();
    ceph.faults.snapCreate = cephError("EIO", "rbd_snap_create");
    const h = header();
    // It fails at the snapshot (after all its data was written), not before.
    await assert.rejects(
      runSink(sinkDeps(ceph, { commits }), new Feed(messages(h, chunkParts(2, CHUNK)))),
      /rbd_snap_create/,
    );
    assert.ok(
      ceph.log.some((l) => l.startsWith(`write ${h.destination?.image} ${CHUNK}+`)),
      "its data was written",
    );
    const r = header({
      kind: TransferKind.RESTORE_NEW,
      destination: { pool: "rbd", namespace: "", image: "restored" },
    });
    await runSink(sinkDeps(new FakeCeph("rbd"), { commits }), new Feed(messages(r, chunkParts(1, CHUNK))));
    assert.equal(commits.size, 0);
  });

  it("an incremental: a dirty head is rolled back first; zero ranges are written; committed on top of the chain", async () => {
    const ceph = cluster();
    const deps = sinkDeps(ceph);
    const h = header({ kind: TransferKind.BACKUP_INCREMENTAL, fromSnapshot: "backup.p.snap.1" });
    const name = h.destination?.image as string;
    const parent = pattern(h.imageSize, 3);
    const img = ceph.addImage("backups", name, parent, ["backup.p.snap.1"]);
    img.data.fill(7, 0, 100); // a failed attempt left the head written
    const s = await runSink(
      deps,
      new Feed(
        messages(h, [
          { offset: CHUNK, data: pattern(CHUNK, 5) },
          { offset: 3 * CHUNK, zero: CHUNK },
        ]),
      ),
    );
    assert.ok(at(ceph.log, `snapRollback ${name} backup.p.snap.1`) < at(ceph.log, `write ${name}`));
    assert.match(s.warnings.join("\n"), /rolled the head .* back to backup\.p\.snap\.1/);
    const want = Buffer.from(parent);
    pattern(CHUNK, 5).copy(want, CHUNK);
    want.fill(0, 3 * CHUNK, 4 * CHUNK);
    assert.ok(img.data.equals(want), "head = parent + chunk + zeros");
    assert.deepEqual(
      img.snaps.map((x) => x.name),
      ["backup.p.snap.1", h.toSnapshot],
    );
    assert.equal(s.zeroBytesWritten, CHUNK);
    assert.equal(s.imageCreated, false);
  });

  it("a restore to a new volume applies image-meta (not this product's own keys) and leaves no snapshot", async () => {
    const ceph = new FakeCeph("rbd");
    const h = header({
      kind: TransferKind.RESTORE_NEW,
      destination: { pool: "rbd", namespace: "", image: "restored" },
      // A source that was itself a restore target can carry this product's own keys: never set.
      imageMeta: { conf_rbd_cache: "false", "rbdbackup.resume": "stale", "rbdbackup.incomplete": "x" },
    });
    const s = await runSink(sinkDeps(ceph), new Feed(messages(h, chunkParts(2, CHUNK))));
    const img = ceph.pool("rbd").images.get("restored");
    assert.ok(img);
    assert.deepEqual([...img.meta.entries()], [["conf_rbd_cache", "false"]]);
    assert.equal(img.snaps.length, 0);
    assert.equal(s.snapshotCreated, "");
  });
});

describe("runSink: failures", () => {
  it("a chunk whose checksum fails: DATA_LOSS, that chunk never written, the new base image removed", async () => {
    const ceph = cluster();
    const before = poolState(ceph, "backups");
    const deps = sinkDeps(ceph);
    const h = header();
    const released: Released = { counts: [] };
    const e = await runSink(deps, new Feed(messages(h, chunkParts(4, CHUNK), { corrupt: 2, released }))).catch(
      (x) => x,
    );
    assert.equal(status(e), Status.DATA_LOSS);
    assert.match(e.message, /checksum mismatch in the chunk at offset 131072/);
    assert.equal(deps.counts.checksumFailures, 1);
    // The pool's failure series existed before that chunk (a series born at 1 reads as no increase).
    assert.deepEqual(deps.counts.receiving, ["backups"]);
    assert.equal(
      at(ceph.log, `write ${h.destination?.image} ${2 * CHUNK}+`),
      -1,
      "the corrupt chunk was never written",
    );
    assert.equal(ceph.pool("backups").images.has(h.destination?.image as string), false, "base image removed");
    assert.equal(poolState(ceph, "backups"), before, "nothing else changed");
    assert.equal(deps.journal.entries.size, 0);
    assert.deepEqual(released.counts, [1, 1, 1, 0], "written and rejected buffers released once; the 4th never pulled");
  });

  it("a new image whose incomplete marker cannot be set: nothing written, the image removed, the error says why", async () => {
    const ceph = cluster();
    const before = poolState(ceph, "backups");
    ceph.faults.metaSet = cephError("EIO", "rbd_metadata_set");
    const deps = sinkDeps(ceph);
    const h = header();
    const e = await runSink(deps, new Feed(messages(h, chunkParts(4, CHUNK)))).catch((x) => x);
    assert.equal(status(e), Status.INTERNAL);
    assert.match(e.message, /rbd_metadata_set/);
    assert.equal(at(ceph.log, "write"), -1, "nothing written");
    assert.equal(at(ceph.log, "snapCreate"), -1, "no snapshot");
    assert.equal(poolState(ceph, "backups"), before, "the new image removed, nothing else changed");
    assert.equal(deps.journal.entries.size, 0);
  });

  it("a failed write stops the stream and is reported with its status (a full pool: RESOURCE_EXHAUSTED)", async () => {
    const ceph = cluster();
    const before = poolState(ceph, "backups");
    ceph.faults.writeAt = { offset: CHUNK, error: cephError("ENOSPC", "rbd_aio_write") };
    const deps = sinkDeps(ceph, { limits: { writesInFlight: 1, windowBytes: 1 << 20, fullCheckIntervalMs: 60_000 } });
    const h = header();
    const released: Released = { counts: [] };
    const e = await runSink(deps, new Feed(messages(h, chunkParts(4, CHUNK), { released }))).catch((x) => x);
    assert.equal(status(e), Status.RESOURCE_EXHAUSTED);
    assert.match(e.message, /pool backups on cluster site-b is full/);
    assert.equal(at(ceph.log, `write ${h.destination?.image} ${3 * CHUNK}`), -1, "no write after the failure");
    assert.equal(at(ceph.log, "flush"), -1);
    assert.equal(poolState(ceph, "backups"), before, "the new image removed, nothing else changed");
    // One write at a time: the 2nd fails, the 3rd (waiting for room) is refused, the 4th never pulled.
    assert.deepEqual(released.counts, [1, 1, 1, 0], "every buffer the sink took released exactly once");
  });

  for (const [what, fault, code] of [
    ["the flush fails", "flush", Status.UNAVAILABLE],
    ["the metadata object exists", "objCreate", Status.ALREADY_EXISTS],
    ["the snapshot fails", "snapCreate", Status.UNAVAILABLE],
  ] as const) {
    it(`${what}: no snapshot, no metadata object of ours, the new image removed`, async () => {
      const ceph = cluster();
      const before = poolState(ceph, "backups");
      ceph.faults[fault] = fault === "objCreate" ? cephError("EEXIST") : cephError("ETIMEDOUT");
      const deps = sinkDeps(ceph);
      const h = header();
      const e = await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK)))).catch((x) => x);
      assert.equal(status(e), code, e.message);
      assert.equal(at(ceph.log, "snapCreate"), -1, "no snapshot was made");
      assert.equal(poolState(ceph, "backups"), before, "image and our metadata object gone, nothing else changed");
      assert.equal(deps.journal.entries.size, 0);
    });
  }

  it("the journal says the metadata object is this transfer's before it is created (a kill in between leaves none behind)", async () => {
    const ceph = cluster();
    const deps = sinkDeps(ceph);
    const write = deps.journal.write.bind(deps.journal);
    deps.journal.write = async (e) => {
      if (e.metaCreated) ceph.log.push(`journal ${e.transferId} metaCreated`);
      await write(e);
    };
    const h = header();
    await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK))));
    const journalled = at(ceph.log, `journal ${h.transferId} metaCreated`);
    assert.ok(journalled >= 0, "journalled");
    assert.ok(journalled < at(ceph.log, `objCreate ${metaObjectName(h.backupId)}`), ceph.log.join("\n"));
  });

  it("a base image created although its creation failed (an op timeout that went through): removed, UNAVAILABLE", async () => {
    const ceph = cluster();
    const before = poolState(ceph, "backups");
    ceph.faults.imageCreateAfter = cephError("ETIMEDOUT", "rbd_create");
    const deps = sinkDeps(ceph);
    const h = header();
    const e = await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK)))).catch((x) => x);
    assert.equal(status(e), Status.UNAVAILABLE, e.message);
    assert.equal(poolState(ceph, "backups"), before, "the image the create made is gone");
    assert.equal(deps.journal.entries.size, 0);
  });

  it("a new volume created although its creation failed (an op timeout that went through): removed, so the retry can create it", async () => {
    for (const kind of [TransferKind.RESTORE_NEW, TransferKind.FAILBACK]) {
      const ceph = cluster();
      const before = poolState(ceph, "backups");
      ceph.faults.imageCreateAfter = cephError("ETIMEDOUT", "rbd_create");
      const deps = sinkDeps(ceph);
      // A failback without a from-snapshot into a volume that is gone creates it, as RESTORE_NEW.
      const h = header({ kind, ...(kind === TransferKind.FAILBACK ? { backupId: randomUUID() } : {}) });
      const e = await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK)))).catch((x) => x);
      assert.equal(status(e), Status.UNAVAILABLE, e.message);
      assert.equal(poolState(ceph, "backups"), before, `${TransferKind[kind]}: the image the create made is gone`);
      assert.equal(deps.journal.entries.size, 0);
    }
  });

  it("a new volume's create that failed, with an image of that name holding data, or another transfer's marker: left as it is", async () => {
    for (const other of ["data", "marker"] as const) {
      const ceph = cluster();
      const h = header({ kind: TransferKind.RESTORE_NEW });
      const name = h.destination?.image as string;
      const img = ceph.addImage(
        "backups",
        name,
        other === "data" ? pattern(h.imageSize, 3) : Buffer.alloc(h.imageSize),
      );
      if (other === "marker") img.meta.set(INCOMPLETE_KEY, "another-transfer");
      const before = poolState(ceph, "backups");
      ceph.faults.imageCreate = cephError("ETIMEDOUT", "rbd_create");
      const deps = sinkDeps(ceph);
      const e = await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK)))).catch((x) => x);
      assert.equal(status(e), Status.UNAVAILABLE, e.message);
      assert.equal(poolState(ceph, "backups"), before, `${other}: not removed, not changed`);
      assert.equal(deps.journal.entries.size, 0);
    }
  });

  it("the snapshot made although its creation failed (an op timeout that went through): committed, nothing undone", async () => {
    const ceph = cluster();
    ceph.faults.snapCreateAfter = cephError("ETIMEDOUT");
    const deps = sinkDeps(ceph);
    const h = header();
    const name = h.destination?.image as string;
    const s = await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK))));
    assert.equal(s.snapshotCreated, h.toSnapshot);
    const pool = ceph.pool("backups");
    assert.deepEqual(
      pool.images.get(name)?.snaps.map((x) => x.name),
      [h.toSnapshot],
    );
    assert.deepEqual(pool.objects.get(metaObjectName(h.backupId)), Buffer.from(h.metadataJson), "metadata kept");
    assert.ok(pool.objects.has(digestsObjectName(h.backupId)), "digest map kept");
    assert.equal(pool.images.get(name)?.meta.has(INCOMPLETE_KEY), false, "marker removed: complete");
    assert.equal(deps.journal.entries.size, 0);
  });

  it("the snapshot's creation and its listing both fail: nothing undone, the entry left for recovery", async () => {
    const ceph = cluster();
    ceph.faults.snapCreateAfter = cephError("ETIMEDOUT");
    ceph.faults.snapList = cephError("ETIMEDOUT");
    const deps = sinkDeps(ceph);
    const h = header();
    const name = h.destination?.image as string;
    const e = await runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK)))).catch((x) => x);
    assert.equal(status(e), Status.UNAVAILABLE, e.message);
    const pool = ceph.pool("backups");
    assert.ok(pool.images.has(name), "the image kept (its snapshot exists)");
    assert.ok(pool.objects.has(metaObjectName(h.backupId)), "metadata kept");
    assert.ok(pool.objects.has(digestsObjectName(h.backupId)), "digest map kept");
    assert.deepEqual(
      [...deps.journal.entries.values()].map((x) => x.transferId),
      [h.transferId],
      "recovery will decide",
    );
  });

  it("cancelled mid-stream (full backup): CANCELLED, and the new base image is already gone when runSink settles", async () => {
    const ceph = cluster();
    const before = poolState(ceph, "backups");
    const deps = sinkDeps(ceph);
    const h = header();
    const feed = new Feed(messages(h, chunkParts(4, CHUNK)), { holdAfter: 3, after: "hang" });
    const ac = new AbortController();
    const run = runSink(deps, feed, ac.signal);
    await feed.held;
    await until(() => at(ceph.log, "write") >= 0, "a write");
    ac.abort();
    const e = await run.catch((x) => x);
    assert.equal(status(e), Status.CANCELLED);
    assert.equal(poolState(ceph, "backups"), before, "removed before runSink settled");
    assert.equal(deps.journal.entries.size, 0);
  });

  it("an incremental cut short after writing: the head is rolled back to the parent, the chain untouched", async () => {
    const ceph = cluster();
    const h = header({ kind: TransferKind.BACKUP_INCREMENTAL, fromSnapshot: "backup.p.snap.1" });
    const name = h.destination?.image as string;
    const parent = pattern(h.imageSize, 3);
    const img = ceph.addImage("backups", name, parent, ["backup.p.snap.1"]);
    const before = poolState(ceph, "backups");
    const deps = sinkDeps(ceph);
    const feed = new Feed(messages(h, chunkParts(4, CHUNK)), { holdAfter: 3, after: "end" });
    const run = runSink(deps, feed);
    await feed.held;
    await until(() => at(ceph.log, `write ${name}`) >= 0, "a write");
    feed.release(); // the stream ends without its trailer: the source gave up
    const e = await run.catch((x) => x);
    assert.equal(status(e), Status.UNAVAILABLE);
    assert.match(e.message, /ended before its trailer/);
    assert.ok(at(ceph.log, `snapRollback ${name} backup.p.snap.1`) > at(ceph.log, `write ${name}`));
    assert.ok(img.data.equals(parent), "head back at the parent snapshot");
    assert.equal(poolState(ceph, "backups"), before, "image, snapshots and objects as before");
    assert.equal(deps.journal.entries.size, 0);
  });

  it("a restore to a new volume, cancelled: the new image is removed", async () => {
    const ceph = new FakeCeph("rbd");
    ceph.addImage("rbd", "volume-1", pattern(CHUNK, 1));
    const before = poolState(ceph, "rbd");
    const h = header({
      kind: TransferKind.RESTORE_NEW,
      destination: { pool: "rbd", namespace: "", image: "restored" },
    });
    const feed = new Feed(messages(h, chunkParts(4, CHUNK)), { holdAfter: 2, after: "hang" });
    const ac = new AbortController();
    const run = runSink(sinkDeps(ceph), feed, ac.signal);
    await feed.held;
    ac.abort();
    assert.equal(status(await run.catch((x) => x)), Status.CANCELLED);
    assert.equal(poolState(ceph, "rbd"), before);
  });

  it("a restore over the original that fails after writing: the image stays, the error says to restore again", async () => {
    const ceph = new FakeCeph("rbd");
    const original = ceph.addImage("rbd", "volume-1", pattern(512 * KiB, 1), ["user-snap"]);
    ceph.addImage("rbd", "volume-2", pattern(CHUNK, 2));
    const bystander = poolState(ceph, "rbd", "volume-1");
    const h = header({
      kind: TransferKind.RESTORE_ORIGINAL,
      destination: { pool: "rbd", namespace: "", image: "volume-1" },
    });
    const feed = new Feed(messages(h, chunkParts(4, CHUNK)), { holdAfter: 3, after: "end" });
    const run = runSink(sinkDeps(ceph), feed);
    await feed.held;
    await until(() => at(ceph.log, "write volume-1") >= 0, "a write");
    feed.release();
    const e = await run.catch((x) => x);
    assert.equal(status(e), Status.UNAVAILABLE);
    assert.match(e.message, /the image rbd\/volume-1 was partly overwritten; restore it again/);
    assert.ok(ceph.pool("rbd").images.has("volume-1"), "the original is never removed");
    assert.equal(original.data.length, h.imageSize, "resized to the backup's size");
    assert.deepEqual(
      original.snaps.map((x) => x.name),
      ["user-snap"],
      "its snapshots untouched",
    );
    assert.equal(original.opens, 0);
    assert.equal(poolState(ceph, "rbd", "volume-1"), bystander);
  });

  it("the pool fills up mid-transfer: RESOURCE_EXHAUSTED from the watchdog, and cleanup", async () => {
    const ceph = cluster();
    const before = poolState(ceph, "backups");
    const deps = sinkDeps(ceph, { limits: { writesInFlight: 2, windowBytes: 1 << 20, fullCheckIntervalMs: 1 } });
    const feed = new Feed(messages(header(), chunkParts(4, CHUNK)), { holdAfter: 2, after: "hang" });
    const run = runSink(deps, feed);
    await feed.held;
    ceph.full = true;
    const e = await run.catch((x) => x);
    assert.equal(status(e), Status.RESOURCE_EXHAUSTED);
    assert.match(e.message, /became full/);
    assert.equal(poolState(ceph, "backups"), before);
  });

  it("a same-cluster transfer that fails (a corrupt chunk, a cancel) returns the source's generator, whose cleanup runs before runSink settles", async () => {
    for (const how of ["corrupt", "cancel", "not local"] as const) {
      const ceph = cluster();
      const h = header();
      const msgs = messages(h, chunkParts(4, CHUNK), how === "corrupt" ? { corrupt: 1 } : {});
      const ac = new AbortController();
      let returned = false;
      // As rbdMessages: its finally closes the volume's diff (the native iterator holds the image open).
      const source = (async function* () {
        try {
          for (const [i, m] of msgs.entries()) {
            if (how !== "corrupt" && i === 3) ac.abort();
            yield m;
          }
        } finally {
          returned = true;
        }
      })();
      await assert.rejects(
        runSink(sinkDeps(ceph), source, ac.signal, how === "not local" ? {} : { from: "local" }),
        (e) => status(e) === (how === "corrupt" ? Status.DATA_LOSS : Status.CANCELLED),
      );
      // Another stream (a network call's) is its server's to wind down: runSink leaves it.
      assert.equal(returned, how !== "not local", how);
      if (how === "not local") await source.return(undefined);
    }
  });
});
