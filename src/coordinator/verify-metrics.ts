/**
 * Verification metrics. `rbdbackup_verify_runs_total{mode,result}` counts VERIFY jobs as they end:
 * result "ok" (everything matched), "corrupt" (a mismatch: the backup is CORRUPT now), "failed" (the
 * job failed or was cancelled: nothing was found either way). `rbdbackup_backups_corrupt{location_cluster}`
 * is computed at scrape time from the catalog (CORRUPT backups by the cluster that keeps them; 0 for a
 * known cluster with none, so an alert can tell "none" from "no data"). They register into the
 * coordinator's registry (CoordinatorMetrics' `extra`).
 */
import client from "prom-client";
import { VerifyResult } from "../gen/rbdbackup/v1/agent";
import { BackupStatus, JobState } from "../gen/rbdbackup/v1/backup_service";
import type { Catalog } from "./catalog/catalog";
import { type CollectErrors, collectErrorsCounter, guarded } from "./metric-guard";
import type { JobRecord } from "./model";
import { type Scheduler, verifyModeName } from "./scheduler";

/** The label values of a finished VERIFY job. */
export function verifyRunLabels(j: JobRecord): { mode: string; result: string } | null {
  if (j.operation.kind !== "verify") return null;
  const mode = verifyModeName(j.operation.mode);
  if (j.state !== JobState.JOB_STATE_SUCCEEDED || !j.result) return { mode, result: "failed" };
  return { mode, result: VerifyResult.fromJSON(j.result).ok ? "ok" : "corrupt" };
}

export class VerifyMetrics {
  readonly runs = new client.Counter({
    name: "rbdbackup_verify_runs_total",
    help: "VERIFY jobs that ended, by mode (metadata, sample, full, source) and result (ok, corrupt, failed).",
    labelNames: ["mode", "result"],
    registers: [],
  });
  readonly corrupt: client.Gauge;

  constructor(
    catalog: Catalog,
    scheduler: Pick<Scheduler, "on">,
    leading: () => boolean = () => true,
    /** Where a failed catalog read is counted (metric-guard.ts; the coordinator's shared counter). */
    errors: CollectErrors = collectErrorsCounter(),
  ) {
    this.corrupt = new client.Gauge({
      name: "rbdbackup_backups_corrupt",
      help: "Backups a verification found CORRUPT (kept until deleted), by the cluster that keeps them.",
      labelNames: ["location_cluster"],
      registers: [],
      // A failed catalog read: no series this scrape (counted), not a failed scrape.
      collect: guarded("rbdbackup_backups_corrupt", errors, (g) => {
        if (!leading()) return; // a standby's copy would page once per coordinator
        for (const a of catalog.listAgents()) g.labels(a.clusterName).set(0);
        let token = "";
        do {
          const page = catalog.listBackups({ statuses: [BackupStatus.BACKUP_STATUS_CORRUPT] }, 1000, token);
          for (const b of page.items) g.labels(b.location?.cluster ?? "").inc();
          token = page.next;
        } while (token);
      }),
    });
    for (const mode of ["metadata", "sample", "full", "source"])
      for (const result of ["ok", "corrupt", "failed"]) this.runs.labels(mode, result).inc(0);
    scheduler.on("finished", (j) => {
      const l = verifyRunLabels(j);
      if (l) this.runs.labels(l.mode, l.result).inc();
    });
  }

  all(): client.Metric[] {
    return [this.runs, this.corrupt];
  }
}
