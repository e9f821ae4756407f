/**
 * headDiffers (agents/transfer/sink/image-ops.ts): the exact diff, never the object map's whole-object
 * answer (a rollback by hand fools it), walked in 4 GiB pieces with the transfer's signal looked at
 * between them; the first extent found answers; size or a missing snapshot answer before any walk. When
 * both object maps answer (the head's and, through a handle opened at it, the snapshot's), only the
 * objects that exist at either are walked; when the snapshot cannot be opened, the whole image.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { DiffOptions, Extent } from "../../../agents/ceph";
import { RbdFeature } from "../../../agents/ceph/io-ctx";
import { HEAD_WALK_PIECE_BYTES, headDiffers } from "../../../agents/transfer/sink/image-ops";

const GiB = 2 ** 30;

function image(size: number, changedAt: number | null, snapSize = size) {
  const asked: DiffOptions[] = [];
  return {
    asked,
    img: {
      async snapList() {
        return [{ name: "s", id: 1, size: snapSize, timestamp: 0, protected: false }] as never;
      },
      async stat() {
        // No object map: the whole image is walked.
        return {
          size,
          objectSize: 4 * 2 ** 20,
          features: 0n,
          flags: 0,
          parentOverlap: 0,
          stripeUnit: 0,
          stripeCount: 1,
        } as never;
      },
      async openAt(): Promise<never> {
        throw new Error("no object map here: the snapshot is never opened");
      },
      async *diff(o: DiffOptions = {}): AsyncGenerator<Extent[], void, undefined> {
        asked.push(o);
        // The object map says nothing changed (as after a rollback by hand); only the exact walk sees.
        if (o.wholeObject) return;
        const from = o.offset ?? 0;
        const to = from + (o.length ?? size);
        if (changedAt !== null && changedAt >= from && changedAt < to)
          yield [{ offset: changedAt, length: 4096, exists: true }];
      },
    },
  };
}

describe("headDiffers", () => {
  it("walks exactly, in 4 GiB pieces, until the first change", async () => {
    const f = image(10 * GiB, 5 * GiB);
    assert.equal(await headDiffers(f.img, "s"), true);
    assert.ok(f.asked.every((o) => !o.wholeObject && o.fromSnapshot === "s"));
    assert.deepEqual(
      f.asked.map((o) => [o.offset, o.length]),
      [
        [0, HEAD_WALK_PIECE_BYTES],
        [HEAD_WALK_PIECE_BYTES, HEAD_WALK_PIECE_BYTES],
      ],
    );
    const same = image(10 * GiB, null);
    assert.equal(await headDiffers(same.img, "s"), false);
    assert.deepEqual(
      same.asked.map((o) => o.length),
      [4 * GiB, 4 * GiB, 2 * GiB],
    );
  });

  it("a signal aborted stops the walk between pieces", async () => {
    const f = image(10 * GiB, null);
    const ac = new AbortController();
    const cutting = {
      ...f.img,
      diff(o?: DiffOptions) {
        ac.abort(new Error("cut short"));
        return f.img.diff(o);
      },
    };
    const walk = headDiffers(cutting, "s", ac.signal);
    await assert.rejects(walk, /cut short/);
    assert.equal(f.asked.length, 1, "one piece walked");
  });

  it("another size, or no such snapshot: differs, without a walk", async () => {
    const grown = image(8 * GiB, null, 4 * GiB);
    assert.equal(await headDiffers(grown.img, "s"), true);
    assert.equal(await headDiffers(grown.img, "other"), true);
    assert.deepEqual(grown.asked, []);
  });

  describe("with object maps that answer", () => {
    /** headDiffers of `img` whose Image.openAt is `openAt`. */
    const headDiffersVia = (img: object, openAt: unknown) => headDiffers({ ...img, openAt } as never, "s");
    const OBJ = 4 * 2 ** 20;
    const FAST = RbdFeature.objectMap | RbdFeature.fastDiff;
    /** An image whose map names `existing` objects (by index); its exact diff reports `changedAt`. */
    function mapped(size: number, existing: number[], changedAt: number | null) {
      const asked: DiffOptions[] = [];
      let closed = 0;
      const stat = async () =>
        ({
          size,
          objectSize: OBJ,
          features: FAST,
          flags: 0,
          parentOverlap: 0,
          stripeUnit: OBJ,
          stripeCount: 1,
        }) as never;
      async function* diff(o: DiffOptions = {}): AsyncGenerator<Extent[], void, undefined> {
        asked.push(o);
        if (o.wholeObject) {
          yield existing.map((k) => ({ offset: k * OBJ, length: OBJ, exists: true }));
          return;
        }
        const from = o.offset ?? 0;
        const to = from + (o.length ?? size);
        if (changedAt !== null && changedAt >= from && changedAt < to)
          yield [{ offset: changedAt, length: 4096, exists: true }];
      }
      const img = {
        async snapList() {
          return [{ name: "s", id: 1, size, timestamp: 0, protected: false }] as never;
        },
        stat,
        diff,
        async close() {
          closed++;
        },
      };
      return { img, asked, closed: () => closed };
    }
    const exactWalks = (asked: DiffOptions[]) =>
      asked.filter((o) => !o.wholeObject).map((o) => [(o.offset ?? 0) / OBJ, (o.length ?? 0) / OBJ]);

    it("walks only the objects that exist at the head or at the snapshot (its own handle, closed after)", async () => {
      // The head has objects 0–1 and 100; the snapshot 50 (removed since: a change only the union finds).
      const size = 2000 * OBJ;
      const head = mapped(size, [0, 1, 100], 50 * OBJ + 5);
      const atSnap = mapped(size, [50], null);
      const opened: string[] = [];
      const openAt = async (snap: string) => {
        opened.push(snap);
        return atSnap.img;
      };
      assert.equal(await headDiffersVia(head.img, openAt), true, "object 50 differs");
      assert.deepEqual(opened, ["s"]);
      assert.equal(atSnap.closed(), 1, "the snapshot's handle closed");
      assert.deepEqual(exactWalks(head.asked), [
        [0, 2],
        [50, 1],
      ]);
      for (const o of head.asked.filter((x) => !x.wholeObject)) assert.equal(o.fromSnapshot, "s");
      // Nothing changed: every run walked, and nothing else (object 1999 exists at neither).
      const same = mapped(size, [0, 1, 100], null);
      assert.equal(await headDiffersVia(same.img, async () => mapped(size, [50], null).img), false);
      assert.deepEqual(exactWalks(same.asked), [
        [0, 2],
        [50, 1],
        [100, 1],
      ]);
    });

    it("a run longer than a piece is walked in 4 GiB pieces", async () => {
      const size = 3000 * OBJ;
      const run = Array.from({ length: 2100 }, (_, k) => k); // 8.2 GiB of objects
      const f = mapped(size, run, null);
      assert.equal(await headDiffersVia(f.img, async () => mapped(size, [], null).img), false);
      const piece = HEAD_WALK_PIECE_BYTES / OBJ;
      assert.deepEqual(exactWalks(f.asked), [
        [0, piece],
        [piece, piece],
        [2 * piece, 2100 - 2 * piece],
      ]);
    });

    it("the snapshot cannot be opened, or its map cannot answer: the whole image is walked", async () => {
      const size = 10 * OBJ;
      for (const [what, openAt] of [
        [
          "open fails",
          async () => {
            throw new Error("injected");
          },
        ],
        [
          "its map flagged invalid",
          async () => ({
            ...mapped(size, [], null).img,
            stat: async () =>
              ({
                size,
                objectSize: OBJ,
                features: FAST,
                flags: 1,
                parentOverlap: 0,
                stripeUnit: OBJ,
                stripeCount: 1,
              }) as never,
          }),
        ],
      ] as const) {
        const f = mapped(size, [3], null);
        assert.equal(await headDiffersVia(f.img, openAt as never), false, what);
        assert.deepEqual(exactWalks(f.asked), [[0, 10]], what);
      }
    });

    it("a head whose every object exists: the whole walk, the snapshot not opened", async () => {
      const size = 10 * OBJ;
      const f = mapped(
        size,
        Array.from({ length: 10 }, (_, k) => k),
        null,
      );
      let opened = 0;
      assert.equal(
        await headDiffersVia(f.img, async () => {
          opened++;
          return mapped(size, [], null).img;
        }),
        false,
      );
      assert.equal(opened, 0);
      assert.deepEqual(exactWalks(f.asked), [[0, 10]]);
    });
  });
});
