/**
 * The catalog conformance suite (test/helpers/catalog-cases) on SQLite, in memory: no Ceph, no files.
 */
import { describe } from "node:test";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import { CATALOG_CASES } from "../../helpers/catalog-cases";

describe("catalog conformance: SQLite", () => {
  for (const c of CATALOG_CASES) c(() => new SqliteCatalog(":memory:"));
});
