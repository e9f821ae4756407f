/**
 * The scheduler's settings: the coordinator config's `scheduler` section, whose fields, ranges and
 * defaults are defined once, in the config schema (../config-schema.ts), every default filled in.
 */
import type { SchedulerSettings } from "../config-schema";

export type SchedulerConfig = SchedulerSettings;

/** How long a dead agent's Ceph client stays blocklisted (it is dead: its successor has a new address). */
export const FENCE_SECONDS = 3600;
