/**
 * prunedDiff (agents/ceph/pruned-diff.ts) on a fake image that answers diff() from a list of extents the
 * way librbd does (an exact diff clipped to the range asked; a whole-object diff as whole objects): the
 * same extents as the plain exact diff, in order, with the exact walk of a diff from creation asked only
 * over runs of existing objects when the object map can answer — and the plain diff otherwise (a diff from
 * a snapshot, no fast-diff, a map flagged invalid, fancy striping, whole objects asked). Breaking out
 * closes the walk. (Against librbd itself:
 * test/integration/ceph/diff.test.ts.)
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { DiffOptions, Extent, ImageStat } from "../../../agents/ceph";
import { RbdFeature } from "../../../agents/ceph/io-ctx";
import { type DiffableImage, prunedDiff, RUN_GAP_OBJECTS } from "../../../agents/ceph/pruned-diff";

const OBJ = 4 * 1024 * 1024;
const SIZE = 400 * OBJ;
const FAST = RbdFeature.objectMap | RbdFeature.fastDiff;

function fake(extents: Extent[], st: Partial<ImageStat> = {}) {
  const asked: DiffOptions[] = [];
  let open = 0;
  const image: DiffableImage = {
    async stat() {
      return {
        size: SIZE,
        objectSize: OBJ,
        numObjects: SIZE / OBJ,
        order: 22,
        features: FAST,
        flags: 0,
        parentOverlap: 0,
        stripeUnit: OBJ,
        stripeCount: 1,
        ...st,
      };
    },
    async *diff(o: DiffOptions = {}) {
      asked.push(o);
      open++;
      try {
        const from = o.offset ?? 0;
        const to = o.length === undefined ? SIZE : Math.min(SIZE, from + o.length);
        let out: Extent[] = [];
        if (o.wholeObject) {
          const objs = new Map<number, boolean>();
          for (const e of extents)
            for (let k = Math.floor(e.offset / OBJ); k * OBJ < e.offset + e.length; k++)
              objs.set(k, (objs.get(k) ?? false) || e.exists);
          out = [...objs.entries()]
            .sort((a, b) => a[0] - b[0])
            .map(([k, exists]) => ({ offset: k * OBJ, length: Math.min(OBJ, SIZE - k * OBJ), exists }))
            .filter((e) => e.offset < to && e.offset + e.length > from);
        } else {
          for (const e of extents) {
            const s = Math.max(e.offset, from);
            const end = Math.min(e.offset + e.length, to);
            if (s < end) out.push({ offset: s, length: end - s, exists: e.exists });
          }
        }
        for (let i = 0; i < out.length; i += 3) yield out.slice(i, i + 3);
      } finally {
        open--;
      }
    },
  };
  return { image, asked, open: () => open };
}

async function all(it: AsyncIterable<Extent[]>): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const b of it) out.push(...b);
  return out;
}

/** Changes in objects 3 and 4 (adjacent), 20 and 26 (apart, within the gap), 200–201 and the last. */
const CHANGES: Extent[] = [
  { offset: 3 * OBJ + 100, length: 5000, exists: true },
  { offset: 4 * OBJ, length: OBJ, exists: true },
  { offset: 20 * OBJ + 7, length: 64 * 1024, exists: false },
  { offset: 26 * OBJ + 9, length: 10, exists: true },
  { offset: 200 * OBJ + OBJ - 10, length: 20, exists: true },
  { offset: SIZE - 100, length: 100, exists: true },
];

describe("prunedDiff", () => {
  it("from creation, with a usable object map: the exact extents, walked only over runs of existing objects", async () => {
    const f = fake(CHANGES);
    const got = await all(prunedDiff(f.image, {}));
    const plain = await all(fake(CHANGES).image.diff({}));
    assert.deepEqual(got, plain);
    assert.equal(f.asked[0]?.wholeObject, true, "the existing objects first, from the object map");
    const walks = f.asked.slice(1).map((o) => [(o.offset ?? 0) / OBJ, (o.length ?? 0) / OBJ]);
    // 3–4 one run; 20 and 26 one run (6 apart ≤ the gap); 200 and 201 (its extent ends in 201); the last.
    assert.ok(26 - 20 <= RUN_GAP_OBJECTS);
    assert.deepEqual(walks, [
      [3, 2],
      [20, 7],
      [200, 2],
      [399, 1],
    ]);
    for (const o of f.asked.slice(1)) assert.equal(o.fromSnapshot, undefined, "every walk from creation");
    assert.equal(f.open(), 0, "every walk closed");
  });

  it("from a snapshot, without fast-diff, with the map flagged invalid, with fancy striping, or whole objects asked: the plain diff", async () => {
    for (const [what, st, opts] of [
      // An incremental: after `rbd snap rollback` to an older snapshot the object map says "not written
      // since" of objects that changed (the module comment; tried on the lab).
      ["from a snapshot", {}, { fromSnapshot: "s1" }],
      ["no fast-diff", { features: RbdFeature.objectMap }, {}],
      ["object map invalid", { flags: 1 }, {}],
      ["fast diff invalid", { flags: 2 }, {}],
      ["striped", { stripeCount: 4, stripeUnit: 65536 }, {}],
      ["whole objects asked", {}, { wholeObject: true }],
    ] as Array<[string, Partial<ImageStat>, DiffOptions]>) {
      const f = fake(CHANGES, st);
      const got = await all(prunedDiff(f.image, opts));
      assert.deepEqual(got, await all(fake(CHANGES).image.diff(opts)), what);
      assert.equal(f.asked.length, 1, `${what}: one walk`);
      assert.deepEqual(f.asked[0], opts, `${what}: as asked`);
    }
  });

  it("a clone's diff from its creation with its parent's data: the plain diff (librbd before 16.2.8 left the parent out of the whole-object diff); without the parent: pruned", async () => {
    const clone = { parentOverlap: 100 * OBJ };
    for (const opts of [{}, { includeParent: true }, { fromSnapshot: "s1" }] as DiffOptions[]) {
      const f = fake(CHANGES, clone);
      assert.deepEqual(await all(prunedDiff(f.image, opts)), await all(fake(CHANGES).image.diff(opts)));
      assert.equal(f.asked.length, 1, "one walk");
      assert.deepEqual(f.asked[0], opts, "the plain diff, as asked");
    }
    for (const opts of [{ includeParent: false }] as DiffOptions[]) {
      const f = fake(CHANGES, clone);
      assert.deepEqual(await all(prunedDiff(f.image, opts)), await all(fake(CHANGES).image.diff(opts)));
      assert.equal(f.asked[0]?.wholeObject, true, `${JSON.stringify(opts)}: pruned`);
    }
  });

  it("nothing written: one object-map walk and no exact walk", async () => {
    const f = fake([]);
    assert.deepEqual(await all(prunedDiff(f.image, {})), []);
    assert.equal(f.asked.length, 1);
  });

  it("breaking out closes the walk in progress", async () => {
    const f = fake(CHANGES);
    for await (const _ of prunedDiff(f.image, {})) break;
    assert.equal(f.open(), 0);
  });
});
