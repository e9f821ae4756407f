/**
 * The catalog's parse cache: a read of the same document gets an equal record it may change freely
 * (nothing shared with the cache or other readers); a changed document is parsed afresh; bounded.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { deepCopy, ParseCache } from "../../../src/coordinator/catalog/parse-cache";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import { BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";
import { pagingBackup } from "../../helpers/catalog-cases/paging";

describe("ParseCache", () => {
  it("parses a document once; each read gets its own deep copy; a new text is parsed again; bounded", () => {
    let parses = 0;
    const cache = new ParseCache((doc: string) => {
      parses++;
      return JSON.parse(doc) as { a: number[]; d?: Date };
    }, 2);
    const one = cache.get("x", '{"a":[1]}');
    const two = cache.get("x", '{"a":[1]}');
    assert.equal(parses, 1);
    one.a.push(2);
    assert.deepEqual(two.a, [1], "copies share nothing");
    assert.deepEqual(cache.get("x", '{"a":[1]}').a, [1], "the cached parse is untouched");
    assert.deepEqual(cache.get("x", '{"a":[3]}').a, [3]);
    assert.equal(parses, 2);
    cache.get("y", "{}");
    cache.get("z", "{}");
    cache.get("x", '{"a":[3]}');
    assert.equal(parses, 5, "x was the least recently used of three in a cache of two");
    const d = new Date(5);
    const c = deepCopy({ d, b: new Uint8Array([1]) });
    assert.notEqual(c.d, d);
    assert.equal(c.d.getTime(), 5);
    assert.deepEqual(c.b, new Uint8Array([1]));
  });

  it("a backup read from the catalog, changed by its reader, is not changed for the next reader", () => {
    const cat = new SqliteCatalog(":memory:");
    try {
      const b = pagingBackup(Date.UTC(2026, 0, 1), { warnings: ["w"] });
      cat.insertBackup(b);
      const got = cat.getBackup(b.id);
      assert.ok(got);
      got.status = BackupStatus.BACKUP_STATUS_DELETING;
      got.warnings.push("x");
      (got.createdAt as Date).setTime(0);
      assert.deepEqual(cat.getBackup(b.id), b);
      assert.deepEqual(cat.listBackups({}, 10, "").items, [b]);
      cat.updateBackup(got);
      assert.equal(cat.getBackup(b.id)?.status, BackupStatus.BACKUP_STATUS_DELETING, "an update is read back");
    } finally {
      cat.close();
    }
  });
});
