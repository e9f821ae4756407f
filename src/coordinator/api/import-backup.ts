/**
 * ImportBackup: a backup made from the caller's `rbd export-diff` stream. Phases: the header (first
 * message, within HEADER_TIMEOUT_MS) checked — volume, location (pool resolved and probed), metadata,
 * the parent (AVAILABLE, same volume and location, the newest of its chain) —, its idempotency key
 * looked up; the backup (CREATING) and its IMPORT job inserted with the relay open
 * (../interchange/run.ts); then the caller's bytes are relayed to the agent with backpressure, and the
 * answer is the job once it ended (SUCCEEDED), or its status. The caller going away cancels the job.
 */
import type { CallContext } from "nice-grpc-common";
import { Status } from "nice-grpc-common";
import { AppError, failedPrecondition, invalidArgument, notFound, statusOf, unavailable } from "../../common/errors";
import {
  type Backup,
  BackupStatus,
  ImportBackupHeader,
  type ImportBackupMessage,
  type Job,
  JobState,
} from "../../gen/rbdbackup/v1/backup_service";
import { madeJob } from "../ha/standby-gate";
import { InterchangeRun, jobError } from "../interchange/run";
import { importJob } from "../jobs/interchange-jobs";
import { probe } from "../jobs/probes";
import { volumeKey } from "../model";
import * as v from "../validate";
import type { Admission } from "./admission";
import { fingerprint, sortedMeta } from "./admission";
import type { ApiDeps } from "./deps";

export const HEADER_TIMEOUT_MS = 30_000;

async function header(it: AsyncIterator<ImportBackupMessage>): Promise<ImportBackupHeader> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new AppError(Status.DEADLINE_EXCEEDED, `no header within ${HEADER_TIMEOUT_MS / 1000} s`)),
      HEADER_TIMEOUT_MS,
    );
  });
  try {
    const n = await Promise.race([it.next(), timeout]);
    if (n.done || n.value.body?.$case !== "header") {
      throw invalidArgument("the first message of ImportBackup must be its header");
    }
    return n.value.body.value;
  } finally {
    clearTimeout(timer);
  }
}

/** How far ahead of this coordinator's clock header.taken_at may be (another host's clock): taken as now. */
export const TAKEN_AT_SKEW_MS = 5 * 60_000;
const TAKEN_AT_MIN = Date.parse("2000-01-01T00:00:00Z");

function validateHeader(h: ImportBackupHeader, nowMs: number) {
  const vol = v.volumeRef(h.volume, "header.volume");
  const loc = v.location(h.location, "header.location");
  v.volumeMetadata(h.volumeId, h.volumeMetadata);
  v.idempotencyKey(h.idempotencyKey);
  if (h.parentBackupId) v.uuid(h.parentBackupId, "header.parent_backup_id");
  v.diffFormat(h.format);
  return { vol, loc, takenAtMs: takenAt(h, nowMs) };
}

/** header.taken_at as epoch ms (at most now), or undefined when not given. */
function takenAt(h: ImportBackupHeader, nowMs: number): number | undefined {
  if (!h.takenAt) return undefined;
  const t = h.takenAt.getTime();
  if (!Number.isFinite(t) || t < TAKEN_AT_MIN)
    throw invalidArgument("header.taken_at must be a valid time after 2000-01-01 (when the stream's data was taken)");
  if (t > nowMs + TAKEN_AT_SKEW_MS) {
    throw invalidArgument(
      `header.taken_at ${h.takenAt.toISOString()} is in the future (this coordinator's clock reads ${new Date(nowMs).toISOString()}); give the time the stream's to-snapshot was taken`,
    );
  }
  return Math.min(t, nowMs);
}

/** An incremental's data is newer than its parent's: its taken_at must be later than the parent's created_at. */
function requireAfterParent(takenAtMs: number | undefined, parent: Backup | undefined): void {
  if (takenAtMs === undefined || !parent?.createdAt || takenAtMs > parent.createdAt.getTime()) return;
  throw invalidArgument(
    `header.taken_at ${new Date(takenAtMs).toISOString()} is not later than the parent backup ${parent.id}'s created_at ${parent.createdAt.toISOString()}: an incremental's data is newer than its parent's`,
  );
}

/** The parent of an incremental import: AVAILABLE, of this volume at this location, the newest of its chain. */
function requireParent(
  deps: ApiDeps,
  id: string,
  vol: Job["volume"],
  dest: { cluster: string; pool: string; namespace: string },
): Backup {
  const p = deps.catalog.getBackup(id);
  if (!p?.location || !p.volume) throw notFound(`header.parent_backup_id: backup ${id} not found`);
  if (p.status !== BackupStatus.BACKUP_STATUS_AVAILABLE) {
    throw failedPrecondition(`header.parent_backup_id: backup ${id} is ${BackupStatus[p.status]}, not AVAILABLE`);
  }
  if (volumeKey(p.volume) !== volumeKey(vol as NonNullable<Job["volume"]>)) {
    throw failedPrecondition(`header.parent_backup_id: backup ${id} is a backup of another volume`);
  }
  const l = p.location;
  if (l.cluster !== dest.cluster || l.pool !== dest.pool || l.namespace !== dest.namespace) {
    throw failedPrecondition(
      `header.parent_backup_id: backup ${id} is kept in ${l.cluster}/${l.pool}${l.namespace ? `/${l.namespace}` : ""}, not in the header's location`,
    );
  }
  const v2 = p.volume;
  const live = [
    BackupStatus.BACKUP_STATUS_AVAILABLE,
    BackupStatus.BACKUP_STATUS_CREATING,
    BackupStatus.BACKUP_STATUS_CORRUPT,
  ];
  const chain = deps.catalog
    .backupsOfVolume(v2.cluster, v2.pool, v2.namespace, v2.image, live)
    .filter((o) => o.id !== p.id && o.baseImage === p.baseImage);
  const newer = chain.find(
    (o) => live.includes(o.status) && (o.createdAt?.getTime() ?? 0) > (p.createdAt?.getTime() ?? 0),
  );
  if (newer) {
    throw failedPrecondition(
      `header.parent_backup_id: backup ${id} is not the newest of its chain (backup ${newer.id} is newer); import onto the newest`,
    );
  }
  // As a scheduled backup would start a new chain (scheduler/verify.ts corruptChainReason): its data
  // shares the base image's objects with a backup a verification found corrupt.
  const corrupt = chain.find((o) => o.status === BackupStatus.BACKUP_STATUS_CORRUPT);
  if (corrupt) {
    throw failedPrecondition(
      `header.parent_backup_id: the chain of backup ${id} holds backup ${corrupt.id}, which is CORRUPT; import a full stream (no parent) to start a new chain`,
    );
  }
  return p;
}

export async function importBackup(
  deps: ApiDeps,
  adm: Admission,
  requests: AsyncIterable<ImportBackupMessage>,
  ctx: CallContext,
): Promise<Job> {
  const it = requests[Symbol.asyncIterator]();
  const h = await header(it);
  const { vol, loc, takenAtMs } = validateHeader(h, Date.now());
  const fp = fingerprint(
    "import",
    ImportBackupHeader.toJSON({ ...h, idempotencyKey: "", volumeMetadata: sortedMeta(h.volumeMetadata) }),
  );
  const ix = deps.interchange;
  if (!ix) throw unavailable("this coordinator does not relay imports");
  const again = adm.replay(h.idempotencyKey, fp);
  if (again) return replayed(deps, adm, again.id, h.idempotencyKey);
  adm.knownCluster(loc.cluster, "header.location.cluster");
  const agent = deps.sessions.any(loc.cluster);
  const pool = loc.pool || agent.info.defaultBackupPool;
  const dest = { cluster: loc.cluster, pool, namespace: loc.namespace };
  await probe(
    deps.sessions,
    loc.cluster,
    { pools: [pool], namespaces: [{ pool, namespace: loc.namespace }] },
    ctx.signal,
    "header.location",
  );
  const parent = h.parentBackupId ? requireParent(deps, h.parentBackupId, vol, dest) : undefined;
  requireAfterParent(takenAtMs, parent);
  const busy = adm.activeHolder([`vol:${volumeKey(vol)}`]);
  if (busy)
    throw failedPrecondition(`volume ${volumeKey(vol)} is in use by job ${busy.id}; retry when it has finished`);
  const { backup, job } = importJob(deps.catalog, {
    volume: vol,
    location: dest,
    locationFsid: agent.info.clusterFsid,
    volumeId: h.volumeId,
    volumeMetadata: h.volumeMetadata,
    parent,
    format: h.format,
    idempotencyKey: h.idempotencyKey,
    fingerprint: fp,
    ...(takenAtMs !== undefined ? { takenAtMs } : {}),
  });
  const run = new InterchangeRun({ ...ix, catalog: deps.catalog }, job.id, "import", ctx.signal);
  run.open();
  try {
    const view = adm.submit(job, () => deps.catalog.insertBackup(backup));
    // A concurrent request with the same key won: its call relays the data.
    if (view.id !== job.id) return replayed(deps, adm, view.id, h.idempotencyKey);
    madeJob(ctx, job.id);
    await pump(it, run);
    await run.finished();
    return adm.view(deps.catalog.getJob(job.id) ?? job);
  } finally {
    run.close();
  }
}

/**
 * The answer to a request whose idempotency key names an existing IMPORT job (its data is not read: the
 * first call carries the job's): the job once it SUCCEEDED; its error status once it failed or was
 * cancelled, naming the key (a new import needs a new key); ABORTED at once while it still runs, naming
 * it — a wait here would outlast the caller's deadline for as long as the first call's upload takes.
 */
function replayed(deps: ApiDeps, adm: Admission, jobId: string, key: string): Job {
  const j = deps.catalog.getJob(jobId);
  if (!j) throw unavailable(`the job idempotency_key "${key}" names cannot be read yet; retry`);
  if (j.state === JobState.JOB_STATE_SUCCEEDED) return adm.view(j);
  if (j.state !== JobState.JOB_STATE_FAILED && j.state !== JobState.JOB_STATE_CANCELLED) {
    // Not ABORTED: gRPC clients read that as "retry the whole call", which would upload again.
    throw new AppError(
      Status.FAILED_PRECONDITION,
      `idempotency_key "${key}" names job ${j.id}, still ${JobState[j.state]}: its first call carries its data; follow it with WatchJob`,
    );
  }
  const e = jobError(j);
  throw new AppError(e.status, `${e.message} (idempotency_key "${key}" names this job: a new import needs a new key)`);
}

/** The caller's data messages into the relay (waiting while it is full); the relay's end after the last. */
export async function pump(it: AsyncIterator<ImportBackupMessage>, run: InterchangeRun): Promise<void> {
  for (;;) {
    let n: IteratorResult<ImportBackupMessage>;
    // Raced with the relay's failure (the job ended: the idle bound, a cancel): a caller that sends nothing
    // more is answered then, not when it next sends or hangs up.
    const next = it.next();
    next.catch(() => {}); // its rejection after the pipe failed is nobody's
    try {
      n = await run.pipe.orFailure(next);
    } catch (e) {
      if (run.pipe.done) throw e; // the relay's failure (the job's end) is the answer
      // A message that does not decode (a uint64 above 2^53: api/undecodable.ts) is the caller's bad
      // input, answered as such; anything else broke the stream.
      const gone =
        statusOf(e) === Status.INVALID_ARGUMENT
          ? e
          : new AppError(Status.CANCELLED, `the import stream of job ${run.jobId} broke`, { cause: e });
      run.pipe.fail(gone);
      throw gone;
    }
    if (n.done) break;
    const body = n.value.body;
    if (body?.$case === "header") {
      const e = invalidArgument("ImportBackup: a second header; only the first message is a header");
      run.pipe.fail(e);
      throw e;
    }
    if (body?.$case === "data") await run.pipe.write(body.value);
  }
  run.pipe.end();
}
