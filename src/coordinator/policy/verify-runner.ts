/**
 * A policy's scheduled verification (Policy.verify): every tick, for each unpaused policy with
 * verify.interval_seconds, each selected volume's newest available backup at the destination is due when
 * its last verification (VerifyBackup's or a run's) is older than the interval; a due backup gets a
 * VERIFY job (../jobs/verify-job.ts) with an idempotency key of (policy, backup, slot) — the slot being
 * the interval the tick falls in — so a repeated tick or a restart never queues one twice. A backup that
 * already has a VERIFY queued or running is left alone; one without a digest map is verified in mode
 * METADATA (the other modes need the map). Clock injected; the tick is synchronous (no agent asked:
 * the scheduler places the job).
 *
 * When it ticks: with no policy verifying, only on soon() (a policy changed; a job finished — Term wires
 * both) and every SAFETY_PASS_MS; with one, each tick also sets the timer to the earliest verification
 * it saw falling due (nextWake); one due whose slot's job exists already (it failed) counts from the
 * next slot's start, when another may be queued (before, it was polled every cfg tickMs until then).
 */
import { createHash } from "node:crypto";
import type { Logger } from "../../common/log";
import { VerifyMode } from "../../gen/rbdbackup/v1/agent";
import { JobKind } from "../../gen/rbdbackup/v1/backup_service";
import type { Catalog } from "../catalog/catalog";
import type { PolicyStore } from "../catalog/policy-store";
import { isUniqueViolation, newJobRecord, POLICY_VERIFY_KEY_PREFIX } from "../jobs/new-job";
import { verifyJobSpec } from "../jobs/verify-job";
import type { Backup } from "../model";
import { SAFETY_PASS_MS, WakeTimer } from "../scheduler";
import type { Policy } from "./model";
import { atDestination, newestAvailable, registeredDefaultPool } from "./recovery-point";

export interface VerifyRunnerDeps {
  catalog: Catalog;
  store: PolicyStore;
  scheduler: { kick(): void };
  log: Logger;
  /** Attempts a job may make (the scheduler's maxAttempts). */
  maxAttempts: number;
  /** How often to look for due verifications, ms. */
  tickMs: number;
  now?: () => number;
}

/** The idempotency key of a policy's verification of a backup in one slot. */
export function verifyKey(policy: string, backupId: string, slot: number): string {
  const h = createHash("sha256").update(`${policy}\0${backupId}\0${slot}`).digest("hex").slice(0, 32);
  return `${POLICY_VERIFY_KEY_PREFIX}${h}`;
}

/** The longest the verify runner sleeps: the scheduler's safety pass. */

export class PolicyVerifyRunner {
  readonly #now: () => number;
  /** Its `next`: what the last tick found next due (nextWake); re-armed after each tick, at most SAFETY_PASS_MS on. */
  readonly #wake: WakeTimer;
  #soon = false;

  constructor(private readonly deps: VerifyRunnerDeps) {
    this.#now = deps.now ?? Date.now;
    this.#wake = new WakeTimer(() => this.#safeTick(), { now: this.#now });
  }

  start(): void {
    this.#wake.start();
    this.#safeTick();
  }

  stop(): void {
    this.#wake.stop();
  }

  /** A tick soon (coalesced; never inside the caller's stack). */
  soon(): void {
    if (this.#soon || !this.#wake.started) return;
    this.#soon = true;
    setImmediate(() => {
      this.#soon = false;
      if (this.#wake.started) this.#safeTick();
    });
  }

  /** When the last tick found the next verification due (epoch ms of `now`); at most SAFETY_PASS_MS on. */
  get nextWake(): number {
    return this.#wake.next;
  }

  /** Queues the verifications that are due; returns the jobs queued. */
  tick(): string[] {
    const now = this.#now();
    const wake = this.#wake;
    wake.next = now + SAFETY_PASS_MS;
    const { catalog, store } = this.deps;
    const policies = store.allPolicies().filter((p) => !p.paused && (p.verify?.intervalSeconds ?? 0) > 0);
    if (policies.length === 0) return [];
    const busy = new Set(
      catalog
        .activeJobs()
        .filter((j) => j.kind === JobKind.JOB_KIND_VERIFY)
        .map((j) => j.backupId),
    );
    const queued: string[] = [];
    const defaultPool = registeredDefaultPool(catalog);
    for (const p of policies) {
      for (const rec of store.protectionOfPolicy(p.name)) {
        if (rec.pausedReason) continue;
        const b = newestAvailable(catalog, rec.volume, atDestination(p, defaultPool));
        // Busy: its VERIFY job's end ticks again (soon()).
        if (!b || busy.has(b.id)) continue;
        const dueAt = this.#dueAt(p, b);
        if (dueAt > now) {
          wake.next = Math.min(wake.next, dueAt);
          continue;
        }
        const q = this.#queue(p, b);
        if ("id" in q) {
          busy.add(b.id);
          queued.push(q.id);
        } else wake.next = Math.min(wake.next, q.nextSlotAt); // this slot's job exists (it failed): the next slot
      }
    }
    if (queued.length) this.deps.scheduler.kick();
    return queued;
  }

  #safeTick(): void {
    try {
      this.tick();
    } catch (err) {
      this.#wake.next = this.#now() + this.deps.tickMs;
      this.deps.log.error("policy verify tick failed", { err });
    }
    this.#wake.arm();
  }

  /** When `b` falls due for verification under `p`. */
  #dueAt(p: Policy, b: Backup): number {
    const last = b.integrity?.lastVerifiedAt?.getTime() ?? 0;
    return last + (p.verify?.intervalSeconds ?? 0) * 1000;
  }

  /**
   * The VERIFY job of `b` for this slot; when the slot's job exists already (it ended without a
   * verification: FAILED or CANCELLED), when the next slot starts — the earliest another may be queued.
   */
  #queue(p: Policy, b: Backup): { id: string } | { nextSlotAt: number } {
    const s = p.verify;
    const intervalMs = (s?.intervalSeconds ?? 0) * 1000;
    if (!s || intervalMs <= 0) return { nextSlotAt: this.#now() + SAFETY_PASS_MS }; // tick() picks none such
    const slot = Math.floor(this.#now() / intervalMs);
    const taken = { nextSlotAt: (slot + 1) * intervalMs };
    const key = verifyKey(p.name, b.id, slot);
    if (this.deps.catalog.jobByIdempotencyKey(key)) return taken;
    const mapless = !b.integrity?.imageDigest;
    const mode = mapless ? VerifyMode.VERIFY_MODE_METADATA : s.mode;
    const percent = mapless ? 0 : s.samplePercent;
    const job = newJobRecord(verifyJobSpec(b, mode, percent, key), this.deps.maxAttempts, this.#now());
    try {
      this.deps.catalog.insertJob(job);
    } catch (e) {
      if (isUniqueViolation(e)) return taken;
      throw e;
    }
    this.deps.log.info("policy verification queued", { policy: p.name, backup: b.id, job: job.id });
    return { id: job.id };
  }
}
