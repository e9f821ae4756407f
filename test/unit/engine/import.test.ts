/**
 * importBackup (agents/engine/import.ts) into this agent's own sink over an in-memory cluster: an
 * rbd-diff stream becomes a base image with its snapshot and backup.<id>.meta (size from the stream);
 * an incremental one is applied onto the parent's base image; a truncated or corrupted stream, or one
 * whose from-snapshot does not fit the request, is INVALID_ARGUMENT naming the offset and leaves the
 * pool exactly as it was (no image, no snapshot, no metadata object).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { EngineContext } from "../../../agents/engine/context";
import { importBackup } from "../../../agents/engine/import";
import { noMeter } from "../../../agents/transfer/meter";
import { RbdDiffWriter } from "../../../agents/transfer/rbd-diff/writer";
import { runSink } from "../../../agents/transfer/sink";
import { AppError, Status, statusOf } from "../../../src/common/errors";
import { metaObjectName } from "../../../src/common/ids";
import type { ImportRequest } from "../../../src/gen/rbdbackup/v1/agent";
import { crc32c } from "../transfer/fakes/crc32c";
import { FakeCeph, poolState } from "../transfer/fakes/fake-ceph";
import { quietLogger, sinkDeps } from "../transfer/fakes/sink-deps";

const ID = "0b9a3c52-52b2-4f0e-a1f4-3a0d1c2e9f10";
const PARENT_ID = "7f1e2d3c-4b5a-4968-8776-655443322110";
const SNAP = `backup.${ID}.snap.1764640000.5`;
const PARENT_SNAP = `backup.${PARENT_ID}.snap.1764630000.1`;
const SIZE = 1 << 20;

function context(ceph: FakeCeph): EngineContext {
  const deps = sinkDeps(ceph);
  return {
    cluster: ceph as never, // the parent's backup.<id>.meta is read through it
    clusterName: "site-b",
    fsid: deps.fsid,
    log: quietLogger(),
    defaultBackupPool: "backups",
    source: { chunkSize: 64 * 1024, readsInFlight: 4 },
    meter: noMeter,
    target: () => ({
      label: "this agent",
      transfer: (messages, signal) => runSink(deps, messages, signal),
      listChains: async () => ({ chains: [], clusterFsid: deps.fsid }),
      resumePoint: async () => ({
        offset: 0,
        prefixDigest: Buffer.alloc(0),
        dataChunks: 0,
        dataBytes: 0,
        zeroRanges: 0,
        zeroBytes: 0,
        reason: "not resumable",
      }),
    }),
  };
}

function request(over: Partial<ImportRequest> = {}): ImportRequest {
  const baseImage = over.baseImage ?? `vol.backup.${ID}`;
  const meta = {
    version: 1,
    backup_id: ID,
    created_at: "2026-12-02T00:00:00Z",
    volume: { id: "vol-1", metadata: { k: "v" } },
    source: { kind: "rbd", cluster_fsid: "", pool: "volumes", namespace: "", image: "vol", snapshot: SNAP },
    image: { size: 0, features: "0", order: 22, stripe_unit: 0, stripe_count: 0, image_meta: {} },
    // As the coordinator writes it (interchange-jobs.ts importMetadata): the chain the import writes.
    chain: { base_image: baseImage, incremental: false, parent_snapshot: null, snapshot: SNAP },
  };
  return {
    backupId: ID,
    pool: "backups",
    namespace: "",
    baseImage,
    fromSnapshot: "",
    toSnapshot: SNAP,
    metadataJson: Buffer.from(JSON.stringify(meta)),
    jobId: "job-1",
    format: 0,
    parentImported: false,
    ...over,
  };
}

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

/** A stream and the image it describes (applied onto `base`). */
function stream(version: 1 | 2, base: Buffer, from?: string) {
  const image = Buffer.from(base);
  const w = new RbdDiffWriter(version);
  const parts = [...w.begin({ ...(from ? { fromSnapshot: from } : {}), toSnapshot: "snap2", size: SIZE })];
  const data = (off: number, b: Buffer) => {
    parts.push(...w.data(off, b));
    b.copy(image, off);
  };
  data(4096, pattern(200_000, version));
  parts.push(...w.zero(300_000, 100_000));
  image.fill(0, 300_000, 400_000);
  data(500_000, Buffer.concat([pattern(70_000, 3), Buffer.alloc(200_000), pattern(1000, 4)]));
  parts.push(...w.end());
  return { bytes: Buffer.concat(parts), image };
}

async function* pieces(b: Buffer, n = 10_000): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += n) yield b.subarray(i, i + n);
}

async function refused(p: Promise<unknown>, text: RegExp) {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof AppError, String(e));
    assert.equal(e.status, Status.INVALID_ARGUMENT, e.message);
    assert.match(e.message, text);
    return true;
  });
}

/** importBackup of `bytes` (in pieces of `n`) with the request `over` changes, into `ceph`'s sink. */
const imp = (ceph: FakeCeph, over: Partial<ImportRequest>, bytes: Buffer, n?: number) =>
  importBackup(context(ceph), request(over), pieces(bytes, n), new AbortController().signal, undefined, {
    checksum: crc32c,
  });

describe("importBackup", () => {
  for (const version of [1, 2] as const) {
    it(`v${version}: a full stream becomes a new base image, its snapshot and backup.<id>.meta with the stream's size`, async () => {
      const ceph = new FakeCeph("backups");
      const s = stream(version, Buffer.alloc(SIZE));
      const r = await imp(ceph, {}, s.bytes);
      const img = ceph.pool("backups").images.get(`vol.backup.${ID}`);
      assert.ok(img, "the base image exists");
      assert.ok(img.data.equals(s.image), "its head is the stream's image");
      assert.deepEqual(
        img.snaps.map((x) => x.name),
        [SNAP],
      );
      assert.ok((img.snaps[0] as { data: Buffer }).data.equals(s.image), "the snapshot holds the data");
      const meta = JSON.parse((ceph.pool("backups").objects.get(metaObjectName(ID)) as Buffer).toString());
      assert.equal(meta.image.size, SIZE);
      assert.equal(meta.volume.id, "vol-1");
      assert.deepEqual(meta.import, { stream_from_snapshot: null, stream_to_snapshot: "snap2" });
      assert.equal(r.imageSize, SIZE);
      assert.equal(r.incremental, false);
      assert.equal(r.snapshot, SNAP);
      // All-zero runs of a 'w' (≥ 64 KiB within a piece) go as zero ranges, never written into the new image.
      assert.ok(r.dataBytesSent >= 271_000 && r.dataBytesSent < 471_000, `data bytes ${r.dataBytesSent}`);
      assert.ok(r.warnings.some((w) => w.includes('"snap2"')));
    });
  }

  for (const [what, from, parentImport] of [
    ["its 'f' names the parent's snapshot", PARENT_SNAP, undefined],
    [
      "its 'f' names the to-snapshot of the stream the parent was imported from",
      "what-ceph-called-it",
      { stream_from_snapshot: null, stream_to_snapshot: "what-ceph-called-it" },
    ],
  ] as const) {
    it(`an incremental stream ('f') is applied onto the parent's base image and snapshotted: ${what}`, async () => {
      const ceph = new FakeCeph("backups");
      const base = pattern(SIZE, 9);
      const baseImage = `vol.backup.${PARENT_ID}`;
      ceph.addImage("backups", baseImage, base, [PARENT_SNAP]);
      if (parentImport) parentMeta(ceph, parentImport);
      const s = stream(1, base, from);
      const r = await imp(ceph, { baseImage, fromSnapshot: PARENT_SNAP }, s.bytes, 4099);
      const img = ceph.pool("backups").images.get(baseImage);
      assert.ok(img);
      assert.ok(img.data.equals(s.image), "the head is the parent plus the diff");
      assert.deepEqual(
        img.snaps.map((x) => x.name),
        [PARENT_SNAP, SNAP],
      );
      assert.ok((img.snaps[0] as { data: Buffer }).data.equals(base), "the parent's snapshot is untouched");
      assert.equal(r.incremental, true);
      assert.equal(r.parentSnapshot, PARENT_SNAP);
    });
  }

  it("a declared format is the only one taken: the other one refused at byte 0; a format neither 0, 1 nor 2 refused", async () => {
    const ceph = new FakeCeph("backups");
    const before = poolState(ceph, "backups");
    const v2 = stream(2, Buffer.alloc(SIZE));
    await refused(imp(ceph, { format: 1 }, v2.bytes), /byte offset 0: the stream is format v2, but v1 was asked for/);
    await refused(imp(ceph, { format: 3 }, v2.bytes), /format 3 is neither 1/);
    assert.equal(poolState(ceph, "backups"), before);
    await imp(ceph, { format: 2 }, v2.bytes);
    assert.ok(ceph.pool("backups").images.has(`vol.backup.${ID}`), "the declared format imports");
  });
});

/** The parent's backup.<id>.meta, with the `import` section an import leaves. */
function parentMeta(
  ceph: FakeCeph,
  imported: { stream_from_snapshot: string | null; stream_to_snapshot: string | null },
) {
  const meta = JSON.parse(Buffer.from(request().metadataJson).toString());
  ceph
    .pool("backups")
    .objects.set(
      metaObjectName(PARENT_ID),
      Buffer.from(JSON.stringify({ ...meta, backup_id: PARENT_ID, import: imported })),
    );
}

describe("importBackup of an incremental onto the wrong parent: INVALID_ARGUMENT naming the 'f' record, nothing changed", () => {
  for (const [what, parentImport] of [
    ["a parent made by a backup (its own snapshot name only)", undefined],
    [
      "a parent imported from a stream with another to-snapshot",
      { stream_from_snapshot: null, stream_to_snapshot: "s1" },
    ],
    ["a parent imported from a stream without a to-snapshot", { stream_from_snapshot: null, stream_to_snapshot: null }],
  ] as const) {
    it(what, async () => {
      const ceph = new FakeCeph("backups");
      const baseImage = `vol.backup.${PARENT_ID}`;
      const base = pattern(SIZE, 5);
      ceph.addImage("backups", baseImage, base, [PARENT_SNAP]);
      if (parentImport) parentMeta(ceph, parentImport);
      const before = poolState(ceph, "backups");
      const s = stream(1, base, "s0");
      await refused(
        imp(ceph, { baseImage, fromSnapshot: PARENT_SNAP }, s.bytes),
        /byte offset 12: the stream is a diff from snapshot "s0" \('f' record\), but the parent backup's snapshot is/,
      );
      assert.equal(poolState(ceph, "backups"), before, "the parent's image, snapshots and objects as they were");
    });
  }
});

describe("importBackup onto a parent imported before the stream's names were kept", () => {
  it("any 'f' applies, with a warning, when the coordinator says the parent was imported; not otherwise", async () => {
    const ceph = new FakeCeph("backups");
    const base = pattern(SIZE, 5);
    const baseImage = `vol.backup.${PARENT_ID}`;
    ceph.addImage("backups", baseImage, base, [PARENT_SNAP]);
    // Its backup.<id>.meta has no `import` section (made before it existed).
    const legacy = JSON.parse(Buffer.from(request().metadataJson).toString());
    ceph
      .pool("backups")
      .objects.set(metaObjectName(PARENT_ID), Buffer.from(JSON.stringify({ ...legacy, backup_id: PARENT_ID })));
    const s = stream(1, base, "s1");
    await refused(imp(ceph, { baseImage, fromSnapshot: PARENT_SNAP }, s.bytes), /but the parent backup's snapshot is/);
    const r = await imp(ceph, { baseImage, fromSnapshot: PARENT_SNAP, parentImported: true }, s.bytes);
    assert.match(r.warnings.join("\n"), /from-snapshot "s1" was not checked against the parent/);
    assert.ok(ceph.pool("backups").images.get(baseImage)?.data.equals(s.image));
  });
});

describe("importBackup onto an imported parent whose metadata object is gone", () => {
  it("is refused FAILED_PRECONDITION, nothing changed: the stream's 'f' cannot be checked", async () => {
    const ceph = new FakeCeph("backups");
    const base = pattern(SIZE, 5);
    const baseImage = `vol.backup.${PARENT_ID}`;
    ceph.addImage("backups", baseImage, base, [PARENT_SNAP]);
    const before = poolState(ceph, "backups");
    const s = stream(1, base, "unrelated-old");
    const e = await imp(ceph, { baseImage, fromSnapshot: PARENT_SNAP, parentImported: true }, s.bytes).then(
      () => assert.fail("applied"),
      (x: unknown) => x,
    );
    assert.equal(statusOf(e), Status.FAILED_PRECONDITION, String(e));
    assert.match(String(e), new RegExp(`metadata object \\(backup\\.${PARENT_ID}\\.meta\\) is gone`));
    assert.equal(poolState(ceph, "backups"), before, "nothing changed");
  });
});

describe("importBackup: names from the stream in messages", () => {
  it("a snapshot name with control characters is quoted with them escaped (a terminal reads the message)", async () => {
    const ceph = new FakeCeph("backups");
    const s = stream(1, pattern(SIZE, 3), "evil\u001b[31m\nname");
    await refused(
      imp(ceph, {}, s.bytes),
      /a diff from snapshot "evil\\u001b\[31m\\nname" \('f' record\), but no parent backup/,
    );
    const e = await imp(ceph, {}, s.bytes).catch((x: Error) => x);
    const raw = [...String((e as Error).message)].filter((c) => (c.codePointAt(0) ?? 32) < 32);
    assert.deepEqual(raw, [], "no raw control character");
  });
});

describe("importBackup's record of the stream", () => {
  it("an incremental's backup.<id>.meta keeps the stream's 'f' and 't' names (the next diff may start at 't')", async () => {
    const ceph = new FakeCeph("backups");
    const base = pattern(SIZE, 9);
    const baseImage = `vol.backup.${PARENT_ID}`;
    ceph.addImage("backups", baseImage, base, [PARENT_SNAP]);
    const s = stream(2, base, PARENT_SNAP);
    await imp(ceph, { baseImage, fromSnapshot: PARENT_SNAP }, s.bytes);
    const meta = JSON.parse((ceph.pool("backups").objects.get(metaObjectName(ID)) as Buffer).toString());
    assert.deepEqual(meta.import, { stream_from_snapshot: PARENT_SNAP, stream_to_snapshot: "snap2" });
  });
});

describe("importBackup refusals: INVALID_ARGUMENT naming the offset, nothing committed", () => {
  const cases: Array<[string, (b: Buffer) => Buffer, RegExp]> = [
    ["truncated inside a 'w' record", (b) => b.subarray(0, 150_000), /byte offset 150000: the stream is truncated/],
    ["truncated before 'e'", (b) => b.subarray(0, b.length - 1), /without its 'e' record/],
    [
      "a corrupted record (the 'z' tag)",
      (b) => {
        const c = Buffer.from(b);
        c[b.indexOf(Buffer.from("z"), 200_000)] = 0x51;
        return c;
      },
      /byte offset \d+: unknown record tag 'Q'/,
    ],
    [
      "a corrupted length (beyond the size)",
      (b) => {
        const c = Buffer.from(b);
        const at = b.indexOf(Buffer.from("z"), 200_000);
        c.writeBigUInt64LE(BigInt(SIZE), at + 9);
        return c;
      },
      /beyond the image size/,
    ],
  ];
  for (const [what, cut, text] of cases) {
    it(what, async () => {
      const ceph = new FakeCeph("backups");
      ceph.addImage("backups", "other.backup.x", pattern(4096, 1), ["backup.x.snap.1"]);
      const before = poolState(ceph, "backups");
      const s = stream(1, Buffer.alloc(SIZE));
      await refused(imp(ceph, {}, cut(s.bytes)), text);
      assert.equal(poolState(ceph, "backups"), before, "no image, no snapshot, no metadata object");
    });
  }

  it("a stream with a from-snapshot for a full import: refused naming the 'f' record, nothing created", async () => {
    const ceph = new FakeCeph("backups");
    const before = poolState(ceph, "backups");
    const s = stream(2, Buffer.alloc(SIZE), "snap1");
    await refused(imp(ceph, {}, s.bytes), /byte offset 12: the stream is a diff from snapshot "snap1"/);
    assert.equal(poolState(ceph, "backups"), before);
  });

  it("a full stream given a parent: refused before the parent's base image is touched", async () => {
    const ceph = new FakeCeph("backups");
    const baseImage = `vol.backup.${PARENT_ID}`;
    ceph.addImage("backups", baseImage, pattern(SIZE, 2), [PARENT_SNAP]);
    const before = poolState(ceph, "backups");
    const s = stream(1, Buffer.alloc(SIZE));
    await refused(imp(ceph, { baseImage, fromSnapshot: PARENT_SNAP }, s.bytes), /no 'f' \(from-snapshot\) record/);
    assert.equal(poolState(ceph, "backups"), before);
  });
});
