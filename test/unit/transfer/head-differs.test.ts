/**
 * headDiffers (agents/transfer/sink/image-ops.ts): the exact diff, never the object map's whole-object
 * answer (a rollback by hand fools it), walked in 4 GiB pieces with the transfer's signal looked at
 * between them; the first extent found answers; size or a missing snapshot answer before any walk.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { DiffOptions, Extent } from "../../../agents/ceph";
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
        return { size } as never;
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
});
