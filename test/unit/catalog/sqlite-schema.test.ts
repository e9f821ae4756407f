/**
 * The SQLite catalog's schema version: a fresh file gets the code's; a version-1 file (before shared
 * backup locks) is brought to 2 with no table change; a file at a version this code does not know is
 * refused, untouched — as a coordinator built before shared locks refuses a version-2 file.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import Database from "better-sqlite3";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";

describe("SQLite catalog: schema version", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-sqlite-schema-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const version = (file: string) => {
    const db = new Database(file);
    try {
      return (db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: string }).value;
    } finally {
      db.close();
    }
  };
  const setVersion = (file: string, v: string) => {
    const db = new Database(file);
    db.prepare("UPDATE meta SET value = ? WHERE key = 'schema_version'").run(v);
    db.close();
  };

  it("fresh: 2; a version-1 file is brought to 2; an unknown version is refused", () => {
    const file = path.join(dir, "catalog.db");
    const c = new SqliteCatalog(file);
    assert.equal(c.schemaVersion, 2, "what status calls report");
    c.close();
    assert.equal(version(file), "2");
    setVersion(file, "1");
    new SqliteCatalog(file).close();
    assert.equal(version(file), "2", "upgraded in place");
    setVersion(file, "3");
    assert.throws(() => new SqliteCatalog(file), /has schema version 3; this coordinator knows 2/);
  });

  it("a newer file is refused before anything in it is created or written", () => {
    const file = path.join(dir, "newer.db");
    new SqliteCatalog(file).close();
    // What a newer release might have done: dropped a table and an index this code would make again.
    const db = new Database(file);
    db.exec("DROP TABLE clusters; DROP INDEX IF EXISTS protection_due");
    db.prepare("INSERT INTO agents (agent_id, cluster, doc) VALUES ('a1', 'site-a', ?)").run(
      JSON.stringify({ agentId: "a1", clusterName: "site-a", clusterFsid: "f-1" }),
    );
    db.prepare("UPDATE meta SET value = '3' WHERE key = 'schema_version'").run();
    const before = db.prepare("SELECT type, name FROM sqlite_master ORDER BY name").all();
    db.close();
    assert.throws(() => new SqliteCatalog(file), /has schema version 3; this coordinator knows 2/);
    const after = new Database(file);
    try {
      assert.deepEqual(after.prepare("SELECT type, name FROM sqlite_master ORDER BY name").all(), before);
    } finally {
      after.close();
    }
  });
});
