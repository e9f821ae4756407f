/**
 * A volume's protection as the API shows it: the runner's ProtectionRecord plus the newest available
 * backup at the policy's destination, judged at nowMs. State, first match wins (ProtectionState's
 * comments in policy.proto): PAUSED (the policy is paused, or the volume on its own, e.g. failed over),
 * FAILING (the last run failed), then by the recovery point: OK while the newest backup is younger than
 * twice the schedule's period around it, LATE after that; with no backup yet, PENDING until the first
 * slot after the record was created plus one period, LATE after that.
 */
import {
  type Policy,
  type PolicySchedule,
  ProtectionState,
  type VolumeProtection,
} from "../../gen/rbdbackup/v1/policy";
import type { ProtectionRecord } from "./model";
import { hasWindow, nextSlot, periodMs } from "./schedule";

export interface NewestBackup {
  id: string;
  /** Epoch ms of the backup's source snapshot (its createdAt). */
  at: number;
  /** Epoch ms when it completed. */
  completedAt: number;
}

export function protectionView(
  policy: Policy,
  rec: ProtectionRecord,
  newest: NewestBackup | undefined,
  nowMs: number,
): VolumeProtection {
  const paused = policy.paused || rec.pausedReason !== "";
  return {
    volume: rec.volume,
    policy: policy.name,
    state: stateOf(policy, rec, newest, nowMs, paused),
    lastBackupId: newest?.id ?? "",
    lastBackupAt: newest ? new Date(newest.completedAt) : undefined,
    recoveryPointAgeSeconds: newest ? Math.max(0, nowMs - newest.at) / 1000 : 0,
    nextRunAt: !paused && rec.nextRunAt > 0 ? new Date(rec.nextRunAt) : undefined,
    consecutiveFailures: rec.consecutiveFailures,
    missedRuns: rec.missedRuns,
    lastJobId: rec.lastJobId,
    lastError: rec.lastError,
    pausedReason: rec.pausedReason,
    lastVerifiedAt: undefined,
    lastVerifyOk: false,
    corruptBackups: 0,
  };
}

/** The state alone (what the metrics need of protectionView, without building the view). */
export function stateOf(
  policy: Policy,
  rec: ProtectionRecord,
  newest: NewestBackup | undefined,
  nowMs: number,
  paused: boolean,
): ProtectionState {
  if (paused) return ProtectionState.PROTECTION_STATE_PAUSED;
  if (rec.consecutiveFailures > 0) return ProtectionState.PROTECTION_STATE_FAILING;
  const s = policy.schedule;
  if (newest) {
    if (!s) return ProtectionState.PROTECTION_STATE_OK;
    return nowMs > lateAfter(s, newest.at)
      ? ProtectionState.PROTECTION_STATE_LATE
      : ProtectionState.PROTECTION_STATE_OK;
  }
  if (!s) return ProtectionState.PROTECTION_STATE_PENDING;
  const firstSlot = nextSlot(s, rec.createdAt);
  const due = hasWindow(s) ? lateAfter(s, rec.createdAt) : firstSlot + periodMs(s, firstSlot);
  return nowMs > due ? ProtectionState.PROTECTION_STATE_LATE : ProtectionState.PROTECTION_STATE_PENDING;
}

/**
 * When a recovery point made at `atMs` turns LATE: twice the schedule's period later; with a window, once
 * the second slot after it (the window's hours, not the clock's: an hourly 22:00–06:00 schedule's 05:00
 * backup is due again by 23:00, not 07:00) and the jitter have passed without a newer one.
 */
function lateAfter(s: PolicySchedule, atMs: number): number {
  if (!hasWindow(s)) return atMs + 2 * periodMs(s, atMs);
  return nextSlot(s, nextSlot(s, atMs)) + s.jitterSeconds * 1000;
}
