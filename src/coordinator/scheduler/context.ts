/**
 * What the parts of the scheduler share: the catalog, the connected agents, the settings, the clock
 * and randomness (injectable, so tests drive time instead of waiting), the live progress, and the
 * events the façade emits.
 */
import type { CapabilitySigner } from "../../common/capability";
import type { Logger } from "../../common/log";
import type { Catalog } from "../catalog/catalog";
import type { JobRecord } from "../model";
import type { Sessions } from "../sessions";
import type { SchedulerConfig } from "./config";
import type { LiveProgress } from "./progress";
import type { StallWatch } from "./stall-watch";

export interface SchedulerEvents {
  /** A job changed (state, attempt, waiting reason). */
  job: [jobId: string];
  /** A running job reported progress (watchers may throttle these). */
  progress: [jobId: string];
  /** A job reached a final state. */
  finished: [job: JobRecord];
  /** An attempt started / failed; a lease expired. */
  attempt: [job: JobRecord];
  retry: [job: JobRecord, cause: string];
  leaseExpired: [job: JobRecord];
}

export interface SchedulerDeps {
  catalog: Catalog;
  sessions: Sessions;
  cfg: SchedulerConfig;
  log: Logger;
  /** Epoch ms (default Date.now). */
  now?: () => number;
  /** A number in [0, 1) for the retry jitter (default Math.random). */
  random?: () => number;
  /**
   * Mints the transfer capabilities leases carry (the coordinator's TLS certificate and key); absent in
   * insecure mode, where leases carry an empty capability and agents check none.
   */
  signer?: CapabilitySigner;
  /**
   * Watches for the coordinator's own stalls, whose time running leases get back (stall-watch.ts).
   * Default: a watch on the real clock — none when `now` is injected (a test driving the clock); null:
   * none.
   */
  stallWatch?: StallWatch | null;
  /**
   * Whether this coordinator still leads (HA: its lease has not lapsed by its own clock), asked right
   * before a command to an agent that no fenced catalog write precedes (a snapshot sweep's prune).
   * Default: always.
   */
  leading?: () => boolean;
}

export interface SchedulerContext {
  readonly catalog: Catalog;
  readonly sessions: Sessions;
  readonly cfg: SchedulerConfig;
  readonly log: Logger;
  readonly now: () => number;
  readonly random: () => number;
  readonly signer: CapabilitySigner | undefined;
  readonly progress: Map<string, LiveProgress>;
  emit<E extends keyof SchedulerEvents>(event: E, ...args: SchedulerEvents[E]): void;
  /** Runs a dispatch soon (coalesced). */
  kick(): void;
  /** SchedulerDeps.leading, or always. */
  leading(): boolean;
}
