/** Reads and cancellation of jobs: GetJob, ListJobs, CancelJob (WatchJob is watch.ts). */
import { failedPrecondition, notFound } from "../../common/errors";
import {
  type CancelJobRequest,
  type GetJobRequest,
  Job,
  JobState,
  type ListJobsRequest,
  type ListJobsResponse,
} from "../../gen/rbdbackup/v1/backup_service";
import type { JobRecord } from "../model";
import { isFinal } from "../scheduler";
import * as v from "../validate";
import type { Admission } from "./admission";
import type { ApiDeps } from "./deps";
import { boundedPage, encodedSize } from "./paging";

export function getJob(deps: ApiDeps, adm: Admission, req: GetJobRequest): Job {
  v.uuid(req.jobId, "job_id");
  const j = deps.catalog.getJob(req.jobId);
  if (!j) throw notFound(`job ${req.jobId} not found`);
  return adm.view(j);
}

export function listJobs(deps: ApiDeps, adm: Admission, req: ListJobsRequest): ListJobsResponse {
  v.jobState(req.state);
  v.jobKind(req.kind);
  if (req.backupId) v.uuid(req.backupId, "backup_id");
  const size = v.pageSize(req.pageSize);
  const filter = { state: req.state, kind: req.kind, backupId: req.backupId };
  // Each job's view once: sized for the page, then answered (a view reads its backup and progress).
  const views = new Map<string, Job>();
  const view = (j: JobRecord): Job => {
    const known = views.get(j.id);
    if (known) return known;
    const x = adm.view(j);
    views.set(j.id, x);
    return x;
  };
  const p = boundedPage(
    (n) => deps.catalog.listJobs(filter, n, req.pageToken),
    size,
    (j) => encodedSize(Job)(view(j)),
  );
  return { jobs: p.items.map(view), nextPageToken: p.next };
}

/** A queued job ends CANCELLED at once; a running one is asked to stop and ends when its agent reports. */
export function cancelJob(deps: ApiDeps, adm: Admission, req: CancelJobRequest): Job {
  v.uuid(req.jobId, "job_id");
  const j = deps.catalog.getJob(req.jobId);
  if (!j) throw notFound(`job ${req.jobId} not found`);
  if (isFinal(j.state)) throw failedPrecondition(`job ${j.id} has already finished (${JobState[j.state]})`);
  return adm.view(deps.scheduler.cancel(j));
}
