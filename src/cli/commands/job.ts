/** `rbdbackup job list|show|watch|cancel`: ListJobs, GetJob, WatchJob and CancelJob. */
import { Job, JobKind, JobState, type ListJobsRequest } from "../../gen/rbdbackup/v1/backup_service";
import { parseChoice, parseFlags, parseIntFlag, positionals } from "../args";
import { withConnection } from "../connection";
import { dispatch } from "../dispatch";
import { ExitCode } from "../exit-codes";
import { jobBlock, jobTable } from "../format";
import { note, print, printJson } from "../output";
import { fetchPages } from "../paging";
import { watchJob } from "../watch";

const states = {
  queued: JobState.JOB_STATE_QUEUED,
  running: JobState.JOB_STATE_RUNNING,
  succeeded: JobState.JOB_STATE_SUCCEEDED,
  failed: JobState.JOB_STATE_FAILED,
  cancelled: JobState.JOB_STATE_CANCELLED,
};

const kinds = {
  backup: JobKind.JOB_KIND_BACKUP,
  restore: JobKind.JOB_KIND_RESTORE,
  delete: JobKind.JOB_KIND_DELETE,
};

async function list(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    state: { type: "string" },
    kind: { type: "string" },
    backup: { type: "string" },
    limit: { type: "string" },
    "page-token": { type: "string" },
    all: { type: "boolean" },
  });
  positionals("job list", pos, []);
  const filter: Omit<ListJobsRequest, "pageToken"> = {
    state: parseChoice(values.state, "state", states) ?? JobState.JOB_STATE_UNSPECIFIED,
    kind: parseChoice(values.kind, "kind", kinds) ?? JobKind.JOB_KIND_UNSPECIFIED,
    backupId: values.backup ?? "",
    pageSize: parseIntFlag(values.limit, "limit", 1, 1000) ?? 0,
  };
  return withConnection(values, async (conn) => {
    const page = await fetchPages(
      async (pageToken) => {
        const r = await conn.call((o) => conn.client.listJobs({ ...filter, pageToken }, o));
        return { items: r.jobs, next: r.nextPageToken };
      },
      values["page-token"] ?? "",
      values.all === true,
    );
    if (values.json) {
      printJson({ jobs: page.items.map((j) => Job.toJSON(j)), nextPageToken: page.next });
    } else {
      print(jobTable(page.items));
      if (page.next) note(`more jobs: --page-token ${page.next} (or --all)`);
    }
    return ExitCode.Ok;
  });
}

async function show(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {});
  const [jobId = ""] = positionals("job show", pos, ["JOB_ID"]);
  return withConnection(values, async (conn) => {
    const job = await conn.call((o) => conn.client.getJob({ jobId }, o));
    if (values.json) printJson(Job.toJSON(job));
    else print(jobBlock(job));
    return ExitCode.Ok;
  });
}

async function watch(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {});
  const [jobId = ""] = positionals("job watch", pos, ["JOB_ID"]);
  return withConnection(values, (conn) => watchJob(conn, jobId, { json: values.json === true }));
}

async function cancel(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {});
  const [jobId = ""] = positionals("job cancel", pos, ["JOB_ID"]);
  return withConnection(values, async (conn) => {
    const job = await conn.call((o) => conn.client.cancelJob({ jobId }, o));
    if (values.json) printJson(Job.toJSON(job));
    else print(jobBlock(job));
    return ExitCode.Ok;
  });
}

export function jobCommand(argv: string[]): Promise<number> {
  return dispatch("job", { list, show, watch, cancel }, argv);
}
