/**
 * The runner as the API sees it: RunPolicyNow, "a policy changed", and the volumes a policy selects now.
 * The policy runner (runner.ts) implements it; the API (api/policies.ts) calls it through ApiDeps.
 */
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy } from "../../gen/rbdbackup/v1/policy";

export interface PolicyRunnerPort {
  /** Queue a backup of each selected volume now (or only `volume`); returns the job ids. */
  runNow(policy: Policy, volume?: VolumeRef): Promise<string[]>;
  /** A policy was created, updated, paused, resumed or deleted: re-read it (selection, next runs). */
  changed(name: string): void;
  /** Volumes the policy selects now (explicit + discovered). */
  selected(name: string): VolumeRef[];
}
