/**
 * Prepared statements, prepared once per SQL text and reused (better-sqlite3 statements are reusable;
 * preparing costs about as much as running a small query, and the runner and the metrics ask the same
 * questions for every protected volume). Bounded: texts that embed values (paging) cannot grow it
 * without limit.
 */
import type Database from "better-sqlite3";

const MAX_STATEMENTS = 256;

export function statementCache(db: Database.Database): (sql: string) => Database.Statement {
  const cache = new Map<string, Database.Statement>();
  return (sql) => {
    let s = cache.get(sql);
    if (!s) {
      if (cache.size >= MAX_STATEMENTS) cache.clear();
      s = db.prepare(sql);
      cache.set(sql, s);
    }
    return s;
  };
}
