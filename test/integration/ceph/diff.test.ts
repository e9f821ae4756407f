/**
 * Our diff iterator against `rbd diff --format json` on a real cluster: scattered writes, discards and
 * a resize between snapshots; with and without a from-snapshot, with and without whole-object — and
 * prunedDiff (changed objects from the object map first, then the exact walk over them) the same.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { type Cluster, type Extent, type Image, type IoCtx, objectMapAnswers, prunedDiff } from "../../../agents/ceph";
import { connectLab, rbdJson, uniqueName } from "../../helpers/lab";
import { layoutRandom } from "../../helpers/volumes";

const MiB = 1 << 20;

interface CliExtent {
  offset: number;
  length: number;
  exists: string;
}

async function collect(image: Image, opts: Parameters<Image["diff"]>[0]): Promise<Extent[]> {
  const all: Extent[] = [];
  for await (const batch of image.diff(opts)) all.push(...batch);
  return all;
}

async function cli(spec: string, fromSnap: string | undefined, wholeObject: boolean): Promise<Extent[]> {
  const args = ["diff", spec];
  if (fromSnap) args.push("--from-snap", fromSnap);
  if (wholeObject) args.push("--whole-object");
  const out = await rbdJson<CliExtent[]>("site-a", args);
  return out.map((e) => ({ offset: e.offset, length: e.length, exists: e.exists === "true" }));
}

describe("diff iterator equals rbd diff", () => {
  let cluster: Cluster;
  let io: IoCtx;
  let image: Image;
  const name = uniqueName("diff");
  const rng = (n: number) => Math.floor(layoutRandom() * n);

  before(async () => {
    cluster = await connectLab("site-a");
    io = await cluster.openIoCtx("rbd");
    await io.imageCreate(name, 48 * MiB);
    image = await io.imageOpen(name);
    // s1: scattered unaligned writes.
    for (let i = 0; i < 40; i++) await image.write(randomBytes(1 + rng(200_000)), rng(46 * MiB));
    await image.snapCreate("s1");
    // s2: more writes, discards (some whole objects), then a grow.
    for (let i = 0; i < 30; i++) await image.write(randomBytes(1 + rng(100_000)), rng(46 * MiB));
    await image.discard(4 * MiB, 4 * MiB);
    for (let i = 0; i < 10; i++) await image.discard(rng(40 * MiB), 1 + rng(2 * MiB));
    await image.resize(64 * MiB);
    await image.write(randomBytes(300_000), 60 * MiB + 123);
    await image.snapCreate("s2");
    // s3: a shrink, then writes and a discard.
    await image.resize(40 * MiB);
    for (let i = 0; i < 15; i++) await image.write(randomBytes(1 + rng(80_000)), rng(39 * MiB));
    await image.discard(20 * MiB + 5, MiB);
    await image.snapCreate("s3");
    // head: writes, a discard, and a grow with data in the new tail.
    for (let i = 0; i < 20; i++) await image.write(randomBytes(1 + rng(50_000)), rng(39 * MiB));
    await image.discard(8 * MiB, 3 * MiB + 17);
    await image.resize(50 * MiB);
    await image.write(randomBytes(70_000), 45 * MiB + 1);
    await image.flush();
  });

  after(async () => {
    await image?.close();
    for (const s of ["s1", "s2", "s3"]) {
      const im = await io.imageOpen(name);
      await im.snapRemove(s).catch(() => {});
      await im.close();
    }
    await io?.imageRemove(name);
    await io?.close();
    await cluster?.close();
  });

  const cases: Array<{ at?: string; from?: string }> = [
    { at: "s1" },
    { at: "s2" },
    { at: "s2", from: "s1" },
    { at: "s3", from: "s2" },
    { at: "s3", from: "s1" },
    {},
    { from: "s1" },
    { from: "s3" },
  ];
  for (const c of cases) {
    for (const wholeObject of [false, true]) {
      const label = `${c.at ? `@${c.at}` : "head"} from ${c.from ?? "creation"}${wholeObject ? " whole-object" : ""}`;
      it(label, async () => {
        const im = c.at ? await io.imageOpen(name, { snapshot: c.at }) : image;
        try {
          const ours = await collect(im, { ...(c.from ? { fromSnapshot: c.from } : {}), wholeObject, batchSize: 7 });
          const theirs = await cli(`rbd/${name}${c.at ? `@${c.at}` : ""}`, c.from, wholeObject);
          assert.ok(theirs.length > 0, "the scenario must produce extents");
          assert.deepEqual(ours, theirs);
          // The walk over changed objects only (what a transfer's source uses) gives the same extents.
          const pruned: Extent[] = [];
          for await (const b of prunedDiff(im, { ...(c.from ? { fromSnapshot: c.from } : {}), wholeObject }))
            pruned.push(...b);
          assert.deepEqual(pruned, theirs, "prunedDiff");
        } finally {
          if (im !== image) await im.close();
        }
      });
    }
  }

  it("the lab's images have an object map that answers (so prunedDiff walks changed objects only)", async () => {
    for (const at of ["s1", "s2", "s3"]) {
      const im = await io.imageOpen(name, { snapshot: at });
      try {
        assert.ok(objectMapAnswers(await im.stat()), at);
      } finally {
        await im.close();
      }
    }
    assert.ok(objectMapAnswers(await image.stat()), "head");
  });

  it("stops librbd's iteration when the consumer breaks out", async () => {
    let seen = 0;
    for await (const batch of image.diff({ batchSize: 1 })) {
      seen += batch.length;
      if (seen >= 2) break;
    }
    assert.equal(seen, 2);
    // The image is still usable and a new full iteration still sees everything.
    const all = await collect(image, {});
    assert.ok(all.length > 2);
  });
});

describe("an incremental's pruned walk after `rbd snap rollback`", () => {
  let cluster: Cluster;
  let io: IoCtx;
  const name = uniqueName("diff-rollback");

  before(async () => {
    cluster = await connectLab("site-a");
    io = await cluster.openIoCtx("rbd");
  });
  after(async () => {
    const im = await io.imageOpen(name).catch(() => null);
    if (im) {
      for (const s of await im.snapList()) await im.snapRemove(s.name);
      await im.close();
      await io.imageRemove(name);
    }
    await io?.close();
    await cluster?.close();
  });

  it("the object the rollback changed and the one it removed are both in the diff, as `rbd diff --from-snap` has them", async () => {
    // s0 and s1 with nothing between: s1's object map marks objects 0 and 1 clean. After s1, object 1 is
    // rewritten and object 5 made; s2; rolled back to s1 (object 1 back, object 5 gone); s3. The object
    // map's "written since s2" misses both (the module comment of pruned-diff.ts); existence does not.
    await io.imageCreate(name, 40 * MiB);
    const head = await io.imageOpen(name);
    try {
      await head.write(randomBytes(MiB), 0);
      await head.write(randomBytes(MiB), 4 * MiB);
      await head.snapCreate("s0");
      await head.snapCreate("s1");
      await head.write(randomBytes(MiB), 4 * MiB + 123);
      await head.write(randomBytes(MiB), 20 * MiB);
      await head.snapCreate("s2");
      await head.snapRollback("s1");
      await head.snapCreate("s3");
    } finally {
      await head.close();
    }
    const im = await io.imageOpen(name, { snapshot: "s3" });
    try {
      const pruned: Extent[] = [];
      for await (const b of prunedDiff(im, { fromSnapshot: "s2" })) pruned.push(...b);
      const theirs = await cli(`rbd/${name}@s3`, "s2", false);
      assert.deepEqual(pruned, theirs);
      assert.ok(
        theirs.some((e) => e.exists && e.offset < 8 * MiB && e.offset + e.length > 4 * MiB),
        "object 1 (rolled back) in the diff",
      );
      assert.ok(
        theirs.some((e) => !e.exists && e.offset < 24 * MiB && e.offset + e.length > 20 * MiB),
        "object 5 (removed by the rollback) in the diff, as zeros",
      );
      assert.equal(im.snapshot, "s3", "the handle back at its snapshot");
    } finally {
      await im.close();
    }
  });
});
