/**
 * runSink with FAILBACK streams, against an in-memory cluster: with a from-snapshot the original volume
 * is rolled back to it before any write and grown or cut to the new size, no snapshot is made or
 * removed; an original that is gone or lacks the snapshot is refused (FAILED_PRECONDITION naming the
 * reason the source falls back on) with nothing written or created; without a from-snapshot a missing
 * original is re-created (a full copy).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { NO_COMMON_SNAPSHOT, RefusalReason, reasonOf } from "../../../agents/transfer/protocol";
import { runSink } from "../../../agents/transfer/sink";
import { AppError, Status } from "../../../src/common/errors";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { FakeCeph, poolState } from "./fakes/fake-ceph";
import { sinkDeps } from "./fakes/sink-deps";
import { Feed, header, KiB, messages, pattern } from "./fakes/stream";

const CHUNK = 64 * KiB;

function failbackHeader(fromSnapshot: boolean, imageSize = 384 * KiB) {
  const backupId = randomUUID();
  return header({
    kind: TransferKind.FAILBACK,
    destination: { pool: "rbd", namespace: "", image: "volume-1" },
    backupId,
    fromSnapshot: fromSnapshot ? `backup.${backupId}.snap.1` : "",
    imageSize,
  });
}

/** One chunk at 0, then zeros to the end: a stream over an existing volume covers every byte. */
const firstChunk = (h: { imageSize: number }, data: Buffer) => [
  { offset: 0, data },
  { offset: data.length, zero: h.imageSize - data.length },
];

function status(e: unknown): Status {
  assert.ok(e instanceof AppError, `an AppError, got ${String(e)}`);
  return e.status;
}

describe("runSink: FAILBACK", () => {
  it("with a from-snapshot: rolled back first, resized, only the changes written, snapshots untouched", async () => {
    const ceph = new FakeCeph("rbd");
    const h = failbackHeader(true);
    const atSnapshot = pattern(256 * KiB, 1);
    const v = ceph.addImage("rbd", "volume-1", atSnapshot, ["user-snap", h.fromSnapshot]);
    v.data.fill(9, 0, 2 * CHUNK); // written after the backup (lost at failover)
    const s = await runSink(sinkDeps(ceph), new Feed(messages(h, [{ offset: 5 * CHUNK, data: pattern(CHUNK, 4) }])));
    const rollback = ceph.log.indexOf(`snapRollback volume-1 ${h.fromSnapshot}`);
    const write = ceph.log.findIndex((l) => l.startsWith("write volume-1"));
    assert.ok(rollback >= 0 && rollback < write, `rolled back before writing: ${ceph.log.join(", ")}`);
    const want = Buffer.alloc(h.imageSize);
    atSnapshot.copy(want);
    pattern(CHUNK, 4).copy(want, 5 * CHUNK);
    assert.ok(v.data.equals(want), "V = V at the snapshot, grown, plus the changes");
    // What V held since the snapshot (what the rollback drops) is kept first, and said.
    const kept = `rbdbackup-before-failback.${h.transferId}`;
    assert.deepEqual(
      v.snaps.map((x) => x.name),
      ["user-snap", h.fromSnapshot, kept],
    );
    const before = Buffer.from(atSnapshot);
    before.fill(9, 0, 2 * CHUNK);
    assert.ok(v.snaps[2]?.data.equals(before), "the kept snapshot holds V as it was before the failback");
    assert.ok(ceph.log.indexOf(`snapCreate volume-1 ${kept}`) < rollback, "kept before the rollback");
    assert.match(s.warnings.join("\n"), new RegExp(`kept in its snapshot ${kept}; remove it once sure`));
    assert.equal(s.imageCreated, false);
    assert.equal(s.snapshotCreated, "");
  });

  it("an original unchanged since the snapshot: nothing to keep, no snapshot; a full copy over a volume that holds data keeps it; a retry of the job keeps nothing twice", async () => {
    const ceph = new FakeCeph("rbd");
    const h = failbackHeader(true);
    const v = ceph.addImage("rbd", "volume-1", pattern(256 * KiB, 1), [h.fromSnapshot]);
    v.features = 1n | 4n | 8n | 16n; // fast-diff: the comparison is cheap, and says nothing changed
    const s = await runSink(sinkDeps(ceph), new Feed(messages(h, [{ offset: 0, data: pattern(CHUNK, 4) }])));
    assert.deepEqual(
      v.snaps.map((x) => x.name),
      [h.fromSnapshot],
    );
    assert.deepEqual(s.warnings, []);
    // Without fast-diff the comparison would read every object's snapshot set: kept without asking.
    const h2 = { ...failbackHeader(true), fromSnapshot: h.fromSnapshot, backupId: h.backupId };
    v.features = 0n;
    await runSink(sinkDeps(ceph), new Feed(messages(h2, [{ offset: 0, data: pattern(CHUNK, 4) }])));
    assert.ok(
      v.snaps.some((x) => x.name === `rbdbackup-before-failback.${h2.transferId}`),
      "kept, no fast-diff",
    );
    v.snaps = v.snaps.filter((x) => x.name === h.fromSnapshot);

    const full = failbackHeader(false, 256 * KiB);
    const old = Buffer.from(v.data);
    const kept = `rbdbackup-before-failback.${full.transferId}`;
    await runSink(sinkDeps(ceph), new Feed(messages(full, firstChunk(full, pattern(CHUNK, 5)))));
    assert.deepEqual(
      v.snaps.map((x) => x.name),
      [h.fromSnapshot, kept],
    );
    assert.ok(v.snaps[1]?.data.equals(old), "the full copy's overwritten data kept");
    // The same job again (its retry): V changed by the first attempt, not kept a second time — but said
    // again (a job keeps its last attempt's warnings).
    const again = await runSink(sinkDeps(ceph), new Feed(messages(full, firstChunk(full, pattern(CHUNK, 6)))));
    assert.equal(v.snaps.length, 2);
    assert.match(again.warnings.join("\n"), new RegExp(`kept in its snapshot ${kept}`));
  });

  it("a volume another client has open (a VM, rbd map) is refused before anything is changed: FAILBACK rollback, full copy, RESTORE_ORIGINAL", async () => {
    for (const [what, h] of [
      ["rollback", failbackHeader(true)],
      ["full copy", failbackHeader(false)],
      [
        "restore over the original",
        header({
          kind: TransferKind.RESTORE_ORIGINAL,
          destination: { pool: "rbd", namespace: "", image: "volume-1" },
          imageSize: 128 * KiB,
        }),
      ],
    ] as const) {
      const ceph = new FakeCeph("rbd");
      const v = ceph.addImage("rbd", "volume-1", pattern(256 * KiB, 1), ["user-snap", h.fromSnapshot].filter(Boolean));
      v.data.fill(9, 0, CHUNK); // what the VM wrote since
      v.watchers = [{ addr: "192.168.7.5:0/2834712", id: 24107 }];
      const before = poolState(ceph, "rbd");
      const e = await runSink(sinkDeps(ceph), new Feed(messages(h, firstChunk(h, pattern(CHUNK, 2))))).catch((x) => x);
      assert.equal(status(e), Status.FAILED_PRECONDITION, what);
      assert.match(
        e.message,
        /image rbd\/volume-1 is in use \(watched by client\.24107 at 192\.168\.7\.5:0\/2834712\)/,
        what,
      );
      assert.equal(poolState(ceph, "rbd"), before, `${what}: nothing rolled back, resized or written`);
      assert.equal(v.opens, 0, `${what}: closed`);
      // Once the other client has let go, the same stream goes through.
      v.watchers = [];
      await runSink(sinkDeps(ceph), new Feed(messages(h, firstChunk(h, pattern(CHUNK, 2)))));
      assert.ok(v.data.subarray(0, CHUNK).equals(pattern(CHUNK, 2)), `${what}: written once free`);
    }
    // A restore over the original that says it may (allow_open: cinder-backup holds the volume itself).
    const ceph = new FakeCeph("rbd");
    const v = ceph.addImage("rbd", "volume-1", pattern(256 * KiB, 1));
    v.watchers = [{ addr: "10.0.0.7:0/77", id: 5001 }];
    const h = header({
      kind: TransferKind.RESTORE_ORIGINAL,
      destination: { pool: "rbd", namespace: "", image: "volume-1" },
      imageSize: 128 * KiB,
      allowOpen: true,
    });
    await runSink(sinkDeps(ceph), new Feed(messages(h, firstChunk(h, pattern(CHUNK, 3)))));
    assert.ok(v.data.subarray(0, CHUNK).equals(pattern(CHUNK, 3)), "written while watched, as asked");
  });

  it("a stream cut short right after the rollback (no chunk written yet): the error says the volume was changed", async () => {
    const ceph = new FakeCeph("rbd");
    const h = failbackHeader(true);
    const v = ceph.addImage("rbd", "volume-1", pattern(256 * KiB, 1), [h.fromSnapshot]);
    v.data.fill(9, 0, CHUNK); // written since the snapshot: the rollback drops it
    const feed = new Feed(messages(h, [{ offset: 0, data: pattern(CHUNK, 2) }]), { holdAfter: 1, after: "end" });
    const run = runSink(sinkDeps(ceph), feed);
    await feed.held;
    feed.release();
    const e = await run.catch((x) => x);
    assert.equal(status(e), Status.UNAVAILABLE);
    assert.ok(ceph.log.includes(`snapRollback volume-1 ${h.fromSnapshot}`), "rolled back");
    assert.ok(!ceph.log.some((l) => l.startsWith("write volume-1")), "nothing written");
    assert.match(e.message, /the image rbd\/volume-1 was partly overwritten; fail back again/);
  });

  it("a failback that fails partway names its safety snapshot in the error; a new failback names the earlier one's too", async () => {
    const ceph = new FakeCeph("rbd");
    const h = failbackHeader(true);
    const atSnapshot = pattern(256 * KiB, 1);
    const v = ceph.addImage("rbd", "volume-1", atSnapshot, [h.fromSnapshot]);
    v.data.fill(9, 0, CHUNK); // written since the snapshot: what the first failback keeps
    const kept1 = `rbdbackup-before-failback.${h.transferId}`;
    const chunks = [0, 1, 2].map((i) => ({ offset: i * CHUNK, data: pattern(CHUNK, 10 + i) }));
    const e = await runSink(sinkDeps(ceph), new Feed(messages(h, chunks, { corrupt: 2 }))).catch((x) => x);
    assert.equal(status(e), Status.DATA_LOSS);
    assert.match(e.message, /partly overwritten; fail back again\) — /);
    assert.ok(e.message.includes(`kept in its snapshot ${kept1}; remove it once sure`), e.message);
    // A new failback (another job) of the volume now partly written: it keeps that state in its own
    // snapshot, and names the first one's, which holds what was there before either.
    const h2 = { ...failbackHeader(true), fromSnapshot: h.fromSnapshot, backupId: h.backupId };
    const kept2 = `rbdbackup-before-failback.${h2.transferId}`;
    const s = await runSink(sinkDeps(ceph), new Feed(messages(h2, [{ offset: 0, data: pattern(CHUNK, 20) }])));
    assert.deepEqual(
      v.snaps.map((x) => x.name),
      [h.fromSnapshot, kept1, kept2],
    );
    const warnings = s.warnings.join("\n");
    assert.ok(warnings.includes(`kept in its snapshot ${kept2}`), warnings);
    assert.ok(warnings.includes(`also carries ${kept1}: kept by earlier failbacks before they wrote`), warnings);
    const before = Buffer.from(atSnapshot);
    before.fill(9, 0, CHUNK);
    assert.ok(v.snaps[1]?.data.equals(before), "the first one's snapshot: the volume before any failback");
  });

  it("a stream over an existing volume that does not cover every byte: DATA_LOSS before the commit (its old data would stay under a restore said complete)", async () => {
    for (const h of [
      failbackHeader(false, 256 * KiB),
      header({
        kind: TransferKind.RESTORE_ORIGINAL,
        destination: { pool: "rbd", namespace: "", image: "volume-1" },
        imageSize: 256 * KiB,
      }),
    ]) {
      const ceph = new FakeCeph("rbd");
      ceph.addImage("rbd", "volume-1", pattern(256 * KiB, 1));
      const gap = [
        { offset: 0, data: pattern(CHUNK, 2) },
        { offset: 2 * CHUNK, zero: 2 * CHUNK }, // [CHUNK, 2 CHUNK) skipped
      ];
      const e = await runSink(sinkDeps(ceph), new Feed(messages(h, gap))).catch((x) => x);
      assert.equal(status(e), Status.DATA_LOSS, TransferKind[h.kind]);
      assert.match(e.message, /covers 65536 bytes of data and 131072 of zeros, not the image's 262144/);
      assert.ok(!ceph.log.some((l) => l.startsWith("metaRemove")), "not committed");
    }
  });

  it("the original lacks the snapshot, or is gone: FAILED_PRECONDITION, nothing written or created", async () => {
    const ceph = new FakeCeph("rbd");
    ceph.addImage("rbd", "volume-1", pattern(256 * KiB, 1), ["user-snap"]);
    const before = poolState(ceph, "rbd");
    const lacks = failbackHeader(true);
    const e1 = await runSink(sinkDeps(ceph), new Feed(messages(lacks, [{ offset: 0, data: pattern(CHUNK, 2) }]))).catch(
      (x) => x,
    );
    assert.equal(status(e1), Status.FAILED_PRECONDITION);
    assert.match(e1.message, new RegExp(`${NO_COMMON_SNAPSHOT}: rbd/volume-1 has no snapshot ${lacks.fromSnapshot}`));
    assert.equal(reasonOf(e1), RefusalReason.NO_COMMON_SNAPSHOT, "the typed reason the source acts on");
    assert.equal(poolState(ceph, "rbd"), before, "nothing written");

    ceph.pool("rbd").images.delete("volume-1");
    const gone = failbackHeader(true);
    const e2 = await runSink(sinkDeps(ceph), new Feed(messages(gone, [{ offset: 0, data: pattern(CHUNK, 2) }]))).catch(
      (x) => x,
    );
    assert.equal(status(e2), Status.FAILED_PRECONDITION);
    assert.match(e2.message, new RegExp(`${NO_COMMON_SNAPSHOT}: rbd/volume-1 does not exist`));
    assert.equal(reasonOf(e2), RefusalReason.NO_COMMON_SNAPSHOT);
    assert.equal(ceph.pool("rbd").images.has("volume-1"), false, "nothing created");
  });

  it("without a from-snapshot, the original gone: re-created by the full copy", async () => {
    const ceph = new FakeCeph("rbd");
    const h = failbackHeader(false, 128 * KiB);
    const s = await runSink(
      sinkDeps(ceph),
      new Feed(
        messages(h, [
          { offset: 0, data: pattern(CHUNK, 3) },
          { offset: CHUNK, zero: CHUNK },
        ]),
      ),
    );
    const v = ceph.pool("rbd").images.get("volume-1");
    assert.ok(v, "re-created");
    const want = Buffer.alloc(h.imageSize);
    pattern(CHUNK, 3).copy(want);
    assert.ok(v.data.equals(want));
    assert.equal(s.imageCreated, true);
    assert.equal(v.meta.size, 0, "the incomplete marker is gone");
  });
});
