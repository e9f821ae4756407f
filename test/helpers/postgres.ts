/**
 * A fresh PostgreSQL database per test, on the server the test command starts (deploy/lab/postgres.sh;
 * its admin URL in RBDBACKUP_TEST_PG_URL). `freshDatabase()` creates `rbdbackup_test_<random>` and
 * returns its URL and a `drop()` that removes it (connections to it are terminated first).
 * Tests that need PostgreSQL skip with a reason when RBDBACKUP_TEST_PG_URL is unset (a developer's
 * machine without it); the test command always sets it, so CI runs them.
 */
import { randomBytes } from "node:crypto";
import { Client } from "pg";

export const PG_ADMIN_URL = process.env.RBDBACKUP_TEST_PG_URL ?? "";

/** The reason a PostgreSQL test is skipped, or false when it can run. */
export const pgSkip: string | false = PG_ADMIN_URL ? false : "RBDBACKUP_TEST_PG_URL is not set (npm test sets it)";

export interface TestDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

async function admin<T>(f: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    return await f(c);
  } finally {
    await c.end();
  }
}

export async function freshDatabase(): Promise<TestDatabase> {
  if (!PG_ADMIN_URL) throw new Error("RBDBACKUP_TEST_PG_URL is not set");
  const name = `rbdbackup_test_${randomBytes(6).toString("hex")}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    drop: () =>
      admin(async (c) => {
        await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [name]);
        await c.query(`DROP DATABASE IF EXISTS ${name}`);
      }),
  };
}
