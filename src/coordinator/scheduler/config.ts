/**
 * The scheduler's settings: the coordinator config's `scheduler` section, whose fields, ranges and
 * defaults are defined once, in the config schema (../config-schema.ts). The settings below that the
 * schema does not (yet) name are optional here, with their defaults in EXTRA_DEFAULTS.
 */
import type { SchedulerSettings } from "../config-schema";

/** Settings of the retry policy and the confirmation of backups (see retry-policy.ts, confirmation.ts). */
export interface ExtraSchedulerSettings {
  /**
   * Delay before another attempt of a job whose attempt failed RESOURCE_EXHAUSTED (a full pool or a
   * destination at its transfer limit), ms; it doubles per attempt (at most 4×).
   */
  fullPoolBackoffMs: number;
  /** Delay before a retry that found the previous attempt's base image still there (ALREADY_EXISTS), ms. */
  leftoverWaitMs: number;
  /** How long a backup's outcome may wait for an agent of the destination to confirm it, ms. */
  confirmTimeoutMs: number;
}

export type SchedulerConfig = SchedulerSettings & Partial<ExtraSchedulerSettings>;

export const EXTRA_DEFAULTS: ExtraSchedulerSettings = {
  fullPoolBackoffMs: 300_000,
  leftoverWaitMs: 30_000,
  confirmTimeoutMs: 600_000,
};

/** A setting of ExtraSchedulerSettings: the configured value, else its default. */
export const extra = <K extends keyof ExtraSchedulerSettings>(cfg: SchedulerConfig, k: K): number =>
  cfg[k] ?? EXTRA_DEFAULTS[k];

/** How long a dead agent's Ceph client stays blocklisted (it is dead: its successor has a new address). */
export const FENCE_SECONDS = 3600;
