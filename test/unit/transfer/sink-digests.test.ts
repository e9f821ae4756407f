/**
 * The digest map the sink writes for a backup (agents/transfer/sink/digests.ts) against an in-memory
 * cluster: created beside the metadata object, both exclusively, equal to the map of the committed snapshot,
 * reported in the summary; an incremental starts from its parent's map and reads back only blocks it wrote
 * in part over data; a parent without a map gives none (a warning); a failed commit leaves no map behind;
 * a reused backup id leaves the map of the backup that has it alone.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { type DigestMap, decodeDigestMap, digestsObjectName, encodeDigestMap } from "../../../agents/transfer/digests";
import { runSink } from "../../../agents/transfer/sink";
import { metaObjectName } from "../../../src/common/ids";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { crc32c } from "./fakes/crc32c";
import { cephError, FakeCeph, poolState } from "./fakes/fake-ceph";
import { sinkDeps } from "./fakes/sink-deps";
import { Feed, header, KiB, messages, type Part, pattern } from "./fakes/stream";

const B = 64 * KiB;

function reference(image: Buffer): DigestMap {
  const idx: number[] = [];
  const crcs: number[] = [];
  for (let i = 0; i * B < image.length; i++) {
    const b = image.subarray(i * B, Math.min(image.length, (i + 1) * B));
    if (b.some((x) => x !== 0)) {
      idx.push(i);
      crcs.push(crc32c(b));
    }
  }
  return { blockSize: B, imageSize: image.length, indices: Uint32Array.from(idx), crcs: Uint32Array.from(crcs) };
}

const at = (log: string[], prefix: string) => log.findIndex((l) => l.startsWith(prefix));

describe("runSink: digest maps", () => {
  it("a full backup creates backup.<id>.digests beside its metadata object; the summary names its SHA-256", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const h = header({ imageSize: 8 * B + 4 * KiB, chunkSize: 2 * B });
    // Unaligned pieces: data over 1.5 blocks, a zero range, data across a block edge, the short last block.
    const parts: Part[] = [
      { offset: 4 * KiB, data: pattern(B + B / 2, 1) },
      { offset: 2 * B, zero: B },
      { offset: 4 * B - 8 * KiB, data: pattern(16 * KiB, 2) },
      { offset: 8 * B, data: pattern(4 * KiB, 3) },
    ];
    const s = await runSink(deps, new Feed(messages(h, parts)));
    const oid = digestsObjectName(h.backupId);
    const obj = ceph.pool("backups").objects.get(oid) as Buffer;
    assert.ok(obj, `${oid} written`);
    assert.ok(at(ceph.log, `objCreate ${oid}`) >= 0 && at(ceph.log, `objCreate ${metaObjectName(h.backupId)}`) >= 0);
    const img = ceph.pool("backups").images.get(h.destination?.image as string);
    const snap = img?.snaps.find((x) => x.name === h.toSnapshot)?.data as Buffer;
    assert.deepEqual(decodeDigestMap(obj), reference(snap));
    assert.equal(s.imageDigest, createHash("sha256").update(obj).digest("hex"));
    assert.equal(s.digestBlockSize, B);
    assert.deepEqual(ceph.reads, [], "a full backup reads nothing back");
  });

  it("an incremental overlays its parent's map, reading back only the block it wrote in part over data", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const parentId = "0c1d2e3f-0000-4000-8000-000000000001";
    const fromSnapshot = `backup.${parentId}.snap.1`;
    const parent = Buffer.alloc(8 * B);
    pattern(3 * B, 4).copy(parent, B); // blocks 1..3 hold data, the rest is zero
    ceph.pool("backups").objects.set(digestsObjectName(parentId), encodeDigestMap(reference(parent)));
    const h = header({ kind: TransferKind.BACKUP_INCREMENTAL, fromSnapshot, imageSize: 9 * B, chunkSize: 2 * B });
    const name = h.destination?.image as string;
    const img = ceph.addImage("backups", name, parent, [fromSnapshot]);
    const parts: Part[] = [
      { offset: 2 * B, data: pattern(B, 5) }, // a whole block: no read-back
      { offset: 3 * B + 4 * KiB, data: pattern(4 * KiB, 6) }, // part of a data block: read back
      { offset: 5 * B + 8 * KiB, data: pattern(4 * KiB, 7) }, // part of a zero block: no read-back
      { offset: 8 * B, data: pattern(B, 8) }, // the new block (the image grew)
    ];
    const s = await runSink(deps, new Feed(messages(h, parts)));
    const obj = ceph.pool("backups").objects.get(digestsObjectName(h.backupId)) as Buffer;
    const snap = img.snaps.find((x) => x.name === h.toSnapshot)?.data as Buffer;
    assert.deepEqual(decodeDigestMap(obj), reference(snap));
    assert.deepEqual(ceph.reads, [`${3 * B}+${B}`]);
    assert.equal(s.digestBlockSize, B);
  });

  it("an incremental whose parent has no map: no map, a warning, an empty digest", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const h = header({ kind: TransferKind.BACKUP_INCREMENTAL, fromSnapshot: "backup.p.snap.1" });
    ceph.addImage("backups", h.destination?.image as string, pattern(h.imageSize, 3), ["backup.p.snap.1"]);
    const s = await runSink(deps, new Feed(messages(h, [{ offset: 0, data: pattern(4 * KiB, 1) }])));
    assert.equal(s.imageDigest, "");
    assert.equal(s.digestBlockSize, 0);
    assert.match(s.warnings.join("\n"), /no digest map for this backup: the parent backup has no backup\.p\.digests/);
    assert.equal(ceph.pool("backups").objects.has(digestsObjectName(h.backupId)), false);
  });

  it("a commit that fails after the map was written removes it with the rest", async () => {
    const ceph = new FakeCeph("backups");
    const before = poolState(ceph, "backups");
    const deps = sinkDeps(ceph);
    const h = header();
    ceph.faults.objCreate = cephError("EIO", "rados_write_op_operate");
    ceph.faults.objCreateOid = metaObjectName(h.backupId);
    await assert.rejects(runSink(deps, new Feed(messages(h, [{ offset: 0, data: pattern(B, 1) }]))), /EIO/);
    assert.ok(at(ceph.log, `objCreate ${digestsObjectName(h.backupId)}`) >= 0, "the map was written");
    assert.equal(poolState(ceph, "backups"), before, "image, map and metadata gone");
  });

  it("a backup id that is another backup's (its metadata object there): ALREADY_EXISTS, that backup's map and metadata untouched", async () => {
    const ceph = new FakeCeph("backups");
    const h = header();
    const objects = ceph.pool("backups").objects;
    const theirs = { map: Buffer.from("the other backup's map"), meta: Buffer.from('{"version":1}') };
    objects.set(digestsObjectName(h.backupId), theirs.map);
    objects.set(metaObjectName(h.backupId), theirs.meta);
    const before = poolState(ceph, "backups");
    const err = await runSink(sinkDeps(ceph), new Feed(messages(h, [{ offset: 0, data: pattern(B, 1) }]))).then(
      () => null,
      (e: Error & { code?: number }) => e,
    );
    assert.ok(err, "refused");
    assert.match(err.message, /already exists \(backup id reused\?\)/);
    assert.deepEqual(objects.get(digestsObjectName(h.backupId)), theirs.map, "their map as it was");
    assert.deepEqual(objects.get(metaObjectName(h.backupId)), theirs.meta);
    assert.equal(poolState(ceph, "backups"), before, "nothing of this transfer left");
  });

  it("a retry whose earlier attempt left its map (cleanup failed): the map is written over, the backup commits", async () => {
    const ceph = new FakeCeph("backups");
    const h = header();
    ceph.pool("backups").objects.set(digestsObjectName(h.backupId), Buffer.from("an earlier attempt's map"));
    const s = await runSink(sinkDeps(ceph), new Feed(messages(h, [{ offset: 0, data: pattern(B, 1) }])));
    const obj = ceph.pool("backups").objects.get(digestsObjectName(h.backupId)) as Buffer;
    assert.equal(s.imageDigest, createHash("sha256").update(obj).digest("hex"));
    assert.ok(at(ceph.log, `objWriteFull ${digestsObjectName(h.backupId)}`) >= 0, "written over");
  });
});
