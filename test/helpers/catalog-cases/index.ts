/**
 * The catalog conformance suite: every case file, each `(open) => void` declaring node:test suites.
 * Run against SQLite (test/unit/catalog/conformance-sqlite.test.ts) and PostgreSQL
 * (test/integration/catalog/conformance-postgres.test.ts); a case must pass on both.
 */
import { activeJob } from "./active-job";
import { available } from "./available";
import { backupReads } from "./backup-reads";
import { history } from "./history";
import { listings } from "./listings";
import { pagingCases, policyPagingCases } from "./paging";
import { policies } from "./policies";
import type { OpenCatalog } from "./records";
import { recordsCrud } from "./records-crud";
import { transactions } from "./transactions";
import { transferOptions } from "./transfer-options";

export type { OpenCatalog };

export const CATALOG_CASES: Array<(open: OpenCatalog) => void> = [
  recordsCrud,
  transactions,
  listings,
  available,
  policies,
  // Keyset pages stable under inserts and deletes, tokens bound to the filter and the catalog (q3-paging).
  pagingCases,
  policyPagingCases,
  // TransferOptions on jobs and policies (r3-limits).
  transferOptions,
  // The active-job lookup lease reports, confirmations and the runner use (Catalog.activeJob).
  activeJob,
  // Fresh backup records, backups of a volume by status, retention's in-use pin (issue 13).
  backupReads,
  // History older than catalog.historyDays removed (history.ts).
  history,
];
