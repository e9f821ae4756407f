/**
 * The V8 flags the coordinator sets on itself (main.ts V8_FLAGS) are flags this Node's V8 knows: a
 * renamed or removed flag would be ignored at run time without a word, so each is given to a fresh
 * `node` on its command line, which refuses one it does not know.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { V8_FLAGS } from "../../../src/coordinator/main";

describe("the coordinator's V8 flags", () => {
  it("are known to this Node's V8", () => {
    const flags = V8_FLAGS.split(" ").filter(Boolean);
    assert.ok(flags.length > 0);
    for (const flag of flags) {
      const r = spawnSync(process.execPath, [flag, "-e", "0"], { encoding: "utf8", timeout: 30_000 });
      assert.equal(r.status, 0, `${flag}: ${r.stderr}`);
      assert.equal(r.stderr, "", flag);
    }
    const bogus = spawnSync(process.execPath, ["--no-such-v8-flag-at-all", "-e", "0"], {
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.notEqual(bogus.status, 0, "an unknown flag is refused (else this test proves nothing)");
  });
});
