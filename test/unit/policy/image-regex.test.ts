/**
 * A policy selector's image_regex is matched in linear time (src/coordinator/policy/validate.ts
 * imageRegex, V8's linear engine): a pattern that backtracks exponentially — (.|.)*x took 3.2 s on a
 * 26-character name on the coordinator's one thread — is matched at once, so a policy cannot stall the
 * coordinator (its API, heartbeats, the leader's lease). Without the linear engine the match would not
 * end (2^45 paths): it runs in a child process that the test's deadline kills, so the test fails rather
 * than hangs, with no timing assertion. Discovery matches with the same function.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { matching } from "../../../src/coordinator/policy/discovery";
import { imageRegex } from "../../../src/coordinator/policy/validate";
import type { PolicySelector } from "../../../src/gen/rbdbackup/v1/policy";

describe("policy image_regex in linear time", () => {
  it("an exponentially backtracking pattern answers on long names, anchored as before", () => {
    // In a child process with a deadline: a backtracking match blocks its thread, so no in-process
    // timeout could end it.
    const script = `
      const { imageRegex } = require(${JSON.stringify(require.resolve("../../../src/coordinator/policy/validate"))});
      const re = imageRegex("(.|.)*x");
      process.stdout.write(JSON.stringify([re.test("a".repeat(45)), re.test("a".repeat(45) + "x")]));`;
    const r = spawnSync(process.execPath, ["-e", script], { timeout: 20_000, encoding: "utf8" });
    assert.equal(r.error, undefined, `the match did not end: ${r.error?.message}`);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), [false, true]);
    assert.equal(imageRegex("vol-[0-9]+").test("vol-12"), true);
    assert.equal(imageRegex("vol-[0-9]+").test("xvol-12"), false, "anchored at the start");
    assert.equal(imageRegex("vol-[0-9]+").test("vol-12x"), false, "and at the end");
  });

  it("a pattern that is not a regular expression on its own is refused, though it would compile inside the anchors", () => {
    for (const re of ["vol)|(?:foo", ")|.*|(?:"]) {
      assert.throws(
        () => imageRegex(re),
        (e: Error & { code?: number }) => /does not compile: .*Unmatched '\)'/.test(e.message),
        re,
      );
    }
    assert.equal(imageRegex("vol|foo").test("volume-1"), false, "an alternation stays anchored");
  });

  it("discovery uses the same matcher", () => {
    const sel = { cluster: "a", pool: "rbd", imageRegex: "vol-(a|b)+" } as PolicySelector;
    assert.deepEqual(matching(sel, ["vol-ab", "vol-c", "xvol-a"]), ["vol-ab"]);
  });

  it("a stored regex that cannot be matched in linear time (written before) matches nothing instead of throwing", () => {
    const sel = { cluster: "a", pool: "rbd", imageRegex: "(vol)-\\1" } as PolicySelector;
    assert.deepEqual(matching(sel, ["vol-vol", "vol-x"]), []);
  });
});
