/**
 * The policy runner: every tickMs it reads the policies, works out each one's selection (explicit list +
 * discovered images matching its pool selector), keeps one ProtectionRecord per (policy, volume), and
 * queues a backup job for each record whose run is due — in one transaction with the record's advance,
 * with an idempotency key of (policy, volume, slot), so a retried tick or a restart never queues a slot
 * twice. The transaction re-reads the record: a volume paused (failover) or deselected while its run was
 * being built gets no job, and the runner's writes never undo a pause. A run that finds no agent (a
 * restart, agents reconnecting) keeps its slot and is tried again shortly. It settles finished runs
 * (failures counted, retention after a success) and answers the API (PolicyRunnerPort). Time comes from
 * `now` (a test moves a fake clock and awaits tick()).
 *
 * When it ticks: each tick sets one timer to the next time something falls due (nextWake): the earliest
 * record's next run (the next_run_at index, looked ahead SAFETY_PASS_MS), a policy's next full pass, a
 * pool's next listing; cfg.tickMs while a run waits to be settled (its job still active) or something
 * due was not done; at most SAFETY_PASS_MS. Events tick at once (soon()): the API's changed() and
 * runNow, a pool listed, a job finished (Term wires the scheduler's "finished").
 */
import { Status } from "nice-grpc-common";
import { AppError, failedPrecondition } from "../../common/errors";
import type { Logger } from "../../common/log";
import { JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy } from "../../gen/rbdbackup/v1/policy";
import type { Catalog } from "../catalog/catalog";
import { TermEndedError } from "../catalog/leader-lease";
import type { PolicyStore } from "../catalog/policy-store";
import type { PolicySettings } from "../config-schema";
import type { Unprobed } from "../jobs/backup-job";
import { isFinal, SAFETY_PASS_MS, WakeTimer } from "../scheduler";
import type { Sessions } from "../sessions";
import { Discovery, type DiscoveryAge, matching, poolKey } from "./discovery";
import { insertRun, unprobedRun } from "./insert-run";
import { type PolicyMetrics, type VolumeSample, volumeSamples } from "./metrics";
import { defaultPoolOf, type ProtectionRecord, volumeKey } from "./model";
import { reslot, saveRunnerFields, scheduleKey, stillDue } from "./records";
import { enforceRetention } from "./retention-jobs";
import type { PolicyRunnerPort, RunNowResult } from "./runner-port";
import { advance, clockBehind, isDue, manualKey, newRecord, nextRun, retrySlot, slotKey } from "./slots";
import { recordKey, recordKeyPrefix, TickPlan } from "./tick-plan";
import { destinationKey, selects } from "./validate";

export interface PolicyRunnerDeps {
  catalog: Catalog;
  store: PolicyStore;
  sessions: Sessions;
  scheduler: { kick(): void };
  log: Logger;
  cfg: PolicySettings;
  /** Attempts a job may make (the scheduler's maxAttempts). */
  maxAttempts: number;
  now?: () => number;
  metrics?: PolicyMetrics;
  /** Told after changed() (the verify runner, which reads the same policies). */
  onChanged?: () => void;
}

/** A run not queued for want of an agent is tried again this much later (while its slot is current). */
const SLOT_RETRY_MS = 5_000;

/**
 * Runs being queued at once per pair of source and destination clusters (a run may ask an agent of each
 * first, up to 30 s): the pairs go side by side, so a cluster whose agents hang no longer holds back the
 * other clusters' runs due in the same pass — in one queue of batches, 100 probed runs of a hung cluster
 * delayed every later run by minutes. Runs falling due during such a pass still wait for its end.
 */
const LAUNCH_CONCURRENCY = 16;

/** The longest the runner sleeps with nothing due — the scheduler's safety pass — and how far it looks ahead for due runs. */

/** Clashing (policy, other policy, volume) pairs remembered as warned, at most. */
const MAX_CLASHES_WARNED = 10_000;

export class PolicyRunner implements PolicyRunnerPort {
  readonly #now: () => number;
  readonly #discovery: Discovery;
  readonly #selected = new Map<string, VolumeRef[]>();
  readonly #schedules = new Map<string, string>();
  /** The Policy object each policy's schedule was last compared from (see #reschedule). */
  readonly #scheduled = new Map<string, Policy>();
  /** The last run settled per record ("<policy>\0<volume key>" → job id): one entry per record, not per run. */
  readonly #settled = new Map<string, string>();
  readonly #launching = new Set<string>();
  /** Discovered volumes another policy to the same destination already protects (warned once each). */
  readonly #clashes = new Set<string>();
  readonly #plan = new TickPlan();
  /** Its `next`: what the last tick found next due (nextWake); re-armed after each tick, at most SAFETY_PASS_MS on. */
  readonly #wake: WakeTimer;
  #ticking: Promise<void> | null = null;
  /** stop() was called: no tick starts, a running one launches no more runs. */
  #stopped = false;
  /** soon() was called during a tick: another follows it. */
  #again = false;

  /** When this runner was made: a run that finished before was observed by its predecessor's metrics. */
  readonly #since: number;

  constructor(private readonly deps: PolicyRunnerDeps) {
    this.#now = deps.now ?? Date.now;
    this.#since = this.#now();
    this.#wake = new WakeTimer(() => this.soon(), { now: this.#now });
    this.#discovery = new Discovery(deps.sessions, deps.cfg.discoveryIntervalMs, deps.log, () => this.soon());
  }

  start(): void {
    this.#stopped = false;
    this.#wake.start();
    this.soon();
  }

  /**
   * Stops: no tick starts after this (a term ended: a new leader's runner protects the volumes), and a
   * tick under way queues no further batch of runs.
   */
  stop(): void {
    this.#stopped = true;
    this.#wake.stop();
  }

  /** A tick now, or right after the running one (errors logged, never thrown). */
  soon(): void {
    if (this.#stopped) return;
    if (this.#ticking) {
      this.#again = true;
      return;
    }
    this.tick().catch((err) =>
      // A tick in flight when its term ended: expected at a step-down, not a failure.
      err instanceof TermEndedError
        ? this.deps.log.debug("policy runner tick of an ended term dropped", { err })
        : this.deps.log.error("policy runner tick failed", { err }),
    );
  }

  async tick(): Promise<void> {
    if (this.#stopped) return;
    if (this.#ticking) return this.#ticking;
    this.#again = false;
    this.#ticking = this.#tick()
      .catch((err) => {
        // Tried again at the usual cadence.
        this.#wake.next = this.#now() + this.deps.cfg.tickMs;
        throw err;
      })
      .finally(() => {
        this.#ticking = null;
        this.#wake.arm();
        if (this.#again) this.soon();
      });
    return this.#ticking;
  }

  /**
   * When the last tick found the next thing due (epoch ms of `now`): a record's next run, a policy's
   * full pass, a pool's listing; `now + cfg.tickMs` while a run waits to be settled or a due record was
   * not run; at most `now + SAFETY_PASS_MS`.
   */
  get nextWake(): number {
    return this.#wake.next;
  }

  /** How long ago each pool a selector discovers volumes in was listed (metrics). */
  discoveryAges(now: number): DiscoveryAge[] {
    return this.#discovery.ages(now);
  }

  /** See nextWake; after a tick at `now` whose runs have been queued. */
  #nextWake(now: number): number {
    const { cfg, catalog } = this.deps;
    // A run whose job is still active is settled when the job ends (the scheduler's "finished" calls
    // soon()); one whose job is unknown or over is settled by polling, as is a run being queued.
    const unsettled = this.#plan.pendingOf(() => true).some(({ jobId }) => !jobId || !catalog.activeJob(jobId));
    if (unsettled || this.#launching.size) return now + cfg.tickMs;
    let at = Math.min(this.#plan.nextFullPassAt(), this.#discovery.nextListingAt(), now + SAFETY_PASS_MS);
    for (const rec of this.deps.store.dueProtection(now + SAFETY_PASS_MS)) at = Math.min(at, rec.nextRunAt);
    // Due already yet not run (no agent: retried; a record of a policy the store no longer has): polled.
    return at <= now ? now + cfg.tickMs : at;
  }

  async #tick(): Promise<void> {
    const now = this.#now();
    const { store } = this.deps;
    const policies = store.allPolicies();
    this.#discovery.retain(new Set(policies.flatMap((p) => (p.selector?.pool ? [poolKey(p.selector)] : []))));
    const dueOf = new Map<string, Array<[Policy, ProtectionRecord]>>();
    const push = (p: Policy, rec: ProtectionRecord) => {
      if (!isDue(rec, now) || this.#launching.has(recordKey(p.name, volumeKey(rec.volume)))) return;
      const list = dueOf.get(p.name) ?? [];
      list.push([p, rec]);
      dueOf.set(p.name, list);
    };
    // Policies whose selection may have changed: every record reconciled and settled (tick-plan.ts).
    const fast = new Map<string, Policy>();
    for (const p of policies) {
      this.deps.metrics?.know(p.name);
      this.#reschedule(p, now);
      const images = this.#images(p, now);
      if (!this.#plan.needsFullPass(p, images, now)) {
        fast.set(p.name, p);
        continue;
      }
      for (const rec of this.#reconcile(p, now, images)) {
        this.#settle(p, rec, now);
        push(p, rec);
      }
    }
    // The others: only the records with a run to settle, and the due ones (the next_run_at index).
    if (fast.size) {
      for (const { policy, key, jobId } of this.#plan.pendingOf((n) => fast.has(n))) {
        // Its run's job still queued or running (the catalog's active jobs, in memory): nothing to settle
        // yet. A record whose job changed since is settled once this one ends, or by the next full pass.
        if (jobId && this.deps.catalog.activeJob(jobId)) continue;
        const rec = store.getProtection(policy, key);
        if (rec) this.#settle(fast.get(policy) as Policy, rec, now);
        else this.#plan.pending(policy, key, false);
      }
      for (const rec of store.dueProtection(now)) {
        const p = fast.get(rec.policy);
        if (p) push(p, rec);
      }
    }
    const due = policies.flatMap((p) => dueOf.get(p.name) ?? []);
    const byClusters = new Map<string, typeof due>();
    for (const d of due) {
      const k = `${d[1].volume.cluster}\0${d[0].destination?.cluster ?? ""}`;
      const list = byClusters.get(k);
      if (list) list.push(d);
      else byClusters.set(k, [d]);
    }
    // Every group ends before the tick does (one that fails does not leave the others launching after it).
    const ended = await Promise.allSettled(
      [...byClusters.values()].map(async (list) => {
        for (let i = 0; i < list.length && !this.#stopped; i += LAUNCH_CONCURRENCY) {
          await Promise.all(list.slice(i, i + LAUNCH_CONCURRENCY).map(([p, rec]) => this.#runDue(p, rec, now)));
        }
      }),
    );
    const failed = ended.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    this.#wake.next = this.#nextWake(now);
  }

  /** The policy's pool as last listed (null: not listed yet, or no pool selector); asks again when due. */
  #images(p: Policy, now: number): string[] | null {
    const sel = p.selector;
    return sel?.cluster && sel.pool ? this.#discovery.images(sel, now) : null;
  }

  /** The policy's volumes now, and their records: new ones created, ones no longer selected removed. */
  #reconcile(p: Policy, now: number, images: string[] | null): ProtectionRecord[] {
    const { store } = this.deps;
    const explicit = p.selector?.volumes ?? [];
    let discovered: VolumeRef[] | null = [];
    const sel = p.selector;
    if (sel?.cluster && sel.pool) {
      discovered = images
        ? matching(sel, images).map((image) => ({
            cluster: sel.cluster,
            pool: sel.pool,
            namespace: sel.namespace,
            image,
          }))
        : null;
    }
    const want = new Map<string, { vol: VolumeRef; source: ProtectionRecord["source"] }>();
    for (const vol of discovered ?? []) want.set(volumeKey(vol), { vol, source: "discovered" });
    for (const vol of explicit) want.set(volumeKey(vol), { vol, source: "explicit" });
    const records = new Map(store.protectionOfPolicy(p.name).map((r) => [volumeKey(r.volume), r]));
    const out: ProtectionRecord[] = [];
    let moved = 0;
    for (const [key, read] of records) {
      // Slotted by a clock ahead of this one: back to the schedule's next slot (slots.ts clockBehind).
      const mended = clockBehind(p, read, now);
      if (mended) {
        saveRunnerFields(store, mended);
        moved++;
      }
      const rec = mended ?? read;
      // Not listed yet (agent missing): discovered volumes the selector still takes keep their records
      // until a listing says otherwise (those of a pool it moved from, or a regex that no longer matches
      // them, go at once: they were backed up on until the new pool was listed).
      // A record a failover paused stays too, whatever the listing says (a lost site's pool listed
      // without the volume, a volume re-created by a failback's full copy): it stays paused until
      // ResumePolicy, as FailoverVolume promises, instead of coming back unpaused with the image.
      if (
        want.has(key) ||
        (discovered === null && selects(p, rec.volume)) ||
        (rec.pausedReason && selects(p, rec.volume))
      )
        out.push(rec);
      else {
        store.deleteProtection(p.name, key);
        this.#plan.pending(p.name, key, false);
        this.#settled.delete(recordKey(p.name, key));
      }
    }
    if (moved) {
      this.deps.log.warn("runs slotted by a clock ahead of this one moved to the next slot (the clock stepped back?)", {
        policy: p.name,
        records: moved,
      });
    }
    for (const [key, { vol, source }] of want) {
      if (records.has(key)) continue;
      // Two pool selectors whose regexes both match a new image (UpdatePolicy checks what is selected
      // then, not what comes later): the policy that has it first keeps it — one policy per destination.
      if (source === "discovered" && this.#protectedElsewhere(p, key)) continue;
      const rec = newRecord(p, vol, source, now);
      store.upsertProtection(rec);
      out.push(rec);
    }
    this.#selected.set(
      p.name,
      out.map((r) => r.volume),
    );
    return out;
  }

  /** A changed schedule moves every record's next run to the new schedule's next slot. */
  #reschedule(p: Policy, now: number): void {
    // The store hands out the same Policy object while its document is unchanged: nothing to compare.
    if (this.#scheduled.get(p.name) === p) return;
    this.#scheduled.set(p.name, p);
    const s = scheduleKey(p);
    const before = this.#schedules.get(p.name);
    this.#schedules.set(p.name, s);
    if (before === undefined || before === s) return;
    reslot(this.deps.store, p, Math.min(now, p.updatedAt?.getTime() ?? now));
  }

  /** #settleRun, and whether the record still has a run to settle (tick-plan.ts). */
  #settle(p: Policy, rec: ProtectionRecord, now: number): void {
    this.#settleRun(p, rec, now);
    const id = rec.lastJobId;
    const key = volumeKey(rec.volume);
    this.#plan.pending(p.name, key, !!id && this.#settled.get(recordKey(p.name, key)) !== id, id);
  }

  /** The last run finished: failures counted once (the job id is in lastError), retention after a success. */
  #settleRun(p: Policy, rec: ProtectionRecord, now: number): void {
    const id = rec.lastJobId;
    const settledKey = recordKey(p.name, volumeKey(rec.volume));
    if (!id || this.#settled.get(settledKey) === id) return;
    const job = this.deps.catalog.getJob(id);
    if (job && !isFinal(job.state)) return;
    this.#settled.set(settledKey, id);
    if (!job) return;
    const ok = job.state === JobState.JOB_STATE_SUCCEEDED;
    // Once per run across restarts and leader changes: a run that ended before this runner existed was
    // settled (and observed) by the one before it — observed again, a restart added a run to the histogram.
    const ended = job.finishedAt || now;
    if (ended >= this.#since) {
      this.deps.metrics?.runDuration
        .labels(p.name, ok ? "succeeded" : "failed")
        .observe(Math.max(0, ended - job.createdAt) / 1000);
    }
    const mark = `job ${id}: `;
    // Paused by a failover (read now: it may have come after `rec` was read).
    const paused = !!this.deps.store.getProtection(p.name, volumeKey(rec.volume))?.pausedReason;
    if (ok) {
      if (rec.consecutiveFailures || rec.lastError) this.#save({ ...rec, consecutiveFailures: 0, lastError: "" }, rec);
      // A protection paused by a failover deletes nothing: the volume's history goes on elsewhere, and
      // what to keep is the operator's to decide when it resumes (its next run applies retention).
      const defaultPool = defaultPoolOf(this.deps.sessions, this.deps.catalog.listAgents());
      const n = paused ? 0 : enforceRetention(this.deps, p, rec.volume, now, defaultPool, job.backupId);
      if (n) {
        this.deps.metrics?.retentionDeletions.labels(p.name).inc(n);
        this.deps.scheduler.kick();
      }
    } else if (job.state === JobState.JOB_STATE_CANCELLED && paused) {
      // Cancelled by the failover that paused it (api/failover.ts): not a failure of the volume's protection.
    } else if (!rec.lastError.startsWith(mark)) {
      const why = job.errorMessage || JobState[job.state];
      this.#save({ ...rec, consecutiveFailures: rec.consecutiveFailures + 1, lastError: mark + why }, rec);
    }
  }

  #save(next: ProtectionRecord, into: ProtectionRecord): void {
    Object.assign(into, saveRunnerFields(this.deps.store, next) ?? next);
  }

  /** Whether another policy to `p`'s destination has a record of the volume (warned once per pair). */
  #protectedElsewhere(p: Policy, key: string): boolean {
    const defaultPool = defaultPoolOf(this.deps.sessions, this.deps.catalog.listAgents());
    const mine = destinationKey(p.destination, defaultPool);
    const other = this.deps.store.protectionOfVolume(key).find((r) => {
      const op = r.policy === p.name ? undefined : this.deps.store.getPolicy(r.policy);
      // A record its policy no longer selects (a paused one kept, a rewritten selector) claims nothing.
      if (!op?.destination || !selects(op, r.volume)) return false;
      return destinationKey(op.destination, defaultPool) === mine;
    });
    if (!other) return false;
    const pair = `${p.name}\0${other.policy}\0${key}`;
    if (!this.#clashes.has(pair)) {
      // Warned once per pair; bounded (volumes come and go): past the cap the pairs start over.
      if (this.#clashes.size >= MAX_CLASHES_WARNED) this.#clashes.clear();
      this.#clashes.add(pair);
      this.deps.log.warn(
        "a discovered volume is already protected by another policy to the same destination: left to it",
        {
          policy: p.name,
          volume: key,
          protectedBy: other.policy,
        },
      );
    }
    return true;
  }

  /** A due slot: skipped (paused: not counted; previous run still going: missed) or run. */
  async #runDue(p: Policy, read: ProtectionRecord, now: number): Promise<void> {
    const { metrics } = this.deps;
    // Read again: a tick launches its due records in batches, one after another, and a RunPolicyNow or
    // a failover may have changed this one while the earlier batches were probed (a run of it queued,
    // or being queued): the record as it is now decides, and the queueing transaction checks it again.
    const vkey = volumeKey(read.volume);
    const rec = this.deps.store.getProtection(p.name, vkey);
    // Not due any more: a run of it since (a tick's launch of another group, after an earlier one failed).
    if (!rec || !isDue(rec, now) || this.#launching.has(recordKey(p.name, vkey))) return;
    if (p.paused || rec.pausedReason) {
      saveRunnerFields(this.deps.store, { ...rec, ...nextRun(p, rec.volume, now) });
      return;
    }
    const prev = rec.lastJobId ? this.deps.catalog.getJob(rec.lastJobId) : undefined;
    if (prev && !isFinal(prev.state)) {
      const next = advance(p, rec, now, "");
      saveRunnerFields(this.deps.store, next);
      metrics?.missedRuns.labels(p.name).inc(next.missedRuns - rec.missedRuns);
      return;
    }
    const key = slotKey(p.name, rec.volume, rec.nextSlotAt);
    // Counted once the run's transaction committed: one that fails is counted by its failure's path.
    let missed = 0;
    const queue = this.#queue(
      p,
      rec.volume,
      key,
      (jobId) => {
        const next = advance(p, rec, now, jobId);
        missed = next.missedRuns - rec.missedRuns;
        return next;
      },
      // Still due, and no other run of it queued meanwhile (its last job is still the one read here).
      () =>
        stillDue(this.deps.store, p, rec.volume) &&
        this.deps.store.getProtection(p.name, vkey)?.lastJobId === rec.lastJobId,
      unprobedRun(this.deps.catalog, rec, prev),
    );
    await queue.then(
      () => {
        if (missed > 0) metrics?.missedRuns.labels(p.name).inc(missed);
      },
      (err) => {
        const lastError = `slot ${new Date(rec.nextSlotAt).toISOString()}: ${(err as Error).message}`;
        // No agent yet (a restart: agents are reconnecting): the same slot again soon, not a failure.
        const unavailable = err instanceof AppError && err.status === Status.UNAVAILABLE;
        const again = unavailable ? retrySlot(p, rec, this.#now() + SLOT_RETRY_MS) : undefined;
        if (again) {
          saveRunnerFields(this.deps.store, { ...again, lastError: `${lastError} (retrying)` });
          this.deps.log.warn("policy run not queued yet", { policy: p.name, volume: volumeKey(rec.volume), err });
          return;
        }
        const next = advance(p, rec, now, "");
        if (unavailable) {
          // No agent until the next slot came: this slot is missed (advance() counted it), not failed —
          // the volume turns LATE as its recovery point ages, and lastError says why.
          saveRunnerFields(this.deps.store, { ...next, lastError });
          metrics?.missedRuns.labels(p.name).inc(next.missedRuns - rec.missedRuns);
          this.deps.log.warn("policy run missed: no agent", { policy: p.name, volume: volumeKey(rec.volume), err });
          return;
        }
        // Not queued for another reason (volume gone, refused): a failed run of this slot.
        // advance() counted this slot as not run; it ran and failed.
        const missedRuns = next.missedRuns - 1;
        saveRunnerFields(this.deps.store, {
          ...next,
          missedRuns,
          consecutiveFailures: rec.consecutiveFailures + 1,
          lastError,
        });
        metrics?.missedRuns.labels(p.name).inc(missedRuns - rec.missedRuns);
        this.deps.log.warn("policy run not queued", { policy: p.name, volume: volumeKey(rec.volume), err });
      },
    );
  }

  /** One run of `vol` under `key` (insert-run.ts); its record then has a run to settle. */
  async #queue(
    p: Policy,
    vol: VolumeRef,
    key: string,
    update: (jobId: string) => ProtectionRecord | undefined,
    still: () => boolean = () => true,
    known?: Unprobed,
  ): Promise<string> {
    const launchKey = recordKey(p.name, volumeKey(vol));
    this.#launching.add(launchKey);
    try {
      const id = await insertRun(this.deps, this.#now, p, vol, key, update, still, known);
      if (id) this.#plan.pending(p.name, volumeKey(vol), true, id);
      return id;
    } finally {
      this.#launching.delete(launchKey);
    }
  }

  // ---- PolicyRunnerPort ----

  async runNow(policy: Policy, volume?: VolumeRef): Promise<RunNowResult> {
    const selected = this.selected(policy.name);
    const vols = volume ? selected.filter((v) => volumeKey(v) === volumeKey(volume)) : selected;
    if (volume && vols.length === 0)
      throw failedPrecondition(`volume ${volumeKey(volume)} is not selected by policy ${policy.name}`);
    const now = this.#now();
    const out: RunNowResult = { jobIds: [], skipped: [] };
    const { store } = this.deps;
    for (const vol of vols) {
      const key = volumeKey(vol);
      const rec = store.getProtection(policy.name, key) ?? newRecord(policy, vol, "explicit", now);
      const prev = rec.lastJobId ? this.deps.catalog.getJob(rec.lastJobId) : undefined;
      // A paused protection (FailoverVolume's: the volume's history goes on elsewhere) is not run, and a
      // volume is never backed up twice at once by its policy.
      const why = rec.pausedReason
        ? `its protection is paused (${rec.pausedReason}); ResumePolicy with this volume resumes it`
        : prev && !isFinal(prev.state)
          ? `a run of policy ${policy.name} is still going (job ${prev.id})`
          : this.#launching.has(recordKey(policy.name, key))
            ? `a run of policy ${policy.name} is being queued`
            : "";
      try {
        if (why) throw failedPrecondition(`volume ${key} not run: ${why}`);
        // The previous run is counted (its failure, its retention) before its job id is replaced.
        if (prev) this.#settleRun(policy, rec, now);
        const id = await this.#queue(
          policy,
          vol,
          manualKey(policy.name, vol, now),
          // Read again inside the queueing transaction: the tick may have changed the record while the
          // agents were probed (a new schedule's next slot, a settled failure) — this run changes only lastJobId.
          (jobId) => ({ ...(store.getProtection(policy.name, key) ?? rec), lastJobId: jobId }),
          () => !store.getProtection(policy.name, key)?.pausedReason && !!store.getPolicy(policy.name),
        );
        if (id) out.jobIds.push(id);
        else {
          const reason = "paused or deselected while it was queued";
          // One volume named: its refusal is the call's status (policy.proto RunPolicyNowResponse).
          if (volume) throw failedPrecondition(`volume ${key} not run: ${reason}`);
          out.skipped.push({ volume: vol, reason });
        }
      } catch (e) {
        if (volume) throw e;
        out.skipped.push({ volume: vol, reason: (e as Error).message });
        this.deps.log.warn("policy run now: volume skipped", { policy: policy.name, volume: key, err: e });
      }
    }
    return out;
  }

  changed(name: string): void {
    const p = this.deps.store.getPolicy(name);
    if (!p) {
      this.#selected.delete(name);
      this.#schedules.delete(name);
      this.#scheduled.delete(name);
      for (const k of this.#settled.keys()) if (k.startsWith(recordKeyPrefix(name))) this.#settled.delete(k);
      this.deps.metrics?.forget(name);
    } else if (p.selector?.pool) this.#discovery.expire(p.selector);
    this.#plan.forget(name);
    // A changed (or deleted) policy's clashes are warned again if they still are.
    for (const pair of this.#clashes) {
      const [a, b] = pair.split("\0");
      if (a === name || b === name) this.#clashes.delete(pair);
    }
    this.soon();
    this.deps.onChanged?.();
  }

  selected(name: string): VolumeRef[] {
    const known = this.#selected.get(name);
    if (known) return known;
    const p = this.deps.store.getPolicy(name);
    if (!p) return [];
    const now = this.#now();
    return this.#reconcile(p, now, this.#images(p, now)).map((r) => r.volume);
  }

  /** Per-volume samples for the metrics: recovery point age and protection state. */
  samples(): VolumeSample[] {
    return volumeSamples(this.deps.catalog, this.deps.store, this.#now());
  }
}
