/**
 * Which backed-up volumes no longer exist where they were backed up from — for the last-success gauge
 * (metrics.ts): a volume deleted on purpose keeps its backups (Cinder keeps a deleted volume's backups),
 * and its `rbdbackup_last_success_timestamp_seconds` only aged, so RbdbackupNoRecentBackup fired for it
 * forever. The leader asks an agent of the volume's cluster (a probe: pool, namespace, image) about each
 * volume whose newest available backup is older than `staleAfterMs` — the only ones that can alert — every
 * `intervalMs`, a few questions at a time (`concurrency`), each with the session call's deadline; a volume found missing is
 * left out of the gauge until a later sweep finds it again (recreated under its name) or its backups are
 * gone. A cluster without a connected agent, or a question that fails, changes nothing: a volume is
 * "gone" only on an agent's word. What it knows lives in memory: a new leader sweeps soon after it leads
 * (`firstSweepMs`), well inside the alert's `for: 10m`, and a sweep that left volumes unasked (their
 * cluster's agent not back yet after the restart, a question that failed) is followed by another that
 * soon, not an interval later.
 */
import type { Logger } from "../common/log";
import type { VolumeRef } from "../gen/rbdbackup/v1/common";
import type { Catalog } from "./catalog/catalog";
import { ask, probeRequest } from "./jobs/probes";
import { volumeLabel } from "./model";
import type { Sessions } from "./sessions";

export const PRESENCE_INTERVAL_MS = 15 * 60_000;
export const PRESENCE_FIRST_SWEEP_MS = 60_000;
/** Below the shipped alert's 26 h: a volume is checked before it can alert (volumePresenceStaleAfterHours). */
export const PRESENCE_STALE_AFTER_MS = 20 * 3600_000;
/** Questions in flight at once (across clusters; an agent's probe is a few metadata reads). */
export const PRESENCE_CONCURRENCY = 8;

export interface VolumePresenceDeps {
  catalog: Pick<Catalog, "lastSuccessByVolume">;
  sessions: Pick<Sessions, "ofCluster" | "any">;
  log: Logger;
  leading: () => boolean;
  staleAfterMs?: number;
  intervalMs?: number;
  firstSweepMs?: number;
  concurrency?: number;
  now?: () => number;
}

/**
 * Where a volume's source image is, on the word of an agent of its cluster (a probe: its pool, namespace
 * and image): "present"; "gone" — its pool is gone (deleted with its images and snapshots; a pool renamed
 * reads the same, as a renamed volume does), or the image is not there nor one of its name in its pool's
 * (namespace's) trash (asked with `checkTrash`; a namespace's trash is asked even when the namespace is no
 * longer listed); "trash" — an image of its name is in that trash (it keeps its snapshots, and may be
 * restored); "missing" — not there, and that is all that is known: the trash was not asked about, or the
 * agent could not say (before 2026-12-07, a trash it could not list). Throws when no agent of the cluster
 * is connected or the question fails.
 */
export type SourceState = "present" | "gone" | "trash" | "missing";

export async function sourceState(
  sessions: Pick<Sessions, "any">,
  v: Pick<VolumeRef, "cluster" | "pool" | "namespace" | "image">,
  signal: AbortSignal,
  opts: { checkTrash?: boolean } = {},
): Promise<SourceState> {
  const q = { pools: [v.pool], image: v, ...(opts.checkTrash ? { checkTrash: true } : {}) };
  const r = await ask(sessions.any(v.cluster), probeRequest(q), "probe", signal);
  if (r.imageExists) return "present";
  if (r.missingPools.length > 0) return "gone";
  return r.imageInTrash === undefined ? "missing" : r.imageInTrash ? "trash" : "gone";
}

const key = (v: Pick<VolumeRef, "cluster" | "pool" | "namespace" | "image">) =>
  `${v.cluster}\0${v.pool}\0${v.namespace}\0${v.image}`;

export class VolumePresence {
  readonly #d: VolumePresenceDeps;
  readonly #gone = new Set<string>();
  #timer: NodeJS.Timeout | null = null;
  #ac = new AbortController();
  #sweeping: Promise<unknown> | null = null;
  #wasLeading = false;

  constructor(deps: VolumePresenceDeps) {
    this.#d = deps;
  }

  /** The volume's source image was found missing by the last sweep that asked about it. */
  isGone(v: Pick<VolumeRef, "cluster" | "pool" | "namespace" | "image">): boolean {
    return this.#gone.has(key(v));
  }

  /**
   * One sweep (the timer's, or a test's): asks about every stale volume of a cluster with a connected
   * agent. Returns what it learned. On a standby: nothing (agents connect to the leader only).
   */
  async sweep(): Promise<{ asked: number; gone: number; unasked: number }> {
    const d = this.#d;
    if (!d.leading()) return { asked: 0, gone: 0, unasked: 0 };
    const now = (d.now ?? Date.now)();
    const staleAfter = d.staleAfterMs ?? PRESENCE_STALE_AFTER_MS;
    const all = d.catalog.lastSuccessByVolume();
    const stale = all.filter((v) => now - v.at > staleAfter);
    const present = new Set(all.map(key));
    // Forget what no longer has an available backup (the gauge has no series for it anyway), and what was
    // backed up again since (recreated under its name): it is not asked about again until it is stale.
    for (const k of this.#gone) if (!present.has(k)) this.#gone.delete(k);
    for (const v of all) if (now - v.at <= staleAfter) this.#gone.delete(key(v));
    let asked = 0;
    let unasked = 0;
    const askAbout = async (v: (typeof stale)[number]) => {
      if (d.sessions.ofCluster(v.cluster).length === 0) {
        unasked++;
        return;
      }
      try {
        // Not where it was backed up from, in the trash or not: no backups to expect (the gauge's use).
        const missing = (await sourceState(d.sessions, v, this.#ac.signal)) !== "present";
        asked++;
        if (missing && !this.#gone.has(key(v))) {
          d.log.info("a backed-up volume no longer exists at its source: left out of the last-success metric", {
            volume: volumeLabel(v),
          });
        }
        if (missing) this.#gone.add(key(v));
        else this.#gone.delete(key(v));
      } catch (err) {
        unasked++;
        d.log.debug("volume presence: question not answered; the volume's state is kept", { cluster: v.cluster, err });
      }
    };
    // A few questions at a time: a backlog of stale volumes (thousands of deleted Cinder volumes whose
    // backups are kept) answered one by one could outlast the alert's 10 min after a leader change.
    let next = 0;
    const worker = async () => {
      while (next < stale.length && !this.#ac.signal.aborted && d.leading())
        await askAbout(stale[next++] as (typeof stale)[number]);
    };
    await Promise.all(Array.from({ length: Math.min(d.concurrency ?? PRESENCE_CONCURRENCY, stale.length) }, worker));
    return { asked, gone: this.#gone.size, unasked };
  }

  /** Sweeps every intervalMs, and soon after this coordinator starts leading. */
  start(): void {
    if (this.#timer) return;
    const d = this.#d;
    const first = d.firstSweepMs ?? PRESENCE_FIRST_SWEEP_MS;
    const interval = d.intervalMs ?? PRESENCE_INTERVAL_MS;
    let nextAt = Date.now() + first;
    const tick = () => {
      const leading = d.leading();
      // A new term: sweep soon, not up to an interval later.
      if (leading && !this.#wasLeading) nextAt = Math.min(nextAt, Date.now() + first);
      this.#wasLeading = leading;
      if (leading && !this.#sweeping && Date.now() >= nextAt) {
        nextAt = Date.now() + interval;
        this.#sweeping = this.sweep()
          .then((r) => {
            // Some volumes not asked about: soon again, not an interval later (their alert's for: 10m).
            if (r.unasked > 0) nextAt = Math.min(nextAt, Date.now() + first);
          })
          .catch((err) => d.log.warn("volume presence sweep failed", { err }))
          .finally(() => {
            this.#sweeping = null;
          });
      }
    };
    this.#timer = setInterval(tick, Math.min(first, interval, 10_000));
    this.#timer.unref();
  }

  /** Stops the timer and any question in flight (bounded by the session call's deadline otherwise). */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#ac.abort();
    await this.#sweeping;
  }
}
