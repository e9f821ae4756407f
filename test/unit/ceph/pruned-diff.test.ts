/**
 * prunedDiff (agents/ceph/pruned-diff.ts) on a fake image that answers diff() from a list of extents the
 * way librbd does (an exact diff clipped to the range asked; a whole-object diff as whole objects): the
 * same extents as the plain exact diff, in order, with the exact walk asked only over runs of existing
 * objects when the object maps can answer — from creation: the end's; from a snapshot (on a handle at a
 * snapshot): both ends', the from-snapshot's through a handle of its own (the walk's handle never moves)
 * — and the plain diff otherwise (an incremental on a head handle, no fast-diff, a map flagged invalid at
 * either end, the from-snapshot not opened, fancy striping, whole objects asked). Breaking out closes the
 * walk. (Against librbd itself:
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

/** A snapshot of the fake image: the objects its object map names (by index), its own stat. */
interface FakeSnap {
  existing: number[];
  st?: Partial<ImageStat>;
}

/**
 * `extents`: the exact diff the image answers (whatever it is asked from); the objects they touch exist
 * at the handle's own snapshot unless `o.existing` names them. `o.at`: the snapshot the handle is at
 * (null: the head); `o.snaps`: the other snapshots, which openAt opens as handles of their own (any
 * other name fails to open). `asked` records every walk with the snapshot of the handle it ran on.
 */
function fake(
  extents: Extent[],
  st: Partial<ImageStat> = {},
  o: { at?: string | null; existing?: number[]; snaps?: Record<string, FakeSnap> } = {},
) {
  const asked: Array<DiffOptions & { at: string | null }> = [];
  const opened: string[] = [];
  let closed = 0;
  let open = 0;
  const base = {
    size: SIZE,
    objectSize: OBJ,
    numObjects: SIZE / OBJ,
    order: 22,
    features: FAST,
    flags: 0,
    parentOverlap: 0,
    stripeUnit: OBJ,
    stripeCount: 1,
  };
  /** A handle at `at` whose map names `snap.existing` (undefined: the objects `extents` touch). */
  const handle = (at: string | null, snap: FakeSnap | undefined, stat: Partial<ImageStat>) => ({
    async stat() {
      return { ...base, ...stat };
    },
    async *diff(d: DiffOptions = {}) {
      asked.push({ ...d, at });
      open++;
      try {
        const size = stat.size ?? SIZE;
        const from = d.offset ?? 0;
        const to = d.length === undefined ? size : Math.min(size, from + d.length);
        if (from > size) throw new Error(`EINVAL: offset ${from} beyond the size ${size}`);
        let out: Extent[] = [];
        if (d.wholeObject) {
          const objs = new Map<number, boolean>();
          if (snap) for (const k of snap.existing) objs.set(k, true);
          else
            for (const e of extents)
              for (let k = Math.floor(e.offset / OBJ); k * OBJ < e.offset + e.length; k++)
                objs.set(k, (objs.get(k) ?? false) || e.exists);
          out = [...objs.entries()]
            .sort((a, b) => a[0] - b[0])
            .map(([k, exists]) => ({ offset: k * OBJ, length: Math.min(OBJ, size - k * OBJ), exists }))
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
  });
  const home = o.at ?? null;
  const image: DiffableImage = {
    snapshot: home,
    ...handle(home, o.existing ? { existing: o.existing } : undefined, st),
    async openAt(name: string) {
      opened.push(name);
      const snap = o.snaps?.[name];
      if (!snap) throw new Error(`ENOENT: no snapshot ${name}`);
      return {
        ...handle(name, snap, snap.st ?? {}),
        async close() {
          closed++;
        },
      };
    },
  };
  return { image, asked, opened, open: () => open, closed: () => closed };
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

  it("from a snapshot on a head handle, without fast-diff, with the map flagged invalid, with fancy striping, or whole objects asked: the plain diff", async () => {
    for (const [what, st, opts] of [
      // A head is written meanwhile (and moving it would drop its exclusive lock).
      ["from a snapshot on a head handle", {}, { fromSnapshot: "s1" }],
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
      assert.deepEqual(f.asked[0], { ...opts, at: null }, `${what}: as asked`);
    }
  });

  it("a clone's diff from its creation with its parent's data: the plain diff (librbd before 16.2.8 left the parent out of the whole-object diff); without the parent: pruned", async () => {
    const clone = { parentOverlap: 100 * OBJ };
    for (const opts of [{}, { includeParent: true }, { fromSnapshot: "s1" }] as DiffOptions[]) {
      const f = fake(CHANGES, clone);
      assert.deepEqual(await all(prunedDiff(f.image, opts)), await all(fake(CHANGES).image.diff(opts)));
      assert.equal(f.asked.length, 1, "one walk");
      assert.deepEqual(f.asked[0], { ...opts, at: null }, "the plain diff, as asked");
    }
    for (const opts of [{ includeParent: false }] as DiffOptions[]) {
      const f = fake(CHANGES, clone);
      assert.deepEqual(await all(prunedDiff(f.image, opts)), await all(fake(CHANGES).image.diff(opts)));
      assert.equal(f.asked[0]?.wholeObject, true, `${JSON.stringify(opts)}: pruned`);
    }
  });

  it("an incremental at a snapshot: the exact walk over the objects that exist at either end (each from its own map, the from-snapshot's through a handle of its own), clipped to the end's size", async () => {
    // The end (s2, the handle's snapshot) is 300 objects: the image shrank since s1 (400). Object 3
    // rewritten, object 20 discarded (it exists at s1 only), object 150 new (at s2 only).
    const changes: Extent[] = [
      { offset: 3 * OBJ + 100, length: 5000, exists: true },
      { offset: 20 * OBJ, length: OBJ, exists: false },
      { offset: 150 * OBJ + 7, length: 10, exists: true },
    ];
    const st = { size: 300 * OBJ };
    const f = fake(changes, st, {
      at: "s2",
      existing: [3, 150, 200],
      snaps: { s1: { existing: [3, 20, 60, 61, 350], st: { size: 400 * OBJ } } },
    });
    const got = await all(prunedDiff(f.image, { fromSnapshot: "s1" }));
    assert.deepEqual(got, await all(fake(changes, st, { at: "s2" }).image.diff({ fromSnapshot: "s1" })));
    assert.deepEqual(
      f.asked.filter((c) => c.wholeObject).map((c) => [c.at, c.fromSnapshot]),
      [
        ["s2", undefined],
        ["s1", undefined],
      ],
      "each end's existing objects from its own map (a diff from creation)",
    );
    assert.ok(61 - 20 > RUN_GAP_OBJECTS && 150 - 61 > RUN_GAP_OBJECTS && 200 - 150 > RUN_GAP_OBJECTS);
    assert.deepEqual(
      f.asked
        .filter((c) => !c.wholeObject)
        .map((c) => [c.at, c.fromSnapshot, (c.offset ?? 0) / OBJ, (c.length ?? 0) / OBJ]),
      [
        ["s2", "s1", 3, 1],
        ["s2", "s1", 20, 1],
        ["s2", "s1", 60, 2],
        ["s2", "s1", 150, 1],
        ["s2", "s1", 200, 1],
      ],
      "the exact walk at the end, from s1, over the union; object 350 (beyond the end's size) left out",
    );
    assert.deepEqual(f.opened, ["s1"], "the from-snapshot opened on its own handle");
    assert.equal(f.closed(), 1, "and closed");
    assert.equal(f.open(), 0, "every walk closed");
  });

  it("an incremental whose end has every object: the plain walk, no move (nothing to prune)", async () => {
    const all400 = Array.from({ length: SIZE / OBJ }, (_, k) => k);
    const f = fake(CHANGES, {}, { at: "s2", existing: all400, snaps: { s1: { existing: [3] } } });
    assert.deepEqual(
      await all(prunedDiff(f.image, { fromSnapshot: "s1" })),
      await all(fake(CHANGES).image.diff({ fromSnapshot: "s1" })),
    );
    assert.deepEqual(f.opened, [], "nothing to prune: no open");
    assert.deepEqual(f.asked.at(-1), { fromSnapshot: "s1", at: "s2" });
  });

  it("an incremental whose from-snapshot's map cannot answer (invalid, a clone's parent there, the snapshot missing): the plain walk", async () => {
    for (const [what, snaps] of [
      ["map invalid at s1", { s1: { existing: [3], st: { flags: 1 } } }],
      ["a parent at s1", { s1: { existing: [3], st: { parentOverlap: OBJ } } }],
      ["no s1", {}],
    ] as Array<[string, Record<string, FakeSnap>]>) {
      const f = fake(CHANGES, {}, { at: "s2", snaps });
      const got = await all(prunedDiff(f.image, { fromSnapshot: "s1" }));
      assert.deepEqual(got, await all(fake(CHANGES).image.diff({ fromSnapshot: "s1" })), what);
      assert.equal(f.closed(), f.opened.length - (what === "no s1" ? 1 : 0), `${what}: a handle opened is closed`);
      assert.deepEqual(f.asked.at(-1), { fromSnapshot: "s1", at: "s2" }, `${what}: the plain walk last`);
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
