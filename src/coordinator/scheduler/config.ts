/**
 * The scheduler's settings: the coordinator config's `scheduler` section, whose fields, ranges and
 * defaults are defined once, in the config schema (../config-schema.ts), every default filled in.
 */
import type { SchedulerSettings } from "../config-schema";

export type SchedulerConfig = SchedulerSettings;

/** How long a dead agent's Ceph client stays blocklisted (it is dead: its successor has a new address). */
export const FENCE_SECONDS = 3600;

/**
 * After a restart or at a new leader's term, a running lease gets this long beyond one lease time for its
 * agent to come back: an agent notices a lost coordinator by its keepalive (10 s + 5 s) and then connects
 * and is sent on to the leader. A lease its agent did not claim by then is taken for a dead agent's (and
 * that agent's Ceph client fenced); with one lease time alone, a live agent slow to reach a new leader was
 * blocklisted for FENCE_SECONDS.
 */
export const RECONNECT_GRACE_MS = 30_000;
