/**
 * An outcome counts only when the side that holds its data confirms it. A backup becomes AVAILABLE
 * after the source agent reports it made and an agent of the DESTINATION cluster, asked over its
 * session, shows the backup snapshot on the base image (`snapshots`) and the backup's metadata object
 * (`metadata`) — both in one `confirm_backup` Call when that agent named the ability in
 * Register.features (an older agent is asked the two). A restore becomes SUCCEEDED after the agent that ran it reports it done and an agent of
 * the TARGET cluster shows the target image, at the restored size (`probe`). (Deletes need no second
 * word: the agent that runs one is an agent of the cluster that holds the backup.) The job stays
 * RUNNING (its locks held) with `confirming` set until then:
 *
 *  - there as reported → the job SUCCEEDED (a backup AVAILABLE);
 *  - the cluster answers that it is not there (NOT_FOUND of the base image, no such snapshot, no or
 *    another metadata object; no target image, or one of another size) → the attempt fails DATA_LOSS:
 *    an agent said the data was committed and the side that must hold it has none — not a
 *    precondition a caller can fix, and worth an alert;
 *  - no agent of that cluster connected, or the question fails (timeout, disconnect, any other
 *    status) → checked again after a backoff, until `confirmTimeoutMs` after the report; then the
 *    attempt fails DEADLINE_EXCEEDED (transient: the job is retried).
 *
 * A cancel requested while confirming does not stop it: the work is done; the confirmation decides.
 * Level-triggered like the rest: `run` (every tick, and at once after a report) starts the checks that
 * are due; the answer is applied only if the job is still in the same confirming attempt.
 */

import { Status } from "nice-grpc-common";
import { messageOf, statusOf } from "../../common/errors";
import { backoffDelay } from "../../common/retry";
import { BackupResult, type GetBackupMetadataResponse, RestoreResult } from "../../gen/rbdbackup/v1/agent";
import { JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { ImageRef, VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { JobOutcome } from "../../gen/rbdbackup/v1/session";
import type { BackupSnapshot } from "../../gen/rbdbackup/v1/transfer";
import { registeredFsid } from "../catalog/catalog";
import { TermEndedError } from "../catalog/leader-lease";
import type { Backup, JobRecord } from "../model";
import type { AgentSession } from "../sessions";
import type { SchedulerContext } from "./context";
import { attemptFailed, changed, confirmingReason, succeeded } from "./transitions";

/** How long one question to the holding cluster's agent may take, ms. */
export const CONFIRM_CALL_TIMEOUT_MS = 15_000;

/** "absent": nobody to ask (checked again on every tick); "unknown": asked, but no answer (backoff). */
type Verdict =
  | { kind: "confirmed" }
  | { kind: "denied"; why: string }
  | { kind: "unknown"; why: string }
  | { kind: "absent"; why: string };

export class Confirmer {
  /** Job ids whose check is in flight, and the checks themselves (settle() awaits them). */
  readonly #inFlight = new Map<string, Promise<void>>();

  constructor(private readonly ctx: SchedulerContext) {}

  /**
   * After a restart or at a new leader's term: a confirmation gets a full timeout again (the destination's
   * agents reconnect) — once (Confirmation.gracedAt), not at every term of a flapping leader; again only
   * when its deadline passed while no coordinator ran (a tick of a running term would have failed it).
   */
  recover(): void {
    const now = this.ctx.now();
    const timeout = this.ctx.cfg.confirmTimeoutMs;
    for (const j of this.ctx.catalog.activeJobs()) {
      const c = j.confirming;
      if (j.state !== JobState.JOB_STATE_RUNNING || !c) continue;
      if (c.gracedAt !== undefined && c.deadline > now) continue;
      c.deadline = Math.max(c.deadline, now + timeout);
      c.gracedAt = now;
      this.ctx.catalog.updateJob(j);
    }
  }

  /** Starts the checks that are due among `jobs`. */
  run(jobs: JobRecord[]): void {
    const now = this.ctx.now();
    for (const j of jobs) {
      const c = j.confirming;
      if (j.state !== JobState.JOB_STATE_RUNNING || !c || c.nextCheckAt > now || this.#inFlight.has(j.id)) continue;
      this.#check(j);
    }
  }

  /**
   * When the next check among `jobs` is due (Infinity: none confirming). A check in flight counts as due
   * now (its answer kicks the scheduler, a lost one is asked again); so does a job waiting for an agent.
   */
  nextAt(jobs: JobRecord[]): number {
    let at = Number.POSITIVE_INFINITY;
    for (const j of jobs) {
      const c = j.confirming;
      if (j.state !== JobState.JOB_STATE_RUNNING || !c) continue;
      at = Math.min(at, this.#inFlight.has(j.id) ? 0 : Math.min(c.nextCheckAt, c.deadline));
    }
    return at;
  }

  /** Resolves when no check is in flight (tests; a stopping coordinator). */
  async settle(): Promise<void> {
    while (this.#inFlight.size) await Promise.all(this.#inFlight.values());
  }

  #check(j: JobRecord): void {
    const b = this.ctx.catalog.getBackup(j.backupId);
    const restore = j.confirming?.kind === "restore" && j.operation.kind === "restore" ? j.operation : null;
    const cluster = restore ? restore.target.cluster : (b?.location?.cluster ?? "");
    const agent = this.ctx.sessions.ofCluster(cluster).sort((x, y) => x.jobs.size - y.jobs.size)[0];
    if (!b || !agent) {
      const why = b ? `waiting for an agent of cluster ${cluster} to connect` : "its backup is not in the catalog";
      this.#apply(j.id, j.attempts, { kind: "absent", why });
      return;
    }
    const attempt = j.attempts;
    const asked = restore
      ? restoreVerdict(agent, restore.target, RestoreResult.fromJSON(j.confirming?.result))
      : verdict(
          agent,
          b,
          BackupResult.fromJSON(j.confirming?.result),
          registeredFsid(this.ctx.catalog, b.volume?.cluster ?? ""),
        );
    const p = asked
      .then((v) => this.#apply(j.id, attempt, v))
      .catch((err) =>
        // An answer that came after its term ended: the next leader confirms the job again.
        err instanceof TermEndedError
          ? this.ctx.log.debug("a confirmation of an ended term dropped", { job: j.id, err })
          : this.ctx.log.error("confirming an outcome failed", { job: j.id, err }),
      )
      .finally(() => this.#inFlight.delete(j.id));
    this.#inFlight.set(j.id, p);
  }

  /** Applies a verdict to the job, if it is still confirming the same attempt. */
  #apply(jobId: string, attempt: number, v: Verdict): void {
    const { ctx } = this;
    const j = ctx.catalog.activeJob(jobId);
    if (!j?.confirming || j.state !== JobState.JOB_STATE_RUNNING || j.attempts !== attempt) return;
    const isRestore = j.confirming.kind === "restore";
    const what = isRestore ? `the restore of backup ${j.backupId}` : `backup ${j.backupId}`;
    if (v.kind === "confirmed") {
      const result: JobOutcome["result"] = isRestore
        ? { $case: "restore", value: RestoreResult.fromJSON(j.confirming.result) }
        : { $case: "backup", value: BackupResult.fromJSON(j.confirming.result) };
      const listed = { sourceSnapshots: [], sourceSnapshotsListed: false };
      succeeded(ctx, j, { jobId, token: "", code: Status.OK, message: "", result, refused: false, ...listed });
    } else if (v.kind === "denied") {
      ctx.log.error("the cluster that must hold the data does not, though an agent reported it done", {
        job: jobId,
        why: v.why,
      });
      const by = isRestore ? "the restoring agent" : "the source";
      attemptFailed(ctx, j, Status.DATA_LOSS, `${by} reported success but ${v.why}`);
    } else if (ctx.now() >= j.confirming.deadline) {
      const ms = ctx.cfg.confirmTimeoutMs;
      attemptFailed(ctx, j, Status.DEADLINE_EXCEEDED, `could not confirm ${what} within ${ms} ms: ${v.why}`);
    } else if (v.kind === "absent") {
      const reason = confirmingReason(j, v.why);
      if (j.waitingReason === reason) return;
      j.waitingReason = reason;
      ctx.catalog.updateJob(j);
      changed(ctx, j);
      return;
    } else {
      const c = j.confirming;
      c.checks++;
      const o = { baseMs: ctx.cfg.backoffBaseMs, maxMs: ctx.cfg.backoffMaxMs, jitter: 1 };
      c.nextCheckAt = ctx.now() + backoffDelay(c.checks, o, ctx.random);
      j.waitingReason = confirmingReason(j, `${v.why}; next check at ${new Date(c.nextCheckAt).toISOString()}`);
      ctx.catalog.updateJob(j);
      ctx.log.warn(`could not confirm ${what} yet`, { job: jobId, why: v.why, checks: c.checks });
      changed(ctx, j);
    }
    ctx.kick();
  }
}

/** Asks `agent` (of the destination) whether the snapshot and the metadata object of the backup are there. */
async function verdict(agent: AgentSession, b: Backup, r: BackupResult, sourceFsid: string): Promise<Verdict> {
  const loc = b.location as NonNullable<Backup["location"]>;
  const pool = r.destinationPool || loc.pool;
  const where = `${loc.cluster}/${pool}/${loc.namespace ? `${loc.namespace}/` : ""}${r.baseImage}`;
  const asked = `agent ${agent.agentId} of cluster ${loc.cluster}`;
  try {
    const image = { pool, namespace: loc.namespace, image: r.baseImage };
    const { snap, meta } = await askDestination(agent, image, b.id, r.snapshot);
    if (!snap || snap.backupId !== b.id) {
      return { kind: "denied", why: `the destination has no snapshot ${r.snapshot} on ${where} (${asked})` };
    }
    if (!meta.found) {
      return {
        kind: "denied",
        why: `the destination has no metadata object backup.${b.id}.meta in ${pool} (${asked})`,
      };
    }
    const wrong = metadataMismatch(meta.json, b, r, sourceFsid);
    return wrong
      ? { kind: "denied", why: `the destination's backup.${b.id}.meta ${wrong} (${asked})` }
      : { kind: "confirmed" };
  } catch (e) {
    if (statusOf(e) === Status.NOT_FOUND) {
      return { kind: "denied", why: `the destination has no snapshot ${r.snapshot}: ${messageOf(e)} (${asked})` };
    }
    return { kind: "unknown", why: `${asked} did not answer: ${Status[statusOf(e)]}: ${messageOf(e)}` };
  }
}

/** Which ability of the agent's answers a backup's confirmation in one question (session.proto). */
export const CONFIRM_FEATURE = "confirm_backup";

/**
 * The snapshot named `snapshot` on `image` (undefined: none) and backup.<id>.meta, from `agent`: in one
 * Call (confirm_backup) when the agent named that ability in Register, else `snapshots` and `metadata`
 * asked at once (an older agent). Failures throw: the listing's first (NOT_FOUND = no image), then the
 * metadata's.
 */
async function askDestination(
  agent: AgentSession,
  image: ImageRef,
  backupId: string,
  snapshot: string,
): Promise<{ snap: BackupSnapshot | undefined; meta: GetBackupMetadataResponse }> {
  if (agent.features.has(CONFIRM_FEATURE)) {
    const r = await agent.call(
      { $case: "confirmBackup", value: { image, backupId, snapshot } },
      "confirmBackup",
      CONFIRM_CALL_TIMEOUT_MS,
    );
    return { snap: r.snapshot, meta: r.metadata ?? { found: false, json: "" } };
  }
  const req = { backupId, pool: image.pool, namespace: image.namespace };
  const [snapsAsked, metaAsked] = await Promise.allSettled([
    agent.call({ $case: "snapshots", value: { image } }, "snapshots", CONFIRM_CALL_TIMEOUT_MS),
    agent.call({ $case: "metadata", value: req }, "metadata", CONFIRM_CALL_TIMEOUT_MS),
  ]);
  if (snapsAsked.status === "rejected") throw snapsAsked.reason;
  const snap = snapsAsked.value.snapshots.find((s) => s.name === snapshot);
  // The snapshot's absence is judged before the metadata's failure (as before the one-call form).
  if (!snap || snap.backupId !== backupId) return { snap: undefined, meta: { found: false, json: "" } };
  if (metaAsked.status === "rejected") throw metaAsked.reason;
  return { snap, meta: metaAsked.value };
}

/** Asks `agent` (of the restore's target cluster) whether the target image is there, at the restored size. */
async function restoreVerdict(agent: AgentSession, target: VolumeRef, r: RestoreResult): Promise<Verdict> {
  const where = `${target.cluster}/${target.pool}/${target.namespace ? `${target.namespace}/` : ""}${target.image}`;
  const asked = `agent ${agent.agentId} of cluster ${target.cluster}`;
  try {
    const image = { pool: target.pool, namespace: target.namespace, image: target.image };
    const p = await agent.call(
      { $case: "probe", value: { pools: [], image, namespaces: [], keepOpen: false, checkTrash: false } },
      "probe",
      CONFIRM_CALL_TIMEOUT_MS,
    );
    if (!p.imageExists) return { kind: "denied", why: `the target cluster has no image ${where} (${asked})` };
    if (p.imageSize !== r.imageSize) {
      return {
        kind: "denied",
        why: `the target image ${where} is ${p.imageSize} bytes, not the restored ${r.imageSize} (${asked})`,
      };
    }
    return { kind: "confirmed" };
  } catch (e) {
    if (statusOf(e) === Status.NOT_FOUND) {
      return { kind: "denied", why: `the target cluster has no image ${where}: ${messageOf(e)} (${asked})` };
    }
    return { kind: "unknown", why: `${asked} did not answer: ${Status[statusOf(e)]}: ${messageOf(e)}` };
  }
}

/**
 * What in the metadata object contradicts the backup, or "" when it names this backup, chain and volume
 * — the volume's cluster too (its name, and its fsid when `sourceFsid`, the one that cluster's agents
 * registered with, is known; each only when the object names it): a catalog rebuild reads the volume
 * from this object alone.
 */
export function metadataMismatch(json: string, b: Backup, r: BackupResult, sourceFsid = ""): string {
  let m: {
    backup_id?: unknown;
    source?: {
      kind?: unknown;
      cluster_fsid?: unknown;
      cluster_name?: unknown;
      pool?: unknown;
      namespace?: unknown;
      image?: unknown;
    };
    chain?: { base_image?: unknown; snapshot?: unknown };
  };
  try {
    m = JSON.parse(json);
  } catch {
    return "is not valid JSON";
  }
  const v = b.volume;
  if (m?.backup_id !== b.id) return `names backup ${String(m?.backup_id)}, not ${b.id}`;
  if (m.chain?.base_image !== r.baseImage || m.chain?.snapshot !== r.snapshot) {
    return `names chain ${String(m.chain?.base_image)}@${String(m.chain?.snapshot)}, not ${r.baseImage}@${r.snapshot}`;
  }
  const s = m.source;
  if (s?.kind !== "rbd" || s.pool !== v?.pool || s.namespace !== v?.namespace || s.image !== v?.image) {
    return `names source ${String(s?.pool)}/${String(s?.namespace)}/${String(s?.image)}, not volume ${v?.pool}/${v?.namespace}/${v?.image}`;
  }
  // Each as far as the object says it: agents before 2026-12-02 wrote no cluster_name, and an import's
  // fsid is "" when no agent of the volume's cluster had registered yet.
  const nameWrong = s.cluster_name !== undefined && s.cluster_name !== v?.cluster;
  const fsidWrong = !!sourceFsid && !!s.cluster_fsid && s.cluster_fsid !== sourceFsid;
  if (nameWrong || fsidWrong) {
    return `names source cluster ${String(s.cluster_name)} (fsid ${String(s.cluster_fsid)}), not ${v?.cluster}${sourceFsid ? ` (fsid ${sourceFsid})` : ""}`;
  }
  return "";
}
