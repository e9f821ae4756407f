/**
 * Restore fidelity and source pruning without Ceph: the layout a new volume is re-created with (order,
 * striping, features from backup.<id>.meta, the uncreatable ones dropped with a warning), the sink's
 * create that drops features the target's librbd refuses, and which snapshots a prune_snapshots call
 * touches.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import type { BackupMetadataV1 } from "../../../agents/engine/metadata";
import { restoreLayout } from "../../../agents/engine/restore-layout";
import { pruneSelection, validatePrune } from "../../../agents/engine/source-prune";
import { createImageWithFeatures } from "../../../agents/transfer/sink/create-image";
import { AppError, Status } from "../../../src/common/errors";
import { backupSnapName } from "../../../src/common/ids";
import { cephError } from "../transfer/fakes/fake-ceph";

const MiB = 1 << 20;

function meta(image: Partial<BackupMetadataV1["image"]>): BackupMetadataV1 {
  return {
    version: 1,
    backup_id: randomUUID(),
    created_at: "",
    volume: { id: "", metadata: {} },
    source: { kind: "rbd", cluster_fsid: "", pool: "rbd", namespace: "", image: "v", snapshot: "s" },
    image: {
      size: 16 * MiB,
      features: "61",
      order: 22,
      stripe_unit: 4 * MiB,
      stripe_count: 1,
      image_meta: {},
      ...image,
    },
    chain: { base_image: "b", incremental: false, parent_snapshot: null, snapshot: "s" },
  };
}

const base = { features: 1n, order: 20, stripeUnit: MiB, stripeCount: 1 };

describe("restore layout", () => {
  it("a striped source comes back striped: stripe unit 64 KiB × 4, order and features as recorded", () => {
    // layering, striping, exclusive-lock, object-map, fast-diff, deep-flatten = 63
    const l = restoreLayout(meta({ features: "63", order: 22, stripe_unit: 64 * 1024, stripe_count: 4 }), base);
    assert.deepEqual(l, { features: 63n, order: 22, stripeUnit: 65536, stripeCount: 4, warnings: [] });
  });

  it("an unstriped source: no stripe settings, no striping bit; another order is kept", () => {
    const l = restoreLayout(meta({ features: "63", order: 23, stripe_unit: 8 * MiB, stripe_count: 1 }), base);
    assert.deepEqual(l, { features: 61n, order: 23, stripeUnit: 0, stripeCount: 0, warnings: [] });
  });

  it("features a new image cannot have are dropped, named in a warning", () => {
    // + journaling (64, kept), data-pool (128), operations (256)
    const l = restoreLayout(meta({ features: String(61 + 64 + 128 + 256) }), base);
    assert.equal(l.features, 61n + 64n);
    assert.equal(l.warnings.length, 1);
    assert.match(
      l.warnings[0] as string,
      /^features dropped on the restored image: dataPool, operations \(a data pool/,
    );
  });

  it("without backup.<id>.meta: the base image's geometry", () => {
    const l = restoreLayout(null, { features: 3n, order: 20, stripeUnit: 64 * 1024, stripeCount: 8 });
    assert.deepEqual(l, { features: 3n, order: 20, stripeUnit: 65536, stripeCount: 8, warnings: [] });
    assert.equal(restoreLayout(meta({ features: "0" }), base).features, 1n, "never 0 (the sink's defaults)");
  });
});

describe("sink: creating a restored image on a cluster that refuses some features", () => {
  function fakeIo(supported: bigint) {
    const tried: bigint[] = [];
    return {
      tried,
      async imageCreate(_name: string, _size: number, o?: { features?: bigint }) {
        const f = o?.features ?? 0n;
        tried.push(f);
        if (f & ~supported) throw cephError("ENOSYS", "rbd_create4");
      },
    };
  }

  it("drops optional features newest first until librbd accepts, and says which", async () => {
    const io = fakeIo(1n | 2n | 4n | 8n | 16n); // no deep-flatten, no journaling
    const warnings: string[] = [];
    await createImageWithFeatures(io, "r", MiB, { features: 127n }, warnings);
    assert.deepEqual(io.tried, [127n, 63n, 31n]);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] as string, /^features dropped on r: deepFlatten, journaling \(the target cluster refused/);
  });

  it("accepted at once: no warning; refused even bare: the first error; other errors are not retried", async () => {
    const ok = fakeIo(127n);
    const w: string[] = [];
    await createImageWithFeatures(ok, "r", MiB, { features: 63n }, w);
    assert.deepEqual([ok.tried, w], [[63n], []]);
    const never = fakeIo(0n);
    await assert.rejects(createImageWithFeatures(never, "r", MiB, { features: 63n }, w), /ENOSYS/);
    assert.deepEqual(never.tried, [63n, 31n, 15n, 7n, 3n], "layering and striping are never dropped");
    const exists = {
      imageCreate: async () => {
        throw cephError("EEXIST", "rbd_create4");
      },
    };
    await assert.rejects(createImageWithFeatures(exists, "r", MiB, { features: 63n }, w), /EEXIST/);
  });
});

describe("prune_snapshots on the agent: only the named backups' snapshots", () => {
  const [x, y] = [randomUUID(), randomUUID()];
  const snap = (name: string, isProtected = false) => ({ id: 1, name, size: 1, protected: isProtected, timestamp: 0 });

  it("selects backup.<id>.snap.* of the named ids; never a protected one, other names or ids", () => {
    const sx = backupSnapName(x, 1000);
    const sx2 = backupSnapName(x, 2000);
    const sy = backupSnapName(y, 1000);
    const r = pruneSelection(
      [snap(sx), snap(sx2, true), snap(sy), snap(`my-${sx}`), snap(`backup.${x}.snapshot.1`)],
      new Set([x]),
    );
    assert.deepEqual(r.remove, [sx]);
    assert.deepEqual(r.warnings, [`${sx2} kept: it is protected`]);
  });

  it("refuses ids that are not lowercase UUIDs and a missing image (INVALID_ARGUMENT)", () => {
    const image = { pool: "rbd", namespace: "", image: "v" };
    for (const bad of [
      { image, backupIds: [x.toUpperCase()] },
      { image, backupIds: ["*"] },
      { image: undefined, backupIds: [x] },
      { image: { ...image, image: "a/b" }, backupIds: [x] },
    ]) {
      assert.throws(
        () => validatePrune(bad),
        (e) => e instanceof AppError && e.status === Status.INVALID_ARGUMENT,
      );
    }
    assert.deepEqual([...validatePrune({ image, backupIds: [x, x] }).ids], [x]);
  });
});
