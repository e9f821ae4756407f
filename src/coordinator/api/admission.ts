/**
 * Admission: how a mutating request becomes a queued job, once.
 *
 *  - Idempotency: a request carries an optional key; the job stores the key and a fingerprint (hash)
 *    of the request without it. The same key again returns the existing job; the same key with a
 *    different request is ALREADY_EXISTS naming that job. Two concurrent requests with one key: the
 *    catalog's UNIQUE constraint picks the winner and the loser gets the winner's job.
 *  - A job is built here in its initial state (QUEUED, no attempt yet) and inserted in one transaction
 *    with whatever the request writes besides (a new backup record, a backup marked DELETING).
 */
import { createHash, randomUUID } from "node:crypto";
import { alreadyExists, notFound } from "../../common/errors";
import { type Job, JobKind, JobState } from "../../gen/rbdbackup/v1/backup_service";
import { type JobOperation, type JobRecord, volumeLabel } from "../model";
import { jobView } from "../views";
import type { ApiDeps } from "./deps";

/** Hash of a request (as JSON, idempotency key left out) under a kind, so equal requests match. */
export function fingerprint(kind: string, msg: unknown): string {
  return createHash("sha256").update(kind).update(JSON.stringify(msg)).digest("hex");
}

/** A map with its keys in order, so that equal maps have equal fingerprints. */
export function sortedMeta(m: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(m).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

export const isUniqueViolation = (e: unknown): boolean =>
  typeof (e as { code?: string })?.code === "string" && (e as { code: string }).code.startsWith("SQLITE_CONSTRAINT");

/** What a new job is; the rest of its record starts empty. */
export interface JobSpec {
  kind: JobKind;
  backupId: string;
  volume: JobRecord["volume"];
  operation: JobOperation;
  idempotencyKey: string;
  fingerprint: string;
  locks: string[];
  /** The cluster whose agent runs it, and the other cluster of a transfer ("" = none). */
  execCluster: string;
  peerCluster: string;
}

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
    const j = this.deps.catalog.jobByIdempotencyKey(key);
    if (j && j.fingerprint !== fp) {
      throw alreadyExists(`idempotency_key "${key}" was used for a different request (job ${j.id})`);
    }
    return j;
  }

  /** A job not yet finished that holds one of these locks. */
  activeHolder(locks: string[]): JobRecord | undefined {
    return this.deps.catalog.activeJobs().find((j) => j.locks.some((k) => locks.includes(k)));
  }

  newJob(spec: JobSpec): JobRecord {
    return {
      ...spec,
      id: randomUUID(),
      state: JobState.JOB_STATE_QUEUED,
      attempts: 0,
      maxAttempts: this.deps.maxAttempts,
      errorCode: "",
      errorMessage: "",
      agentId: "",
      waitingReason: "queued",
      createdAt: Date.now(),
      startedAt: 0,
      finishedAt: 0,
      nextAttemptAt: 0,
      lease: null,
      cancelRequested: false,
      result: null,
      warnings: [],
      fence: [],
    };
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
