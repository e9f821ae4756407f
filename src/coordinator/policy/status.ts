/** TEMP stand-in of p1's status.ts (the contract's signature) — the lead drops it. */
import type { Policy, VolumeProtection } from "../../gen/rbdbackup/v1/policy";
import { ProtectionState } from "../../gen/rbdbackup/v1/policy";
import type { ProtectionRecord } from "./model";
import { periodMs } from "./schedule";

export function protectionView(
  policy: Policy,
  rec: ProtectionRecord,
  newest: { id: string; at: number; completedAt: number } | undefined,
  nowMs: number,
): VolumeProtection {
  const period = periodMs(policy.schedule ?? ({} as never), nowMs);
  const state =
    policy.paused || rec.pausedReason
      ? ProtectionState.PROTECTION_STATE_PAUSED
      : rec.consecutiveFailures > 0
        ? ProtectionState.PROTECTION_STATE_FAILING
        : !newest
          ? nowMs > rec.createdAt + 2 * period
            ? ProtectionState.PROTECTION_STATE_LATE
            : ProtectionState.PROTECTION_STATE_PENDING
          : nowMs - newest.at > 2 * period
            ? ProtectionState.PROTECTION_STATE_LATE
            : ProtectionState.PROTECTION_STATE_OK;
  return {
    volume: rec.volume,
    policy: rec.policy,
    state,
    lastBackupId: newest?.id ?? "",
    lastBackupAt: newest ? new Date(newest.completedAt) : undefined,
    recoveryPointAgeSeconds: newest ? (nowMs - newest.at) / 1000 : 0,
    nextRunAt: new Date(rec.nextRunAt),
    consecutiveFailures: rec.consecutiveFailures,
    missedRuns: rec.missedRuns,
    lastJobId: rec.lastJobId,
    lastError: rec.lastError,
    pausedReason: rec.pausedReason,
  };
}
