/** `rbdbackup catalog rebuild`'s report for people, and its usage errors before any call. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UsageError } from "../../../src/cli/args";
import { catalogCommand, rebuildText } from "../../../src/cli/commands/catalog";

const finding = (backupId: string, reason = "") => ({
  backupId,
  pool: "backups",
  namespace: reason ? "tenant" : "",
  volume: { cluster: "site-a", pool: "rbd", namespace: "", image: "vol1" },
  reason,
});

describe("catalog rebuild (CLI)", () => {
  it("prints the counts, each import and each skip with its reason", () => {
    const r = {
      found: 3,
      volumes: 1,
      imported: [finding("b-1")],
      present: [finding("b-0")],
      skipped: [finding("b-2", "meta object does not parse: not JSON")],
    };
    assert.equal(
      rebuildText(r, false),
      [
        "found 3 meta object(s): 1 imported, 1 already present, 1 skipped; 1 volume(s)",
        "imported  b-1  backups  site-a/rbd/vol1",
        "skipped  b-2  backups/tenant  site-a/rbd/vol1: meta object does not parse: not JSON",
      ].join("\n"),
    );
    assert.match(rebuildText(r, true), /^found 3 meta object\(s\): 1 would be imported,.*\nwould import {2}b-1/);
  });

  it("--cluster is required; no positional arguments", async () => {
    await assert.rejects(
      catalogCommand(["rebuild"]),
      (e) => e instanceof UsageError && /--cluster is required/.test(e.message),
    );
    await assert.rejects(
      catalogCommand(["rebuild", "site-b"]),
      (e) => e instanceof UsageError && /unexpected argument "site-b"/.test(e.message),
    );
  });
});
