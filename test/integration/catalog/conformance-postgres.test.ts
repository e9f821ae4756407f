/**
 * The catalog conformance suite (test/helpers/catalog-cases) on PostgreSQL: each case gets a fresh
 * database (test/helpers/postgres.ts), dropped after it. Skipped without RBDBACKUP_TEST_PG_URL.
 */
import { afterEach, beforeEach, describe } from "node:test";
import { PgCatalog } from "../../../src/coordinator/catalog/pg/catalog";
import { CATALOG_CASES } from "../../helpers/catalog-cases";
import { freshDatabase, pgSkip, type TestDatabase } from "../../helpers/postgres";

describe("catalog conformance: PostgreSQL", { skip: pgSkip }, () => {
  let db: TestDatabase | undefined;
  beforeEach(async () => {
    db = await freshDatabase();
  });
  afterEach(async () => {
    await db?.drop();
    db = undefined;
  });
  const open = () => {
    if (!db) throw new Error("no test database");
    return new PgCatalog({ url: db.url, statementTimeoutMs: 10_000 });
  };
  for (const c of CATALOG_CASES) c(open);
});
