/**
 * The runner as the API sees it: RunPolicyNow, "a policy changed", and the volumes a policy selects now.
 * The policy runner (runner.ts) implements it; the API (api/policies.ts) calls it through ApiDeps.
 */
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy } from "../../gen/rbdbackup/v1/policy";

/** What RunPolicyNow did: the jobs it queued, and each selected volume it did not queue, with why. */
export interface RunNowResult {
  jobIds: string[];
  skipped: Array<{ volume: VolumeRef; reason: string }>;
}

export interface PolicyRunnerPort {
  /**
   * Queue a backup of each selected volume now (or only `volume`). A volume that cannot be queued (its
   * protection paused, a run still going or being queued, or queuing failed) is skipped with why, and the
   * others still run; with `volume` named, its refusal is the call's error instead.
   */
  runNow(policy: Policy, volume?: VolumeRef): Promise<RunNowResult>;
  /** A policy was created, updated, paused, resumed or deleted: re-read it (selection, next runs). */
  changed(name: string): void;
  /** Volumes the policy selects now (explicit + discovered). */
  selected(name: string): VolumeRef[];
}
