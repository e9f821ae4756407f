/**
 * Source snapshot hygiene — the only removal of a leased backup's source snapshots: the lease says
 * skip_source_prune (operation.ts), so a backup job does not wait for removals (one took 20 s on a
 * volume under heavy writes); the parent an incremental no longer needs goes here, right after the job.
 * After a DELETE or a BACKUP job of a volume ends, the volume is swept — an agent
 * of its cluster lists its backup snapshots (Call `snapshots`), hygiene-plan.ts decides which may go, and
 * an agent of the cluster removes exactly those (Call `prune_snapshots`, named backup ids on the named
 * image). After a backup whose last outcome carried the source's list (JobOutcome.source_snapshots: the
 * source agent listed them when the attempt ended, and no BACKUP or DELETE job of the volume ran since —
 * its lock was held until the job ended) the first try decides from that list and asks nothing; with
 * nothing to remove, the sweep sends no message at all. Retries ask again.
 *
 * A sweep runs before the volume's next job: `run` comes before the dispatcher in each tick, and while
 * a sweep is in flight its volume's lock is held (`sweeping`: the dispatcher keeps a queued job of the
 * volume waiting, at most two calls' timeouts), so no sweep races a backup choosing its parent, and
 * back-to-back jobs of a volume cannot pile up its snapshots (each job's end sweeps before the next
 * starts). A sweep whose volume has a BACKUP or DELETE job RUNNING (a retry that fell due meanwhile) is
 * dropped: that job's end sweeps again. With no agent of the cluster connected, or a call failing, the
 * sweep is tried again after a backoff, a few times; then it is left to the volume's next backup or
 * delete (a warning is logged). Level-triggered like the rest: `run` (every tick) starts the sweeps that
 * are due, and a sweep's end kicks the scheduler (the job it held back); a failure never touches a job.
 */
import { messageOf, statusOf } from "../../common/errors";
import { abortable, backoffDelay } from "../../common/retry";
import { VerifyMode } from "../../gen/rbdbackup/v1/agent";
import { JobKind, JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { JobOutcome } from "../../gen/rbdbackup/v1/session";
import { type Backup, type JobRecord, volumeLabel } from "../model";
import type { SchedulerContext } from "./context";
import { type Removal, type SourceSnap, snapshotsToRemove } from "./hygiene-plan";
import { isFinal, lockOfVolume } from "./jobs";

/** How long one question to the source cluster's agent may take, ms. */
export const HYGIENE_CALL_TIMEOUT_MS = 30_000;
/** Sweeps of one volume tried at most this many times (backoff 2 s .. 60 s between them). */
export const HYGIENE_ATTEMPTS = 6;
const BACKOFF = { baseMs: 2_000, maxMs: 60_000 };

interface Pending {
  volume: VolumeRef;
  attempts: number;
  nextAt: number;
  /** The source's backup snapshots as the job's last outcome listed them (first try only). */
  listed?: SourceSnap[] | undefined;
  /** Due, but another running job holds the volume: tried again when a job holding it ends. */
  deferred?: boolean;
}

/** At most this many outcomes' lists wait for their jobs' end (older ones are forgotten: the sweep asks). */
const LISTED_MAX = 10_000;

/** Status NOT_FOUND: the volume (or its pool) is gone, nothing to sweep. */
const NOT_FOUND = 5;

export class SnapshotHygiene {
  readonly #pending = new Map<string, Pending>();
  readonly #inFlight = new Map<string, Promise<void>>();
  /** Job id → the source's snapshots its last outcome listed (taken when the job ends). */
  readonly #listed = new Map<string, SourceSnap[]>();
  /** Backup id → SOURCE verifications being admitted that read its snapshot (holdForVerify). */
  readonly #verifying = new Map<string, number>();

  constructor(private readonly ctx: SchedulerContext) {}

  /** An outcome of the job arrived: an earlier attempt's list is forgotten (the sweep then asks). */
  forget(jobId: string): void {
    this.#listed.delete(jobId);
  }

  /**
   * A successful outcome of the job's CURRENT attempt (its lease holder's: the scheduler checked the
   * token, so no other agent's word is taken): the source's snapshots it listed
   * (JobOutcome.source_snapshots), kept for the job's end.
   */
  listed(o: JobOutcome): void {
    this.#listed.delete(o.jobId);
    if (!o.sourceSnapshotsListed || o.code !== 0) return;
    if (this.#listed.size >= LISTED_MAX) this.#listed.delete(this.#listed.keys().next().value as string);
    this.#listed.set(
      o.jobId,
      o.sourceSnapshots.map((s) => ({ name: s.name, backupId: s.backupId, snapId: s.snapId })),
    );
  }

  /** A job ended: a BACKUP or DELETE job's volume is swept (soon). */
  onFinished(j: JobRecord): void {
    for (const k of j.locks) {
      const p = this.#pending.get(k);
      if (p?.deferred) {
        p.deferred = false;
        this.ctx.kick();
      }
    }
    const listed = this.#listed.get(j.id);
    this.#listed.delete(j.id);
    if (j.kind !== JobKind.JOB_KIND_BACKUP && j.kind !== JobKind.JOB_KIND_DELETE) return;
    this.request(j.volume, j.kind === JobKind.JOB_KIND_BACKUP ? listed : undefined);
  }

  /** Sweeps `volume` on the next run (attempts start over); `listed`: its snapshots, if known. */
  request(volume: VolumeRef, listed?: SourceSnap[]): void {
    this.#pending.set(lockOfVolume(volume), { volume, attempts: 0, nextAt: this.ctx.now(), listed });
    this.ctx.kick();
  }

  /**
   * A SOURCE verification of `backupId` is being admitted (VerifyBackup probes the volume for its
   * snapshot, then inserts the job, whose activity keeps the snapshot — sourceVerifications). From now on
   * no sweep plans that snapshot's removal, and a sweep of the volume already in flight, which may have
   * decided before, is waited for (at most its two calls' timeouts, or until `signal`): the caller's probe
   * then sees what stays. The returned release is called once the job is inserted or refused.
   */
  async holdForVerify(backupId: string, volume: VolumeRef, signal: AbortSignal): Promise<() => void> {
    this.#verifying.set(backupId, (this.#verifying.get(backupId) ?? 0) + 1);
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      const n = (this.#verifying.get(backupId) ?? 1) - 1;
      if (n > 0) this.#verifying.set(backupId, n);
      else this.#verifying.delete(backupId);
    };
    const sweep = this.#inFlight.get(lockOfVolume(volume));
    try {
      if (sweep) await abortable(sweep, signal);
    } catch (err) {
      release();
      throw err;
    }
    return release;
  }

  /** Whether a sweep waits to start (so the tick reads the active jobs for run() only then). */
  get waiting(): boolean {
    return this.#pending.size > 0;
  }

  /** When the next sweep is due (Infinity: none waits; a sweep in flight counts as due now, a deferred one not at all). */
  nextAt(): number {
    let at = Number.POSITIVE_INFINITY;
    for (const [key, p] of this.#pending) {
      if (!p.deferred) at = Math.min(at, this.#inFlight.has(key) ? 0 : p.nextAt);
    }
    return at;
  }

  /** The volume locks of the sweeps in flight: the dispatcher starts no job holding one of them. */
  get sweeping(): Pick<ReadonlySet<string>, "has"> {
    return this.#inFlight;
  }

  /**
   * Starts the sweeps that are due; `active` are the catalog's active jobs (a RUNNING backup or delete of
   * the volume drops its sweep; any other running job holding the volume — a restore onto it, a flatten, a
   * failback — defers it to its end: a sweep waiting for its retry holds no lock, so the volume's next job
   * may have started meanwhile; a queued one waits for the sweep). Run before the dispatcher.
   */
  run(active: JobRecord[]): void {
    const now = this.ctx.now();
    const running = active.filter((j) => j.state === JobState.JOB_STATE_RUNNING);
    const sweepsAgain = (j: JobRecord) => j.kind === JobKind.JOB_KIND_BACKUP || j.kind === JobKind.JOB_KIND_DELETE;
    const busy = new Set(running.filter(sweepsAgain).map((j) => lockOfVolume(j.volume)));
    const held = new Set(running.flatMap((j) => j.locks));
    for (const [key, p] of this.#pending) {
      if (p.nextAt > now || this.#inFlight.has(key)) continue;
      if (busy.has(key)) {
        this.#pending.delete(key); // that job's end sweeps again
        continue;
      }
      p.deferred = held.has(key);
      if (p.deferred) continue;
      // A first try whose outcome listed the snapshots decides here, synchronously; with nothing to remove
      // it ends here, and the volume's next job is not held back (the common case: the parent is still
      // the newest).
      const decided = p.listed && this.#removals(p.volume, p.listed, active);
      if (decided && decided.length === 0) {
        this.#pending.delete(key);
        continue;
      }
      const work = this.#sweep(key, p, decided).finally(() => {
        this.#inFlight.delete(key);
        this.ctx.kick(); // a queued job of the volume may start now
      });
      this.#inFlight.set(key, work);
    }
  }

  /**
   * The plan for `listed`: it judges only the backups the source's snapshots name, so only those are
   * read (by id, and only the volume's: a look-alike name of another volume's backup stays) — never the
   * volume's whole history, which grows by a DELETED row a run. `active`: the catalog's active jobs, when
   * the caller has them.
   */
  #removals(v: VolumeRef, listed: SourceSnap[], active?: JobRecord[]): Removal[] {
    const key = lockOfVolume(v);
    const backups = [...new Set(listed.map((s) => s.backupId))]
      .map((id) => this.ctx.catalog.getBackup(id))
      .filter((b): b is Backup => !!b?.volume && lockOfVolume(b.volume) === key);
    return snapshotsToRemove(
      listed.map((s) => ({ name: s.name, backupId: s.backupId, snapId: s.snapId })),
      backups,
      this.#maxSnapshots(v),
      new Set([...sourceVerifications(active ?? this.ctx.catalog.activeJobs()), ...this.#verifying.keys()]),
    );
  }

  /** Resolves when no sweep is in flight (tests; a stopping coordinator). */
  async settle(): Promise<void> {
    while (this.#inFlight.size) await Promise.all(this.#inFlight.values());
  }

  /** One sweep; `decided`: the removals run() worked out from the outcome's list (else the agent is asked). */
  async #sweep(key: string, p: Pending, decided?: Removal[]): Promise<void> {
    const { ctx } = this;
    const v = p.volume;
    const label = volumeLabel(v);
    const agent = () => {
      const a = ctx.sessions.ofCluster(v.cluster).sort((x, y) => x.jobs.size - y.jobs.size)[0];
      if (!a) throw new Error(`no agent of cluster ${v.cluster} is connected`);
      return a;
    };
    try {
      const image = { pool: v.pool, namespace: v.namespace, image: v.image };
      const removals =
        decided ??
        this.#removals(
          v,
          (await agent().call({ $case: "snapshots", value: { image } }, "snapshots", HYGIENE_CALL_TIMEOUT_MS))
            .snapshots,
        );
      if (this.#pending.get(key) === p) this.#pending.delete(key);
      if (removals.length === 0) return;
      // Decided from plain reads, sent with no fenced write before it: not from a term whose lease may
      // have lapsed (a pause), while a new leader dispatches on this volume. Retried if it still leads.
      if (!ctx.leading()) throw new Error("this coordinator's leader lease may have lapsed: the sweep waits");
      const r = await agent().call(
        { $case: "pruneSnapshots", value: { image, backupIds: [...new Set(removals.map((x) => x.backupId))] } },
        "pruneSnapshots",
        HYGIENE_CALL_TIMEOUT_MS,
      );
      ctx.log.info("removed source snapshots no live chain needs", {
        volume: label,
        removed: r.removed,
        reasons: removals.map((x) => `${x.snapshot}: ${x.reason}`),
        warnings: r.warnings,
      });
    } catch (err) {
      if (statusOf(err) === NOT_FOUND) {
        if (this.#pending.get(key) === p) this.#pending.delete(key);
        return;
      }
      this.#retryLater(key, p, label, err);
    }
  }

  #retryLater(key: string, p: Pending, label: string, err: unknown): void {
    const attempts = p.attempts + 1;
    if (this.#pending.get(key) !== p && this.#pending.has(key)) return; // requested again meanwhile
    if (attempts >= HYGIENE_ATTEMPTS) {
      this.#pending.delete(key);
      this.ctx.log.warn("source snapshot sweep given up; the volume's next backup or delete sweeps again", {
        volume: label,
        attempts,
        error: messageOf(err),
      });
      return;
    }
    const delay = backoffDelay(attempts, BACKOFF, this.ctx.random);
    this.#pending.set(key, { ...p, attempts, nextAt: this.ctx.now() + delay, listed: undefined });
    this.ctx.log.info("source snapshot sweep failed; trying again", { volume: label, attempts, error: messageOf(err) });
  }

  /**
   * max_snapshots of the volume's newest backup job; null when that job is not in the catalog. Read
   * newest first, a page at a time (normally the first row answers), not the volume's whole history.
   */
  #maxSnapshots(v: VolumeRef): number | null {
    const { catalog } = this.ctx;
    let token = "";
    do {
      const page = catalog.listBackups({ cluster: v.cluster, pool: v.pool, image: v.image }, 16, token);
      const mine = page.items.filter((b) => b.jobId && b.volume?.namespace === v.namespace);
      // Of those made in the same millisecond, the lowest id (as the volume's rows in their order).
      const at = mine[0]?.createdAt?.getTime();
      const newest = mine.filter((b) => b.createdAt?.getTime() === at).sort((a, b) => (a.id < b.id ? -1 : 1))[0];
      if (newest) {
        const op = catalog.getJob(newest.jobId)?.operation;
        return op?.kind === "backup" ? op.maxSnapshots : null;
      }
      token = page.next;
    } while (token);
    return null;
  }
}

/** The backups whose source snapshot a SOURCE verification, queued or running, reads (hygiene-plan.ts `reading`). */
export function sourceVerifications(active: JobRecord[]): Set<string> {
  const ids = new Set<string>();
  for (const j of active) {
    if (j.operation.kind === "verify" && j.operation.mode === VerifyMode.VERIFY_MODE_SOURCE && !isFinal(j.state))
      ids.add(j.backupId);
  }
  return ids;
}
