/**
 * The catalog conformance suite: every case file, each `(open) => void` declaring node:test suites.
 * Run against SQLite (test/unit/catalog/conformance-sqlite.test.ts) and PostgreSQL
 * (test/integration/catalog/conformance-postgres.test.ts); a case must pass on both.
 */
import { available } from "./available";
import { listings } from "./listings";
import { policies } from "./policies";
import type { OpenCatalog } from "./records";
import { recordsCrud } from "./records-crud";
import { transactions } from "./transactions";

export type { OpenCatalog };

export const CATALOG_CASES: Array<(open: OpenCatalog) => void> = [
  recordsCrud,
  transactions,
  listings,
  available,
  policies,
  // paging (q3-paging): keyset pages stable under inserts and deletes, tokens bound to the filter.
];
