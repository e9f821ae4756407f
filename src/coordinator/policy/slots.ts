/**
 * A volume's slots under a policy, from its persisted ProtectionRecord: when its first run is, whether
 * a run is due, how many slots passed without a run, and the idempotency key of the run of a slot.
 * Pure functions: the runner persists what they return in the same transaction as the job they queue, so
 * a restart neither repeats a slot (the record already points past it, and the key would match) nor
 * skips one (a slot that passed while the coordinator was down is due at once, run once, the others
 * that passed with it counted as missed).
 */
import { createHash } from "node:crypto";
import { CreateBackupRequest } from "../../gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy, PolicySchedule } from "../../gen/rbdbackup/v1/policy";
import { POLICY_RUN_KEY_PREFIX } from "../jobs/new-job";
import { MAX_CLUSTER_NAME, MAX_META_VALUE, MAX_RBD_NAME } from "../validate";
import { type ProtectionRecord, volumeKey } from "./model";
import { countSlots, jitterMs, nextSlot, runStart } from "./schedule";

/** Most slots counted missed in one go (a policy paused for years does not loop for long). */
const MISSED_LIMIT = 1_000;

/**
 * The last counts of missed slots, per schedule object and range: every record of a policy shares its
 * slots, so a tick after downtime counts them once per policy, not once per volume (a minutely cron a week
 * behind took ~0.6 s per count). An entry goes with its policy object; a policy's own counts stay few.
 */
const counted = new WeakMap<PolicySchedule, Map<string, number>>();

function missedBetween(s: PolicySchedule, fromMs: number, toMs: number): number {
  let counts = counted.get(s);
  if (!counts) {
    counts = new Map();
    counted.set(s, counts);
  }
  const key = `${fromMs}\0${toMs}`;
  let n = counts.get(key);
  if (n === undefined) {
    n = countSlots(s, fromMs, toMs, MISSED_LIMIT);
    if (counts.size >= 256) counts.clear();
    counts.set(key, n);
  }
  return n;
}

const scheduleOf = (p: Policy): PolicySchedule => p.schedule ?? ({ intervalSeconds: 0 } as PolicySchedule);

/** The slot after `afterMs` and when the volume's run of it starts (slot + the volume's jitter, inside the window). */
export function nextRun(p: Policy, vol: VolumeRef, afterMs: number): { nextSlotAt: number; nextRunAt: number } {
  const s = scheduleOf(p);
  const nextSlotAt = nextSlot(s, afterMs);
  return { nextSlotAt, nextRunAt: runStart(s, nextSlotAt, jitterMs(s, p.name, volumeKey(vol))) };
}

/** The record of a volume newly selected: its first run is the first slot after now. */
export function newRecord(
  p: Policy,
  vol: VolumeRef,
  source: ProtectionRecord["source"],
  nowMs: number,
): ProtectionRecord {
  return {
    policy: p.name,
    volume: vol,
    source,
    ...nextRun(p, vol, nowMs),
    lastSlotAt: 0,
    lastJobId: "",
    lastError: "",
    consecutiveFailures: 0,
    missedRuns: 0,
    pausedReason: "",
    lastSeenAt: nowMs,
    createdAt: nowMs,
  };
}

/**
 * The record after the due slot was handled at `nowMs`: it ran (`jobId`) or it did not (`jobId` empty:
 * the previous run was still going, the policy is paused). Slots that passed after the due one are missed;
 * so is the due one when it did not run.
 */
export function advance(p: Policy, rec: ProtectionRecord, nowMs: number, jobId: string): ProtectionRecord {
  const passed = missedBetween(scheduleOf(p), rec.nextSlotAt, nowMs);
  return {
    ...rec,
    ...nextRun(p, rec.volume, nowMs),
    lastSlotAt: jobId ? rec.nextSlotAt : rec.lastSlotAt,
    lastJobId: jobId || rec.lastJobId,
    missedRuns: rec.missedRuns + passed + (jobId ? 0 : 1),
  };
}

/**
 * A run that could not be queued for now (no agent of the cluster connected yet, e.g. just after a
 * restart): the same slot again at `retryAt` — undefined when that is not before the slot after it.
 */
export function retrySlot(p: Policy, rec: ProtectionRecord, retryAt: number): ProtectionRecord | undefined {
  if (retryAt >= nextSlot(scheduleOf(p), rec.nextSlotAt)) return undefined;
  return { ...rec, nextRunAt: retryAt };
}

/** A record slotted further than this past the schedule's next slot was slotted by a clock ahead of ours. */
export const CLOCK_STEP_MARGIN_MS = 5 * 60_000;

/**
 * The record moved to the first slot after `nowMs`, when it waits for a slot later than the schedule's
 * next one (CLOCK_STEP_MARGIN_MS to spare): its next run was computed by a clock ahead of this one (the
 * clock stepped back, or a new leader's is slow), and would wait out the difference — a day's step back
 * a day without runs, nothing saying so. undefined when the record is as it should be: slotted from a
 * time before now, it never waits past the next slot.
 */
export function clockBehind(p: Policy, rec: ProtectionRecord, nowMs: number): ProtectionRecord | undefined {
  if (rec.nextSlotAt <= nextSlot(scheduleOf(p), nowMs + CLOCK_STEP_MARGIN_MS)) return undefined;
  return { ...rec, ...nextRun(p, rec.volume, nowMs) };
}

/** The run of a slot is due. */
export const isDue = (rec: ProtectionRecord, nowMs: number): boolean => rec.nextRunAt <= nowMs;

/**
 * The idempotency key of the run of (policy, volume, slot): "pol:<policy>:<slot ms>:<hash>", ≤ 128
 * characters of [A-Za-z0-9._:-] (policy names are [a-z0-9-]{1,63}; the volume is in the hash).
 */
export function slotKey(policy: string, vol: VolumeRef, slotAt: number): string {
  const h = createHash("sha256")
    .update(`${policy}\0${volumeKey(vol)}\0${slotAt}`)
    .digest("hex")
    .slice(0, 32);
  return `${POLICY_RUN_KEY_PREFIX}${policy}:${slotAt}:${h}`;
}

/** The idempotency key of a run asked for by RunPolicyNow at `nowMs`. */
export function manualKey(policy: string, vol: VolumeRef, nowMs: number): string {
  const h = createHash("sha256")
    .update(`${policy}\0${volumeKey(vol)}\0now\0${nowMs}`)
    .digest("hex")
    .slice(0, 32);
  return `${POLICY_RUN_KEY_PREFIX}${policy}:now${nowMs}:${h}`;
}

/** The placeholders of a policy's metadata values, and the longest each can be (characters). */
const PLACEHOLDER_LONGEST: Record<string, number> = {
  cluster: MAX_CLUSTER_NAME,
  pool: MAX_RBD_NAME,
  namespace: MAX_RBD_NAME,
  image: MAX_RBD_NAME,
  policy: 63, // POLICY_NAME_RE
};
const PLACEHOLDER = /\{(cluster|pool|namespace|image|policy)\}/g;

/** "{cluster}", "{pool}", "{namespace}", "{image}" and "{policy}" in the policy's metadata values replaced. */
export function volumeMetadata(p: Policy, vol: VolumeRef): Record<string, string> {
  const subst: Record<string, string> = { ...vol, policy: p.name };
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(p.volumeMetadata ?? {}))
    out[k] = v.replace(PLACEHOLDER, (_, f: string) => subst[f] ?? "");
  return out;
}

/**
 * The metadata value a template can become at most, each placeholder filled with the longest name it
 * stands for: a policy's runs must hold what CreateBackup would accept (MAX_META_VALUE), whatever volume
 * they back up — checked once, when the policy is written.
 */
export function longestExpansion(template: string): number {
  return template.replace(PLACEHOLDER, (_, f: string) => "x".repeat(PLACEHOLDER_LONGEST[f] ?? 0)).length;
}

/** INVALID_ARGUMENT-worthy text for the first template that could outgrow a metadata value; undefined when none can. */
export function overlongTemplate(meta: Record<string, string>): string | undefined {
  for (const [k, t] of Object.entries(meta)) {
    const n = longestExpansion(t);
    if (n > MAX_META_VALUE)
      return `volume_metadata["${k.slice(0, 40)}"] can become ${n} characters with its placeholders filled (the longest names they stand for); at most ${MAX_META_VALUE}`;
  }
  return undefined;
}

/** The CreateBackup request of a policy's run of `vol` under idempotency key `key`. */
export function runRequest(p: Policy, vol: VolumeRef, key: string): CreateBackupRequest {
  return CreateBackupRequest.fromPartial({
    volume: vol,
    location: p.destination,
    mode: p.mode,
    maxSnapshots: p.maxSnapshots,
    volumeMetadata: volumeMetadata(p, vol),
    transfer: p.transfer,
    idempotencyKey: key,
  });
}
