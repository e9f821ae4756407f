/**
 * Coordinator configuration: a JSON file (see deploy/examples/coordinator.json; every field is in
 * deploy/schema/coordinator.schema.json) and flags that override it. The schema (config-schema.ts)
 * checks every field and fills in the defaults; this file adds the rules that span fields.
 */
import { checkedTls } from "../common/config/fields";
import { configFailure, loadConfig } from "../common/config/load";
import type { TlsConfig } from "../common/tls";
import { CoordinatorConfigSchema, type CoordinatorFile, coordinatorFlags } from "./config-schema";

export type CoordinatorConfig = Omit<CoordinatorFile, "auth" | "catalog" | "tls"> & {
  tls: TlsConfig;
  /** auth.tokensFile: file of API bearer tokens; "" = API clients need a client certificate. */
  tokensFile: string;
  /** auth.scopesFile: the API clients' scopes (scopes.ts); "" = nobody is scoped. */
  scopesFile: string;
  /** auth.revokedCertificatesFile: SHA-256 fingerprints of refused certificates; "" = none. */
  revokedCertificatesFile: string;
  /** auth.auditLog: file the audit lines are appended to; "" = the log only. */
  auditLog: string;
  /** catalog.path: the SQLite catalog file. */
  catalogPath: string;
  /** catalog.url: PostgreSQL connection string ("" = SQLite); catalog.statementTimeoutMs. */
  catalogUrl: string;
  catalogStatementTimeoutMs: number;
  /** catalog.historyDays: finished jobs and DELETED/FAILED backup records kept this long (history.ts); 0 = for good. */
  catalogHistoryDays: number;
};

const fail = configFailure("coordinator");

export function parseCoordinatorConfig(argv: string[]): CoordinatorConfig {
  const { auth, catalog, tls, ...rest } = loadConfig(
    { who: "coordinator", schema: CoordinatorConfigSchema, flags: coordinatorFlags },
    argv,
  );
  if (rest.scheduler.heartbeatIntervalMs * 2 > rest.scheduler.leaseTtlMs)
    fail("scheduler.leaseTtlMs must be at least twice scheduler.heartbeatIntervalMs");
  if (rest.ha.renewMs * 3 > rest.ha.leaseSeconds * 1000)
    fail(
      `ha.renewMs (${rest.ha.renewMs} ms) must be at most a third of ha.leaseSeconds (${rest.ha.leaseSeconds} s): two renewals may be missed before the lease lapses`,
    );
  // A catalog call blocks the coordinator's thread up to its deadline, the leader's lease renewal with
  // it: one that may outlast the lease lets a standby take over while the leader cannot step down.
  if (catalog.url && catalog.statementTimeoutMs * 2 > rest.ha.leaseSeconds * 1000)
    fail(
      `catalog.statementTimeoutMs (${catalog.statementTimeoutMs} ms) must be at most half of ha.leaseSeconds (${rest.ha.leaseSeconds} s) with a PostgreSQL catalog: a hung call blocks the leader's lease renewal`,
    );
  return {
    ...rest,
    tls: checkedTls(tls, fail),
    tokensFile: auth.tokensFile,
    scopesFile: auth.scopesFile,
    revokedCertificatesFile: auth.revokedCertificatesFile,
    auditLog: auth.auditLog,
    catalogPath: catalog.path,
    catalogUrl: catalog.url,
    catalogStatementTimeoutMs: catalog.statementTimeoutMs,
    catalogHistoryDays: catalog.historyDays,
  };
}
