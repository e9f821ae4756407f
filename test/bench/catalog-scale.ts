/**
 * Catalog scale bench (issue 15, Scale): a catalog of `--backups` (1,000,000) backups over `--volumes`
 * (100,000) volumes and a job per `--jobs-every` (10) backups, on each store of `--stores`. Loaded through
 * the store's own insert path (insertBackup / insertJob) inside transactions of `--batch` rows — no bulk
 * SQL, so the load time is what the coordinator itself would take. Then, through the Catalog interface
 * (what the API handlers call; no gRPC): ListBackups by volume, by status, by cluster and unfiltered (the
 * API's default: all but DELETED), first pages and deep pages (following the keyset tokens `--depth` (50)
 * pages deep), ListJobs by state, GetBackup and GetJob — p50/p99 of each; the catalog's size on disk.
 * Figures only, no assertions. Aims: listings < 50 ms p99, gets < 5 ms p99.
 *
 * The records: backup i of volume i % volumes, created one second apart (so every volume's backups
 * interleave with all the others'); 85 % AVAILABLE, 10 % DELETED, 5 % FAILED; volumes on two clusters.
 * PostgreSQL: a fresh database on RBDBACKUP_TEST_PG_URL (default: the dev server of COMMON15), dropped after.
 *
 *   node dist/test/bench/catalog-scale.js [--backups 1000000] [--volumes 100000] [--stores sqlite,postgresql]
 *        [--pg-backups N (default: --backups)] [--batch 5000] [--depth 50] [--samples 300] [--keep-going]
 */
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { Client } from "pg";
import type { Catalog } from "../../src/coordinator/catalog/catalog";
import { PgCatalog } from "../../src/coordinator/catalog/pg/catalog";
import { SqliteCatalog } from "../../src/coordinator/catalog/sqlite";
import type { BackupFilter, JobFilter } from "../../src/coordinator/model";
import { BackupStatus, JobState } from "../../src/gen/rbdbackup/v1/backup_service";
import { pagingBackup, pagingJob } from "../helpers/catalog-cases/paging";
import { arg } from "./measure";

const BACKUPS = Number(arg("backups", "1000000"));
const PG_BACKUPS = Number(arg("pg-backups", String(BACKUPS)));
const VOLUMES = Number(arg("volumes", "100000"));
const JOBS_EVERY = Number(arg("jobs-every", "10"));
const STORES = arg("stores", "sqlite,postgresql").split(",");
const BATCH = Number(arg("batch", "5000"));
const DEPTH = Number(arg("depth", "50"));
const SAMPLES = Number(arg("samples", "300"));
const PG_ADMIN = process.env.RBDBACKUP_TEST_PG_URL || "postgresql://rbdbackup@127.0.0.1:55432/postgres";
const PAGE = 100;
const T0 = Date.UTC(2024, 0, 1);

const clusterOf = (v: number) => (v % 2 ? "site-a" : "site-c");
const statusOf = (i: number) =>
  i % 20 < 17
    ? BackupStatus.BACKUP_STATUS_AVAILABLE
    : i % 20 < 19
      ? BackupStatus.BACKUP_STATUS_DELETED
      : BackupStatus.BACKUP_STATUS_FAILED;

function pct(xs: number[], p: number): number {
  if (!xs.length) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number;
}

interface Store {
  name: string;
  catalog: Catalog;
  size(): Promise<number>;
  drop(): Promise<void>;
}

async function sqliteStore(): Promise<Store> {
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-catalog-scale-"));
  const file = path.join(dir, "catalog.sqlite");
  const catalog = new SqliteCatalog(file);
  const sizeOf = (f: string) => {
    try {
      return statSync(f).size;
    } catch {
      return 0;
    }
  };
  return {
    name: "sqlite",
    catalog,
    size: async () => sizeOf(file) + sizeOf(`${file}-wal`),
    drop: async () => {
      catalog.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function admin<T>(f: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client({ connectionString: PG_ADMIN, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    return await f(c);
  } finally {
    await c.end();
  }
}

async function pgStore(): Promise<Store> {
  const name = `rbdbackup_bench_${randomBytes(6).toString("hex")}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  const url = new URL(PG_ADMIN);
  url.pathname = `/${name}`;
  const catalog = new PgCatalog({ url: url.toString(), statementTimeoutMs: 60_000 });
  return {
    name: "postgresql",
    catalog,
    size: () => admin(async (c) => Number((await c.query("SELECT pg_database_size($1) AS n", [name])).rows[0].n)),
    drop: async () => {
      catalog.close();
      await admin(async (c) => {
        await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [name]);
        await c.query(`DROP DATABASE IF EXISTS ${name}`);
      });
    },
  };
}

/** Loads `n` backups (and a job per JOBS_EVERY) through insertBackup/insertJob, BATCH per transaction. */
function load(c: Catalog, n: number): { seconds: number; backupIds: string[]; jobIds: string[] } {
  const backupIds: string[] = [];
  const jobIds: string[] = [];
  const t0 = performance.now();
  for (let start = 0; start < n; start += BATCH) {
    c.transaction(() => {
      for (let i = start; i < Math.min(n, start + BATCH); i++) {
        const v = i % VOLUMES;
        const b = pagingBackup(T0 + i * 1000, {
          volume: { cluster: clusterOf(v), pool: "rbd", namespace: "", image: `volume-${v}` },
          volumeId: `cinder-${v}`,
          volumeMetadata: { "display-name": `volume ${v}` },
          status: statusOf(i),
          snapshot: `backup.x.snap.${i}`,
          completedAt: new Date(T0 + i * 1000 + 60_000),
        });
        c.insertBackup(b);
        backupIds.push(b.id);
        if (i % JOBS_EVERY === 0) {
          const j = pagingJob(T0 + i * 1000, {
            backupId: b.id,
            state: i % 1000 === 0 ? JobState.JOB_STATE_FAILED : JobState.JOB_STATE_SUCCEEDED,
            volume: b.volume,
          });
          c.insertJob(j);
          jobIds.push(j.id);
        }
      }
    });
    if ((start / BATCH) % 20 === 19)
      console.error(`  ${start + BATCH} rows, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  }
  return { seconds: (performance.now() - t0) / 1000, backupIds, jobIds };
}

const timed = (xs: number[], f: () => void) => {
  const s = performance.now();
  f();
  xs.push(performance.now() - s);
};

type Row = [string, number[]];

/** First pages (SAMPLES of them) and deep pages of one listing (`walks` walks following tokens DEPTH pages deep). */
function paged(label: string, list: (token: string) => { next: string }, walks: number): Row[] {
  const first: number[] = [];
  const deep: number[] = [];
  for (let i = 0; i < SAMPLES; i++) timed(first, () => list(""));
  for (let w = 0; w < walks; w++) {
    let token = list("").next;
    for (let p = 1; p < DEPTH && token; p++) {
      timed(deep, () => {
        token = list(token).next;
      });
    }
  }
  return [
    [`${label}, first page`, first],
    [`${label}, pages 2-${DEPTH}`, deep],
  ];
}

function measure(c: Catalog, ids: { backupIds: string[]; jobIds: string[] }): Row[] {
  const rnd = (n: number) => Math.floor(Math.random() * n);
  const rows: Row[] = [];
  const byVolume: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const v = rnd(VOLUMES);
    const f: BackupFilter = { cluster: clusterOf(v), pool: "rbd", image: `volume-${v}`, excludeDeleted: true };
    timed(byVolume, () => c.listBackups(f, PAGE, ""));
  }
  rows.push(["ListBackups by volume, first page", byVolume]);
  const backups = (f: BackupFilter) => (t: string) => c.listBackups(f, PAGE, t);
  const jobs = (f: JobFilter) => (t: string) => c.listJobs(f, PAGE, t);
  const walks = Math.max(2, Math.round(SAMPLES / 50));
  rows.push(...paged("ListBackups by status AVAILABLE", backups({ statuses: [2] }), walks));
  rows.push(...paged("ListBackups by status FAILED", backups({ statuses: [3] }), walks));
  rows.push(...paged("ListBackups by cluster", backups({ cluster: "site-a", excludeDeleted: true }), walks));
  rows.push(...paged("ListBackups unfiltered (all but DELETED)", backups({ excludeDeleted: true }), walks));
  rows.push(...paged("ListJobs by state SUCCEEDED", jobs({ state: JobState.JOB_STATE_SUCCEEDED }), walks));
  const getB: number[] = [];
  const getJ: number[] = [];
  for (let i = 0; i < SAMPLES * 10; i++) {
    const b = ids.backupIds[rnd(ids.backupIds.length)] as string;
    timed(getB, () => c.getBackup(b));
    const j = ids.jobIds[rnd(ids.jobIds.length)] as string;
    timed(getJ, () => c.getJob(j));
  }
  // The machine's own noise: 0.1 ms of CPU work, timed the same way (on a shared host its p99 shows how
  // long this process waits for a core — the floor under every p99 above).
  const spin: number[] = [];
  for (let i = 0; i < SAMPLES * 10; i++)
    timed(spin, () => {
      const end = performance.now() + 0.1;
      while (performance.now() < end);
    });
  rows.push(["baseline: 0.1 ms of CPU", spin]);
  // A miss costs an index probe too.
  timed(getB, () => c.getBackup(randomUUID()));
  rows.push(["GetBackup", getB], ["GetJob", getJ]);
  return rows;
}

interface Result {
  store: string;
  backups: number;
  jobs: number;
  loadSeconds: number;
  sizeBytes: number;
  rows: Row[];
}

const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "-");

function report(results: Result[]): void {
  console.log(
    `\ncatalog-scale: ${VOLUMES} volumes, page size ${PAGE}, deep = following tokens up to ${DEPTH} pages (Catalog interface, no gRPC)\n`,
  );
  for (const r of results) {
    const mib = r.sizeBytes / 2 ** 20;
    console.log(
      `${r.store}: ${r.backups} backups + ${r.jobs} jobs loaded in ${r.loadSeconds.toFixed(0)} s (${Math.round((r.backups + r.jobs) / r.loadSeconds)} rows/s); size ${mib.toFixed(0)} MiB`,
    );
    const w = Math.max(...r.rows.map(([k]) => k.length));
    console.log(
      `  ${"".padEnd(w)}  ${"n".padStart(6)}  ${"p50 ms".padStart(8)}  ${"p99 ms".padStart(8)}  ${"max ms".padStart(8)}`,
    );
    for (const [k, xs] of r.rows)
      console.log(
        `  ${k.padEnd(w)}  ${String(xs.length).padStart(6)}  ${f2(pct(xs, 50)).padStart(8)}  ${f2(pct(xs, 99)).padStart(8)}  ${f2(Math.max(...xs)).padStart(8)}`,
      );
    console.log("");
  }
  console.log("Aims: listings < 50 ms p99, GetBackup/GetJob < 5 ms p99.");
}

async function main(): Promise<void> {
  const results: Result[] = [];
  for (const kind of STORES) {
    const n = kind === "postgresql" ? PG_BACKUPS : BACKUPS;
    console.error(`catalog-scale: ${kind}, loading ${n} backups…`);
    const store = kind === "postgresql" ? await pgStore() : await sqliteStore();
    try {
      const ids = load(store.catalog, n);
      console.error(`catalog-scale: ${kind} loaded in ${ids.seconds.toFixed(0)} s; measuring…`);
      const rows = measure(store.catalog, ids);
      results.push({
        store: kind,
        backups: n,
        jobs: ids.jobIds.length,
        loadSeconds: ids.seconds,
        sizeBytes: await store.size(),
        rows,
      });
    } finally {
      await store.drop();
    }
  }
  report(results);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
