/**
 * Admission: how a mutating request becomes a queued job, once.
 *
 *  - Idempotency: a request carries an optional key; the job stores the key and a fingerprint (hash)
 *    of the request without it. The same key again returns the existing job; the same key with a
 *    different request is ALREADY_EXISTS naming that job. Two concurrent requests with one key: the
 *    catalog's UNIQUE constraint picks the winner and the loser gets the winner's job.
 *  - A job is built (jobs/new-job.ts) in its initial state (QUEUED, no attempt yet) and inserted in one transaction
 *    with whatever the request writes besides (a new backup record, a backup marked DELETING).
 */
import { alreadyExists, invalidArgument, notFound } from "../../common/errors";
import { type Job, JobKind } from "../../gen/rbdbackup/v1/backup_service";
import { isUniqueViolation, type JobSpec, newJobRecord, RUNNER_KEY_PREFIXES } from "../jobs/new-job";
import { type JobRecord, volumeLabel } from "../model";
import { locksConflict } from "../scheduler";
import { jobView } from "../views";

/** Job construction moved to ../jobs/new-job.ts; re-exported for the handlers that import it from here. */
export { fingerprint, isUniqueViolation, type JobSpec, sortedMeta } from "../jobs/new-job";

import type { ApiDeps } from "./deps";

export class Admission {
  constructor(private readonly deps: ApiDeps) {}

  /** The public view of a job, with its live progress. */
  view(j: JobRecord): Job {
    return jobView(j, this.deps.catalog, this.deps.scheduler.progress.get(j.id));
  }

  /** NOT_FOUND (naming the field) for a cluster no agent has ever registered for. */
  knownCluster(name: string, field: string): void {
    if (!this.deps.catalog.listAgents().some((a) => a.clusterName === name)) {
      throw notFound(`${field}: cluster ${name} is unknown (no agent of it has ever registered with this coordinator)`);
    }
  }

  /** The job an idempotency key already names, or an error when the key was used for another request. */
  replay(key: string, fp: string): JobRecord | undefined {
    if (!key) return undefined;
    // The policy runner's keys (slots, retention deletes) are predictable: a caller could pre-claim one
    // and have a policy run adopt its job, or keep retention from ever deleting a backup.
    const reserved = RUNNER_KEY_PREFIXES.find((p) => key.startsWith(p));
    if (reserved) throw invalidArgument(`idempotency_key may not start with "${reserved}": policy runs use those`);
    const j = this.deps.catalog.jobByIdempotencyKey(key);
    if (j && j.fingerprint !== fp) {
      // The job is not named: keys are one namespace, and a scoped client may not see whose job it is.
      throw alreadyExists(`idempotency_key "${key}" was used for a different request: give each request its own key`);
    }
    return j;
  }

  /** A job not yet finished that holds a lock excluding one of these (scheduler/jobs.ts: shared locks coexist). */
  activeHolder(locks: string[]): JobRecord | undefined {
    return this.deps.catalog.activeJobs().find((j) => j.locks.some((k) => locks.some((l) => locksConflict(k, l))));
  }

  newJob(spec: JobSpec): JobRecord {
    return newJobRecord(spec, this.deps.maxAttempts);
  }

  /** Inserts in one transaction; a concurrent request with the same idempotency key wins the race. */
  submit(job: JobRecord, write: () => void = () => {}): Job {
    const { catalog, log, scheduler } = this.deps;
    try {
      catalog.transaction(() => {
        write();
        catalog.insertJob(job);
      });
    } catch (e) {
      const other = job.idempotencyKey && isUniqueViolation(e) && this.replay(job.idempotencyKey, job.fingerprint);
      if (other) return this.view(other);
      throw e;
    }
    log.info("job queued", {
      job: job.id,
      kind: JobKind[job.kind],
      backup: job.backupId,
      volume: volumeLabel(job.volume),
    });
    scheduler.kick();
    return this.view(job);
  }
}
