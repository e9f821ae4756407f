/** Pure logic of the engine: snapshot names, chain choice, pruning, zero detection, digest, header checks. */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { choosePlan } from "../../../agents/engine/backup-plan";
import { decodeMetadata } from "../../../agents/engine/metadata";
import { snapshotsToPrune } from "../../../agents/engine/snapshots";
import { MIN_ZERO_RUN, segments, TransferDigest, validateHeader } from "../../../agents/transfer/protocol";
import { AppError, Status } from "../../../src/common/errors";
import { backupSnapName, baseImageName, isBaseImage, parseBackupSnap, parseBaseImage } from "../../../src/common/ids";
import { BackupMode, type BackupRequest } from "../../../src/gen/rbdbackup/v1/agent";
import { type TransferHeader, TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";

const id = "0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60";

function status(e: unknown): Status {
  assert.ok(e instanceof AppError, `expected an AppError, got ${String(e)}`);
  return e.status;
}

describe("backup snapshot pattern", () => {
  it("recognises exactly the backup snapshots", () => {
    const name = backupSnapName(id, 1795677936580);
    assert.equal(name, `backup.${id}.snap.1795677936.580000`);
    assert.deepEqual(parseBackupSnap(name), { backupId: id, timestamp: 1795677936.58 });
    // Cinder's own names match too.
    assert.equal(parseBackupSnap(`backup.${id}.snap.1455125498.75`)?.backupId, id);
    for (const not of [
      `wambam.${id}.snap.1`,
      `bbbackup.${id}.snap.1`,
      `backup.${id}.snapshot.1`,
      `backup.${id}.snap.`,
      `backup.${id.toUpperCase()}.snap.1`,
      "my-snapshot",
      "backup",
    ]) {
      assert.equal(parseBackupSnap(not), null, not);
    }
  });

  it("base image names", () => {
    assert.equal(baseImageName("volume-1", id), `volume-1.backup.${id}`);
    assert.equal(parseBaseImage(`volume-1.backup.${id}`, "volume-1"), id);
    assert.equal(parseBaseImage(`volume-10.backup.${id}`, "volume-1"), null);
    assert.equal(parseBaseImage(`volume-1.backup.notauuid`, "volume-1"), null);
    assert.ok(isBaseImage(`a.b.backup.${id}`));
    assert.ok(!isBaseImage("volume-1"));
  });
});

describe("chain choice", () => {
  const req = (mode: BackupMode) => ({ backupId: id, mode }) as BackupRequest;
  const s = (n: string, snapId: number) => ({ name: n, snapId });
  const a = backupSnapName(randomUUID(), 1000);
  const b = backupSnapName(randomUUID(), 2000);

  it("incremental from the newest snapshot present on both sides", () => {
    const p = choosePlan(
      req(BackupMode.BACKUP_MODE_AUTO),
      "vol",
      ["user", a, b],
      [{ baseImage: "vol.backup.x", snapshots: [s(a, 1), s(b, 2)] }],
    );
    assert.deepEqual([p.incremental, p.parent, p.baseImage, p.forcedFullReason], [true, b, "vol.backup.x", ""]);
  });

  it("a source that lost the newest snapshot diffs from an older common one", () => {
    const p = choosePlan(
      req(BackupMode.BACKUP_MODE_AUTO),
      "vol",
      [a],
      [{ baseImage: "vol.backup.x", snapshots: [s(a, 1), s(b, 2)] }],
    );
    assert.equal(p.parent, a);
  });

  it("AUTO without a common snapshot forces a full backup and says why", () => {
    const none = choosePlan(req(BackupMode.BACKUP_MODE_AUTO), "vol", [], []);
    assert.equal(none.incremental, false);
    assert.match(none.forcedFullReason, /no earlier backup/);
    assert.equal(none.baseImage, `vol.backup.${id}`);
    const gone = choosePlan(
      req(BackupMode.BACKUP_MODE_AUTO),
      "vol",
      [],
      [{ baseImage: "vol.backup.x", snapshots: [s(a, 1)] }],
    );
    assert.match(gone.forcedFullReason, /no backup snapshot left/);
  });

  it("INCREMENTAL without a common snapshot is FAILED_PRECONDITION; FULL is full without a reason", () => {
    assert.throws(
      () => choosePlan(req(BackupMode.BACKUP_MODE_INCREMENTAL), "vol", [a], []),
      (e: unknown) => status(e) === Status.FAILED_PRECONDITION,
    );
    const f = choosePlan(
      req(BackupMode.BACKUP_MODE_FULL),
      "vol",
      [a],
      [{ baseImage: "vol.backup.x", snapshots: [s(a, 1)] }],
    );
    assert.deepEqual([f.incremental, f.forcedFullReason], [false, ""]);
  });
});

describe("source snapshot pruning", () => {
  const names = [1, 2, 3].map((i) => backupSnapName(randomUUID(), i * 1000));
  const snaps = [
    { id: 1, name: "user-snap", size: 1, timestamp: 0, protected: false },
    { id: 2, name: names[0] as string, size: 1, timestamp: 0, protected: false },
    { id: 3, name: `bbbackup.${id}.snap.1`, size: 1, timestamp: 0, protected: false },
    { id: 4, name: names[1] as string, size: 1, timestamp: 0, protected: false },
    { id: 5, name: names[2] as string, size: 1, timestamp: 0, protected: false },
  ];

  it("max_snapshots = 1 with 3 backup snapshots removes exactly the two oldest", () => {
    assert.deepEqual(snapshotsToPrune(snaps, names[2] as string, new Set(), 1, new Set()), [names[0], names[1]]);
  });

  it("by default removes only this chain's older snapshots", () => {
    const chain = new Set([names[1] as string, names[2] as string]);
    assert.deepEqual(snapshotsToPrune(snaps, names[2] as string, chain, 0, new Set()), [names[1]]);
  });

  it("never touches kept or protected snapshots, nor names that are not ours", () => {
    const prot = snaps.map((s) => (s.name === names[0] ? { ...s, protected: true } : s));
    assert.deepEqual(snapshotsToPrune(prot, names[2] as string, new Set(), 1, new Set([names[1] as string])), []);
  });
});

describe("zero detection", () => {
  it("cuts long zero runs out of data, keeps offsets absolute", () => {
    const buf = Buffer.alloc(1 << 20, 0);
    buf.fill(7, 0, 5000); // data
    buf.fill(9, 512 * 1024, 512 * 1024 + 10); // data after a long zero run
    const segs = segments(buf, 4 << 20);
    assert.deepEqual(
      segs.map((s) => [s.offset - (4 << 20), s.length, s.zero]),
      [
        [0, 8192, false],
        [8192, 512 * 1024 - 8192, true],
        [512 * 1024, 4096, false],
        [512 * 1024 + 4096, (1 << 20) - 512 * 1024 - 4096, true],
      ],
    );
    // Together they cover the buffer exactly.
    assert.equal(
      segs.reduce((n, s) => n + s.length, 0),
      buf.length,
    );
  });

  it("short zero runs stay inside data; an all-zero buffer is one zero segment", () => {
    const buf = Buffer.alloc(256 * 1024, 1);
    buf.fill(0, 4096, 4096 + MIN_ZERO_RUN - 4096);
    assert.deepEqual(segments(buf, 0), [{ offset: 0, length: buf.length, zero: false }]);
    assert.deepEqual(segments(Buffer.alloc(3000), 10), [{ offset: 10, length: 3000, zero: true }]);
  });
});

describe("transfer digest and header", () => {
  it("digest depends on order and content", () => {
    const d1 = new TransferDigest();
    d1.chunk(0, 10, 123);
    d1.zero(10, 5);
    const d2 = new TransferDigest();
    d2.zero(10, 5);
    d2.chunk(0, 10, 123);
    assert.notDeepEqual(d1.digest(), d2.digest());
  });

  const snap = backupSnapName(id);
  const good: TransferHeader = {
    transferId: randomUUID(),
    jobId: "",
    kind: TransferKind.BACKUP_FULL,
    destination: { pool: "backups", namespace: "", image: `v.backup.${id}` },
    fromSnapshot: "",
    toSnapshot: snap,
    imageSize: 1 << 20,
    features: 0,
    order: 22,
    stripeUnit: 0,
    stripeCount: 0,
    imageMeta: {},
    backupId: id,
    metadataJson: Buffer.from(
      JSON.stringify({ backup_id: id, chain: { base_image: `v.backup.${id}`, snapshot: snap } }),
    ),
    expectedFsid: "",
    chunkSize: 1 << 20,
    resumeOffset: 0,
    resumePrefixDigest: new Uint8Array(0),
    resumable: false,
    allowOpen: false,
    compression: 0,
  };

  it("accepts a good header and rejects bad fields with INVALID_ARGUMENT", () => {
    validateHeader(good);
    // Image-meta keys are not names: "/" and "@" are theirs to use (Ceph-CSI sets such keys).
    validateHeader({ ...good, imageMeta: { "rbd.csi.ceph.com/thick-provisioned": "true", "a@b": "x" } });
    const bad: Array<Partial<TransferHeader>> = [
      { transferId: "x" },
      { kind: 9 as TransferKind },
      { imageSize: 0 },
      { imageSize: 2 ** 60 },
      { chunkSize: 5 << 20 },
      { destination: { pool: "", namespace: "", image: "x" } },
      { destination: { pool: "p", namespace: "", image: "a/b" } },
      { toSnapshot: "x".repeat(4097) },
      // A backup's snapshot must name that backup: not another's, nor a name that is not a backup snapshot.
      { toSnapshot: backupSnapName(randomUUID()) },
      { toSnapshot: "user-snap" },
      { kind: TransferKind.BACKUP_INCREMENTAL, fromSnapshot: "" },
      { kind: TransferKind.RESTORE_NEW },
      { order: 40 },
      { imageMeta: { "": "x" } },
      { imageMeta: { "a\0b": "x" } },
      { imageMeta: { k: "a\0b" } },
      { imageMeta: { ["k".repeat(4097)]: "x" } },
      // A backup's stream carries its metadata object (created exclusively at the commit), naming it.
      { metadataJson: Buffer.alloc(0) },
      { metadataJson: Buffer.from(JSON.stringify({ backup_id: randomUUID() })) },
      { jobId: "a\0b" },
      { jobId: "j/1@x" },
      { jobId: "j".repeat(129) },
    ];
    for (const b of bad) {
      assert.throws(
        () => validateHeader({ ...good, ...b }),
        (e: unknown) => status(e) === Status.INVALID_ARGUMENT,
        JSON.stringify(b),
      );
    }
  });
});

describe("metadata versions", () => {
  it("an unknown version fails clearly", () => {
    assert.throws(
      () => decodeMetadata(JSON.stringify({ version: 99 }), id),
      (e: unknown) => status(e) === Status.FAILED_PRECONDITION && /incompatible version 99/.test((e as Error).message),
    );
    assert.throws(() => decodeMetadata("{not json", id), /not valid JSON/);
  });
});

describe("fast chunk encoding", () => {
  it("is byte-identical to the generated encoder and decodes back", async () => {
    const { encodeChunkMessage } = await import("../../../agents/transfer/wire");
    const { TransferMessage } = await import("../../../src/gen/rbdbackup/v1/transfer");
    for (const [offset, len, crc] of [
      [0, 0, 0],
      [1, 1, 1],
      [2 ** 40 + 3, 1 << 20, 0xffffffff],
      [4096, 300, 0x7f],
    ] as const) {
      const data = Buffer.alloc(len, 0xab);
      const msg = {
        body: { $case: "chunk" as const, value: { offset, data, crc32: crc, compression: 0, rawLength: 0 } },
      };
      const generic = Buffer.from(TransferMessage.encode(msg).finish());
      const fast = encodeChunkMessage(offset, data, crc);
      assert.deepEqual(fast, generic, `offset ${offset} len ${len} crc ${crc}`);
      const back = TransferMessage.decode(fast);
      assert.equal(back.body?.$case, "chunk");
      if (back.body?.$case === "chunk") {
        assert.equal(back.body.value.offset, offset);
        assert.equal(back.body.value.crc32, crc);
        assert.equal(Buffer.compare(Buffer.from(back.body.value.data), data), 0);
      }
    }
  });
});

describe("zero-copy chunk frames", () => {
  it("the read buffer becomes a message the generated decoder reads back exactly", async () => {
    const { FramePool, finishChunkFrame, grpcFramed } = await import("../../../agents/transfer/wire");
    const { TransferMessage } = await import("../../../src/gen/rbdbackup/v1/transfer");
    for (const [offset, len, crc] of [
      [0, 1, 0],
      [1, 127, 1],
      [128, 128, 0x7f],
      [2 ** 40 + 3, 1 << 20, 0xffffffff],
      [2 ** 52, 4 << 20, 0x80000000],
    ] as const) {
      const f = new FramePool().acquire(len, len);
      f.data.fill(0xcd);
      const bytes = finishChunkFrame(f, offset, crc);
      const back = TransferMessage.decode(bytes);
      assert.equal(back.body?.$case, "chunk", `offset ${offset} len ${len}`);
      if (back.body?.$case === "chunk") {
        assert.equal(back.body.value.offset, offset);
        assert.equal(back.body.value.crc32, crc);
        assert.equal(back.body.value.data.length, len);
        assert.equal(Buffer.compare(Buffer.from(back.body.value.data), f.data), 0);
      }
      // The gRPC message prefix is written in place, in front of the same bytes.
      const framed = grpcFramed(f);
      assert.equal(framed[0], 0);
      assert.equal(framed.readUInt32BE(1), bytes.length);
      assert.equal(framed.buffer, bytes.buffer);
      assert.equal(Buffer.compare(framed.subarray(5), bytes), 0);
    }
  });

  it("a compressed chunk's frame carries compression and raw_length after the crc; a frame without room for them is refused", async () => {
    const { COMPRESSED_TAIL, FramePool, finishChunkFrame, frameOfLength } = await import(
      "../../../agents/transfer/wire"
    );
    const { TransferMessage } = await import("../../../src/gen/rbdbackup/v1/transfer");
    for (const [offset, n, raw, compression] of [
      [0, 1, 4096, 1],
      [4 << 20, 70_000, 4 << 20, 2],
      [2 ** 45, (4 << 20) - COMPRESSED_TAIL, 4 << 20, 1],
    ] as const) {
      const f = frameOfLength(new FramePool().acquire(n, 4 << 20), n);
      f.data.fill(0x5a);
      const back = TransferMessage.decode(finishChunkFrame(f, offset, 0xdeadbeef, compression, raw));
      assert.ok(back.body?.$case === "chunk", `offset ${offset} n ${n}`);
      assert.equal(back.body.value.offset, offset);
      assert.equal(back.body.value.crc32, 0xdeadbeef);
      assert.equal(back.body.value.compression, compression);
      assert.equal(back.body.value.rawLength, raw);
      assert.equal(Buffer.compare(Buffer.from(back.body.value.data), f.data), 0);
    }
    const full = new FramePool().acquire(1 << 20, 1 << 20);
    assert.throws(() => finishChunkFrame(full, 0, 1, 1, 1 << 21), RangeError);
    assert.throws(() => frameOfLength(full, (1 << 20) + 1), RangeError);
  });

  it("a pool hands released frames out again, bounded, and any smaller length fits", async () => {
    const { FramePool, finishChunkFrame } = await import("../../../agents/transfer/wire");
    const pool = new FramePool(2);
    const a = pool.acquire(1 << 20, 1 << 20);
    const b = pool.acquire(100, 1 << 20);
    const c = pool.acquire(1 << 20, 1 << 20);
    assert.equal(pool.allocated, 3);
    for (const f of [a, b, c]) pool.release(f);
    assert.equal(pool.idle, 2, "at most maxIdle frames are kept");
    const d = pool.acquire(4096, 1 << 20);
    assert.equal(pool.reused, 1);
    assert.equal(d.data.length, 4096);
    assert.ok(d.buffer === a.buffer || d.buffer === b.buffer);
    d.data.fill(7);
    const bytes = finishChunkFrame(d, 12345, 99);
    const { TransferMessage } = await import("../../../src/gen/rbdbackup/v1/transfer");
    const back = TransferMessage.decode(bytes);
    assert.ok(back.body?.$case === "chunk" && back.body.value.data.length === 4096 && back.body.value.offset === 12345);
    // Larger than the pool's capacity: a frame of its own, never mixed with the pooled ones.
    const big = pool.acquire(2 << 20, 1 << 20);
    assert.equal(big.capacity, 2 << 20);
  });
});

describe("cleanup errors are never swallowed", () => {
  it("the reported error names the primary failure and every cleanup failure", async () => {
    const { withCleanupErrors, dataLoss, toAppError } = await import("../../../src/common/errors");
    const e = withCleanupErrors(dataLoss("checksum mismatch"), [
      new Error("x"),
      toAppError(new Error("y"), "removing image z"),
    ]);
    assert.equal(status(e), Status.DATA_LOSS);
    assert.match((e as Error).message, /checksum mismatch; cleanup also failed: .*removing image z/);
    assert.equal(withCleanupErrors(e, []), e);
  });
});
