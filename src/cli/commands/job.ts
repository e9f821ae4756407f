/** `rbdbackup job list|show|watch|cancel`: ListJobs, GetJob, WatchJob and CancelJob. */
import { Job, JobKind, JobState, type ListJobsRequest } from "../../gen/rbdbackup/v1/backup_service";
import { parseChoice, parseFlags, parseIntFlag, positionals } from "../args";
import { withConnection } from "../connection";
import { dispatch } from "../dispatch";
import { ExitCode } from "../exit-codes";
import { jobBlock, jobTable } from "../format";
import type { NounHelp } from "../help";
import { print, printJson } from "../output";
import { listPages } from "../paging";
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
  flatten: JobKind.JOB_KIND_FLATTEN,
  verify: JobKind.JOB_KIND_VERIFY,
  export: JobKind.JOB_KIND_EXPORT,
  import: JobKind.JOB_KIND_IMPORT,
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
    return listPages(
      values,
      async (pageToken) => {
        const r = await conn.call((o) => conn.client.listJobs({ ...filter, pageToken }, o));
        return { items: r.jobs, next: r.nextPageToken };
      },
      { field: "jobs", toJSON: (x) => Job.toJSON(x), table: jobTable, noun: "jobs" },
    );
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

const jobId: [string, string] = ["JOB_ID", "the job's id (printed when it was queued; job list shows them)"];

export const jobHelp: NounHelp = {
  noun: "job",
  summary: "jobs",
  verbs: {
    list: {
      synopsis:
        "[--state queued|running|succeeded|failed|cancelled] [--kind backup|restore|delete|flatten|verify|export|import] [--backup BACKUP_ID] " +
        "[--limit N] [--page-token T] [--all]",
      summary: "jobs, newest first (one page of --limit, 1..1000; --all: every page)",
      flags: [
        ["--state STATE", "only jobs in this state: queued, running, succeeded, failed or cancelled"],
        ["--kind KIND", "only jobs of this kind: backup, restore, delete, flatten, verify, export or import"],
        ["--backup BACKUP_ID", "only jobs of this backup"],
        ["--limit N", "jobs per page, 1 to 1000"],
        ["--page-token T", "the page after the one that printed this token"],
        ["--all", "every page"],
      ],
      examples: ["job list --state running", "job list --kind restore --all --json"],
    },
    show: {
      synopsis: "JOB_ID",
      summary: "one job: its kind, state, phase, progress, attempts and error",
      args: [jobId],
      examples: ["job show 6c1e2f0a-8d4b-4c3e-9f1a-2b3c4d5e6f70"],
    },
    watch: {
      synopsis: "JOB_ID",
      summary: "follow a job to its end (Ctrl-C stops watching; the job goes on)",
      details:
        "Progress goes to stderr (a live bar on a terminal, else one line per state or phase change), then the\n" +
        "job's summary to stdout; --json: one JobEvent per line. Exit code: 0 succeeded, 1 failed, 3 cancelled,\n" +
        "130 interrupted.",
      args: [jobId],
      examples: ["job watch 6c1e2f0a-8d4b-4c3e-9f1a-2b3c4d5e6f70"],
    },
    cancel: {
      synopsis: "JOB_ID",
      summary: "cancel a queued or running job (its librbd work stops and is cleaned up; the job ends cancelled)",
      args: [jobId],
      examples: ["job cancel 6c1e2f0a-8d4b-4c3e-9f1a-2b3c4d5e6f70"],
    },
  },
};

export function jobCommand(argv: string[]): Promise<number> {
  return dispatch(jobHelp, { list, show, watch, cancel }, argv);
}
