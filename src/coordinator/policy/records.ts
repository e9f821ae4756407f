/**
 * The runner's writes of protection records. The runner reads a record at the start of a tick and
 * writes it back after awaiting agents (a run being built), while the API may change it meanwhile:
 * FailoverVolume pauses it (pausedReason), DeletePolicy or a narrower selector removes it. So a write
 * keeps the stored pausedReason and never brings a removed record back, and a run is queued only if
 * its record is still there and neither it nor its policy is paused (asked in the queueing transaction).
 */
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy } from "../../gen/rbdbackup/v1/policy";
import type { PolicyStore } from "../catalog/policy-store";
import { type ProtectionRecord, volumeKey } from "./model";
import { nextRun } from "./slots";

/** Saves `next` with the stored pausedReason; nothing when the store no longer has it. Returns what was saved. */
export function saveRunnerFields(store: PolicyStore, next: ProtectionRecord): ProtectionRecord | undefined {
  const cur = store.getProtection(next.policy, volumeKey(next.volume));
  if (!cur) return undefined;
  const saved = { ...next, pausedReason: cur.pausedReason };
  store.upsertProtection(saved);
  return saved;
}

/** The run of `vol` may still be queued: its record is there, not paused, and its policy not paused. */
export function stillDue(store: PolicyStore, p: Policy, vol: VolumeRef): boolean {
  const cur = store.getProtection(p.name, volumeKey(vol));
  return !!cur && !cur.pausedReason && store.getPolicy(p.name)?.paused === false;
}

/** A policy's schedule as a comparable string (what its records' slots follow). */
export function scheduleKey(p: Policy): string {
  return JSON.stringify(p.schedule ?? {});
}

/** Whether `a` and `b` have the same schedule. */
export function sameSchedule(a: Policy, b: Policy): boolean {
  return scheduleKey(a) === scheduleKey(b);
}

/**
 * `p`'s schedule changed at `sinceMs`: every record of it moves to the new schedule's first slot after
 * that. UpdatePolicy does it in the transaction that stores the document (`sinceMs` = its updated_at),
 * so the change holds even if no runner's tick sees it before a restart or a new leader. The runner does
 * it again when it sees the change, from the same instant (the policy's updated_at, unless its own
 * clock is behind): the same slots, and a record that a run being built wrote back with the old
 * schedule's slot meanwhile is mended.
 */
export function reslot(store: PolicyStore, p: Policy, sinceMs: number): void {
  for (const rec of store.protectionOfPolicy(p.name)) {
    const next = nextRun(p, rec.volume, sinceMs);
    if (next.nextSlotAt !== rec.nextSlotAt || next.nextRunAt !== rec.nextRunAt)
      store.upsertProtection({ ...rec, ...next });
  }
}
