/**
 * Opens the catalog the configuration names: PostgreSQL when `catalog.url` is set (several coordinators
 * may share it), else the SQLite file at `catalog.path` (one coordinator). A connection string that is
 * not a postgresql:// URL is refused here (INVALID_ARGUMENT, before any connection); an unreachable
 * server or a database at a newer schema version fails the PgCatalog constructor — either way the
 * coordinator does not start (main.ts: exit code 2).
 */
import { AppError, Status } from "../../common/errors";
import type { Catalog } from "./catalog";
import { PgCatalog } from "./pg/catalog";
import { SqliteCatalog } from "./sqlite";

export interface CatalogSettings {
  /** The SQLite file (used when url is ""). */
  path: string;
  /** postgresql://… connection string; "" = SQLite. */
  url?: string;
  /** Deadline of one PostgreSQL catalog call, ms. */
  statementTimeoutMs?: number;
}

export function openCatalog(cfg: CatalogSettings): Catalog {
  if (!cfg.url) return new SqliteCatalog(cfg.path);
  let u: URL | undefined;
  try {
    u = new URL(cfg.url);
  } catch {
    u = undefined;
  }
  if (!u || !/^postgres(ql)?:$/.test(u.protocol) || !u.pathname.replace(/^\//, ""))
    throw new AppError(
      Status.INVALID_ARGUMENT,
      "catalog.url must be a connection string postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
    );
  return new PgCatalog({ url: cfg.url, statementTimeoutMs: cfg.statementTimeoutMs });
}
