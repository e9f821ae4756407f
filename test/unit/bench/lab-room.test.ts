/**
 * The bench's room check (test/bench/lab-room.ts) without Ceph: what a cluster can take before writes
 * wait, the verdict for a scenario's writes (summed per site, with the margin), the lab size it suggests,
 * and what the scenarios declare for the default run (1 GiB, 2 rounds) against the bench lab (16G) and
 * the demo's (4G).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FULL_SHARE, ROOM_MARGIN, roomVerdict, usableMiB } from "../../bench/lab-room";
import { scenarios } from "../../bench/scenarios";
import type { ScenarioContext } from "../../bench/scenarios/types";

const MiB = 2 ** 20;
const GiB = 2 ** 30;

describe("bench room check", () => {
  it("a cluster can take what is left below its full share", () => {
    assert.equal(usableMiB({ bytes: 16 * GiB, bytesUsed: 0 }), Math.floor((16 * GiB * FULL_SHARE) / MiB));
    assert.equal(
      usableMiB({ bytes: 16 * GiB, bytesUsed: 4 * GiB }),
      Math.floor((16 * GiB * FULL_SHARE - 4 * GiB) / MiB),
    );
    assert.equal(usableMiB({ bytes: 4 * GiB, bytesUsed: 4 * GiB }), 0, "never negative");
  });

  it("room enough: no verdict", () => {
    const usable = new Map([
      ["site-a", 10_000],
      ["site-b", 10_000],
    ]);
    assert.equal(roomVerdict([{ site: "site-a", mib: 1000 }], usable), null);
    assert.equal(roomVerdict([], usable), null);
  });

  it("a site's writes are summed and the margin applied before comparing", () => {
    const writes = [
      { site: "site-b", mib: 600 },
      { site: "site-b", mib: 200 },
    ];
    const want = Math.ceil(800 * ROOM_MARGIN);
    assert.equal(roomVerdict(writes, new Map([["site-b", want]])), null, "exactly enough");
    const v = roomVerdict(writes, new Map([["site-b", want - 1]]));
    assert.ok(v, "one MiB short is refused");
    assert.match(v, /^no room: site-b needs ~1000 MiB, can take 999 MiB/);
    assert.match(v, /lab\.sh up --capacity 16G site-a site-b/, "says how to get a lab that has room");
  });

  it("names every short site, a missing one too, and suggests a capacity that holds the largest need", () => {
    const v = roomVerdict(
      [
        { site: "site-a", mib: 20_000 },
        { site: "site-b", mib: 10 },
      ],
      new Map([["site-a", 100]]),
    );
    assert.ok(v);
    assert.match(v, /site-a needs ~25000 MiB, can take 100 MiB/);
    assert.match(v, /site-b is not in the lab/);
    const g = Number(/--capacity (\d+)G/.exec(v)?.[1]);
    assert.ok(g * 1024 * FULL_SHARE >= 25_000, `${g}G holds 25000 MiB below the full share`);
  });

  it("the default run fits the bench lab (16G) and not the demo's (4G)", () => {
    const ctx: ScenarioContext = { mib: 1024, rounds: 2, limits: {}, labDir: "/nonexistent", log: () => {} };
    const usable = (g: number) =>
      new Map([
        ["site-a", usableMiB({ bytes: g * GiB, bytesUsed: 0 })],
        ["site-b", usableMiB({ bytes: g * GiB, bytesUsed: 0 })],
      ]);
    const declared = scenarios.filter((s) => s.writes);
    assert.ok(declared.length >= 8, "every scenario on the shared lab declares its writes");
    for (const s of declared) {
      assert.equal(roomVerdict(s.writes?.(ctx) ?? [], usable(16)), null, `${s.name} fits a 16G lab`);
    }
    assert.ok(
      declared.some((s) => roomVerdict(s.writes?.(ctx) ?? [], usable(4)) !== null),
      "a 4G lab is refused up front for the 1 GiB scenarios",
    );
  });
});
