/**
 * What one call of the PostgreSQL catalog costs through its sync bridge (catalog/pg/bridge.ts), on
 * loopback: the time the caller's event loop is blocked, p50/p99, for a point read (getBackup), a
 * listing page (listBackups, 50), an unfenced and a fenced write (insertJob; fenced = BEGIN, lease
 * check, INSERT, COMMIT in one trip), a 3-write transaction — next to the same point read on SQLite
 * (in memory) and a bare async `pg` query (the floor without the bridge).
 *   npm run build:ts && RBDBACKUP_TEST_PG_URL=postgresql://…/postgres node dist/test/bench/pg-bridge.js [--calls 5000]
 */
import { Client } from "pg";
import { PgCatalog } from "../../src/coordinator/catalog/pg/catalog";
import { SqliteCatalog } from "../../src/coordinator/catalog/sqlite";
import { backup, job, T0, vol } from "../helpers/catalog-cases/records";
import { freshDatabase } from "../helpers/postgres";
import { arg } from "./measure";

const calls = Number(arg("calls", "5000"));

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number;
}

function time(name: string, n: number, f: (i: number) => void): void {
  for (let i = 0; i < Math.min(200, n); i++) f(i); // warm-up
  const us: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    f(i);
    us.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  console.log(
    `${name.padEnd(44)} p50 ${pct(us, 50).toFixed(0).padStart(6)} µs   p99 ${pct(us, 99).toFixed(0).padStart(6)} µs`,
  );
}

async function main(): Promise<void> {
  const db = await freshDatabase();
  const pg = new PgCatalog({ url: db.url });
  const lite = new SqliteCatalog(":memory:");
  try {
    const ids: string[] = [];
    for (let i = 0; i < 1000; i++) {
      const b = backup(vol(`v${i % 100}`), T0 + i * 1000);
      ids.push(b.id);
      pg.insertBackup(b);
      lite.insertBackup(b);
    }
    const id = (i: number) => ids[i % ids.length] as string;
    console.log(`${calls} calls each, 1,000 backups, loopback PostgreSQL`);
    time("sqlite getBackup (in memory)", calls, (i) => lite.getBackup(id(i)));
    time("pg getBackup", calls, (i) => pg.getBackup(id(i)));
    time("pg listBackups (page of 50, by volume)", calls / 5, (i) =>
      pg.listBackups({ cluster: "a", pool: "rbd", image: `v${i % 100}` }, 50, ""),
    );
    time("pg listBackups (page of 50, all)", calls / 5, () => pg.listBackups({}, 50, ""));
    time("pg insertJob (unfenced, autocommit)", calls / 5, (i) => pg.insertJob(job(T0 + i)));
    pg.leadership.tryAcquire({ id: "bench", address: "127.0.0.1:1", instance: "bench" }, 600_000);
    time("pg insertJob (fenced: BEGIN, check, INSERT, COMMIT)", calls / 5, (i) => pg.insertJob(job(T0 + i)));
    time("pg transaction (3 writes, fenced)", calls / 10, (i) =>
      pg.transaction(() => {
        const j = job(T0 + i);
        pg.insertJob(j);
        pg.updateJob({ ...j, attempts: 1 });
        pg.updateJob({ ...j, attempts: 2 });
      }),
    );
    const raw = new Client({ connectionString: db.url });
    await raw.connect();
    const us: number[] = [];
    for (let i = 0; i < calls; i++) {
      const t = process.hrtime.bigint();
      await raw.query("SELECT doc FROM backups WHERE id = $1", [id(i)]);
      us.push(Number(process.hrtime.bigint() - t) / 1000);
    }
    await raw.end();
    console.log(
      `${"bare async pg query (no bridge; loop not blocked)".padEnd(44)} p50 ${pct(us, 50).toFixed(0).padStart(6)} µs   p99 ${pct(us, 99).toFixed(0).padStart(6)} µs`,
    );
  } finally {
    pg.close();
    lite.close();
    await db.drop();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
