/**
 * What a new leader's recovery costs on the PostgreSQL catalog (scheduler.ts start(): every RUNNING
 * job's lease graced, before the lease's next renewal): `--jobs` (200) job updates, each its own fenced
 * write (as before 2026-12-07) against all of them in one transaction (now), alternating, `--rounds` (3).
 * Figures only. A fresh database on RBDBACKUP_TEST_PG_URL (deploy/lab/postgres.sh up DIR PORT prints
 * one), dropped after; this process holds the leader lease, so every write outside a transaction is
 * fenced as the leader's are.
 *
 *   RBDBACKUP_TEST_PG_URL=postgresql://… node dist/test/bench/term-recovery.js [--jobs 200] [--rounds 3]
 */
import { performance } from "node:perf_hooks";
import { PgCatalog } from "../../src/coordinator/catalog/pg/catalog";
import { JobState } from "../../src/gen/rbdbackup/v1/backup_service";
import { job, T0 } from "../helpers/catalog-cases/records";
import { freshDatabase } from "../helpers/postgres";
import { arg, median } from "./measure";

async function main(): Promise<void> {
  const n = Number(arg("jobs", "200"));
  const rounds = Number(arg("rounds", "3"));
  const db = await freshDatabase();
  const c = new PgCatalog({ url: db.url, statementTimeoutMs: 10_000 });
  try {
    const granted = c.leadership.tryAcquire({ id: "bench", address: "127.0.0.1:1", instance: "bench-1" }, 600_000);
    if (c.leadership.fence?.token !== granted.token) throw new Error("the bench did not get the leader lease");
    const jobs = Array.from({ length: n }, (_, i) =>
      job(T0 + i, {
        state: JobState.JOB_STATE_RUNNING,
        attempts: 1,
        lease: { token: "t", attempt: 1, agentId: "a", expiresAt: T0 },
      }),
    );
    for (const j of jobs) c.insertJob(j);
    const grace = () => {
      for (const j of jobs) {
        if (j.lease) j.lease.expiresAt++;
        c.updateJob(j);
      }
    };
    const each: number[] = [];
    const one: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const order: Array<[number[], () => void]> = [
        [each, grace],
        [one, () => c.transaction(grace)],
      ];
      if (r % 2) order.reverse();
      for (const [times, run] of order) {
        const t = performance.now();
        run();
        times.push(performance.now() - t);
      }
      console.log(
        `round ${r + 1}: each its own write ${each.at(-1)?.toFixed(0)} ms, one transaction ${one.at(-1)?.toFixed(0)} ms`,
      );
    }
    console.log(
      `${n} running jobs' leases graced: each its own fenced write ${median(each).toFixed(0)} ms (median), one transaction ${median(one).toFixed(0)} ms: ${(median(each) / median(one)).toFixed(1)}×`,
    );
  } finally {
    c.close();
    await db.drop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
