/**
 * A full backup's base image is written without its object map, which the commit builds
 * (agents/transfer/sink/object-map.ts): created without object-map and fast-diff, then — after the
 * flush, before the digest map, the metadata object and the snapshot — the features enabled and the map
 * rebuilt. Images over DEFER_UP_TO_BYTES, headers without object-map and restores keep the create's
 * features and build nothing.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RbdFeature as F } from "../../../agents/ceph";
import { runSink } from "../../../agents/transfer/sink";
import { DEFER_UP_TO_BYTES, deferredFeatures } from "../../../agents/transfer/sink/object-map";
import { metaObjectName } from "../../../src/common/ids";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { FakeCeph } from "./fakes/fake-ceph";
import { sinkDeps } from "./fakes/sink-deps";
import { chunkParts, Feed, header, KiB, messages } from "./fakes/stream";

const at = (log: string[], prefix: string) => log.findIndex((l) => l.startsWith(prefix));
const MAP = F.objectMap | F.fastDiff;
const BASE = F.layering | F.exclusiveLock | F.objectMap | F.fastDiff | F.deepFlatten;

describe("a full backup's object map", () => {
  it("created without it, built after the flush and before the digest map, metadata and snapshot", async () => {
    const ceph = new FakeCeph("backups");
    const h = header();
    const name = h.destination?.image as string;
    await runSink(sinkDeps(ceph), new Feed(messages(h, chunkParts(4, 64 * KiB))));
    const log = ceph.log;
    assert.ok(log.includes(`imageCreate ${name} features ${BASE & ~MAP}`), log.join("\n"));
    const enable = at(log, `updateFeatures ${name} ${MAP} true`);
    const rebuild = at(log, `rebuildObjectMap ${name}`);
    assert.ok(enable > at(log, `flush ${name}`), "enabled after the flush");
    assert.ok(rebuild > enable, "rebuilt after it is enabled");
    assert.ok(at(log, `objCreate ${metaObjectName(h.backupId)}`) > rebuild, "the metadata object after the map");
    assert.ok(at(log, `snapCreate ${name}`) > rebuild, "the snapshot after the map");
    assert.equal(ceph.pool("backups").images.get(name)?.features, BASE, "the image ends with the header's features");
  });

  it("kept at the create when the image is larger than the bound, or the header asks for no object map", async () => {
    for (const over of [{ imageSize: DEFER_UP_TO_BYTES + 4096 }, { features: Number(F.layering | F.exclusiveLock) }]) {
      assert.equal(deferredFeatures(BigInt(over.features ?? Number(BASE)), over.imageSize ?? 256 * KiB), 0n);
    }
    const ceph = new FakeCeph("backups");
    const h = header({ features: Number(F.layering | F.exclusiveLock) });
    const name = h.destination?.image as string;
    await runSink(sinkDeps(ceph), new Feed(messages(h, chunkParts(2, 64 * KiB))));
    assert.ok(ceph.log.includes(`imageCreate ${name} features ${F.layering | F.exclusiveLock}`));
    assert.equal(at(ceph.log, "updateFeatures"), -1);
    assert.equal(at(ceph.log, "rebuildObjectMap"), -1);
  });

  it("a restore to a new volume keeps the create's features and builds nothing", async () => {
    const ceph = new FakeCeph("backups");
    const h = header({
      kind: TransferKind.RESTORE_NEW,
      destination: { pool: "backups", namespace: "", image: "restored" },
    });
    await runSink(sinkDeps(ceph), new Feed(messages(h, chunkParts(2, 64 * KiB))));
    assert.ok(ceph.log.includes(`imageCreate restored features ${BASE}`), ceph.log.join("\n"));
    assert.equal(at(ceph.log, "rebuildObjectMap"), -1);
  });
});
