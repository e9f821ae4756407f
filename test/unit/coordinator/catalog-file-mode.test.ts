/**
 * The SQLite catalog holds the paging key and every volume's metadata: a new file is the coordinator's
 * only (0600), whatever the process umask and however open the directory it is made in.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";

describe("the SQLite catalog file", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-catalog-mode-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("is made 0600 under a umask of 022 in a 0755 directory", () => {
    const open = path.join(dir, "open");
    mkdirSync(open, { mode: 0o755 });
    const file = path.join(open, "catalog.sqlite");
    const before = process.umask(0o022);
    try {
      const c = new SqliteCatalog(file);
      c.close();
    } finally {
      process.umask(before);
    }
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });
});
