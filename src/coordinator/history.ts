/**
 * The catalog's history kept for `catalog.historyDays`: a term's pruner removes, every 10 minutes, the
 * DELETED backup records and the finished jobs created before the window that nothing needs any more
 * (catalog.ts pruneHistory, catalog/history-sql.ts says the rules), in batches of 1,000
 * rows per table, each its own transaction, yielding to the event loop between them, at most 50
 * batches a pass (a first pass over years of history goes on at the next). Without it a catalog grows
 * for good: 1,000 volumes backed up hourly add ~100 MB a day (a backup row and two jobs a run), and
 * listings, the disk and PostgreSQL's vacuum pay for it. historyDays 0 keeps everything.
 *
 * A volume no longer backed up never gets the backup of the window that lets its DELETED records go
 * (history-sql.ts): each pass also takes up to GONE_CHECKS_PER_PASS such volumes (the catalog's
 * goneHistoryCandidates, from a cursor that goes round), asks an agent of each one's cluster whether its
 * source image is still there (`sourceState`), and removes the records of those gone — no snapshot of
 * theirs is left to sweep. Kept, and asked again at a later pass: an image of its name in the trash (it
 * keeps its snapshots and may be restored), an agent that cannot say (older, a trash it cannot list), no
 * agent, no answer. Not detected: a volume renamed, or its pool (its snapshots go with it under a name
 * the catalog does not know).
 *
 * Who may start it: only a term (the leader; a standby's writes would be fenced anyway). A failing
 * pass (the catalog unreachable) is logged and tried at the next interval; nothing else depends on it.
 */
import { Status } from "nice-grpc-common";
import client from "prom-client";
import { statusOf } from "../common/errors";
import type { Logger } from "../common/log";
import type { VolumeRef } from "../gen/rbdbackup/v1/common";
import type { Catalog } from "./catalog/catalog";
import { volumeKey, volumeLabel } from "./model";
import type { SourceState } from "./volume-presence";

export const HISTORY_INTERVAL_MS = 10 * 60_000;
/** The first pass, this long after the term starts (not in the way of its start). */
export const HISTORY_FIRST_PASS_MS = 60_000;
export const HISTORY_BATCH = 1_000;
export const HISTORY_MAX_BATCHES = 50;
/** Volumes no longer backed up asked about per pass (one question at a time, each with a deadline). */
export const GONE_CHECKS_PER_PASS = 100;
const DAY_MS = 86_400_000;

/** Rows removed, by table; one counter for the coordinator's life (terms come and go). */
export function historyRemovedCounter(): client.Counter<"table"> {
  const c = new client.Counter({
    name: "rbdbackup_catalog_history_removed_total",
    help: "Catalog rows removed for being older than catalog.historyDays, by table (backups: DELETED records nothing needs; jobs: finished jobs whose backup record is gone).",
    labelNames: ["table"],
    registers: [],
  });
  c.labels("backups").inc(0);
  c.labels("jobs").inc(0);
  return c;
}

export interface HistoryDeps {
  catalog: Catalog;
  log: Logger;
  historyDays: number;
  removed?: client.Counter<"table">;
  now?: () => number;
  /** Where a volume's source image is, by an agent's word (volume-presence.ts sourceState); throws when unknown. */
  sourceState?: (v: VolumeRef, signal: AbortSignal) => Promise<SourceState>;
}

export class HistoryPruner {
  #timer: NodeJS.Timeout | null = null;
  #stopped = false;
  #running: Promise<unknown> | null = null;
  /** Where the next pass's gone-volume candidates start (null: from the first). */
  #cursor: VolumeRef | null = null;
  /** What the last pass could not tell (#goneVolumes logs it at info only when it changes). */
  #lastUntold = "";
  readonly #stop = new AbortController();

  constructor(private readonly deps: HistoryDeps) {}

  start(): void {
    if (this.deps.historyDays <= 0 || this.#stopped) return;
    this.#arm(HISTORY_FIRST_PASS_MS);
  }

  stop(): void {
    this.#stopped = true;
    this.#stop.abort();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #arm(ms: number): void {
    this.#timer = setTimeout(() => {
      this.#running = this.pass().finally(() => {
        this.#running = null;
        if (!this.#stopped) this.#arm(HISTORY_INTERVAL_MS);
      });
    }, ms);
    this.#timer.unref();
  }

  /** Resolves when no pass runs (tests; a stopping coordinator). */
  async settle(): Promise<void> {
    await this.#running;
  }

  /** One pass: batches until one removes less than a full batch of both tables, or the pass's cap. */
  async pass(): Promise<{ backups: number; jobs: number }> {
    const { catalog, log, historyDays } = this.deps;
    const total = { backups: 0, jobs: 0 };
    if (historyDays <= 0) return total;
    const before = (this.deps.now ?? Date.now)() - historyDays * DAY_MS;
    try {
      for (let i = 0; i < HISTORY_MAX_BATCHES && !this.#stopped; i++) {
        const r = catalog.pruneHistory(before, HISTORY_BATCH);
        total.backups += r.backups;
        total.jobs += r.jobs;
        this.deps.removed?.labels("backups").inc(r.backups);
        this.deps.removed?.labels("jobs").inc(r.jobs);
        if (r.backups < HISTORY_BATCH && r.jobs < HISTORY_BATCH) break;
        await new Promise((resolve) => setImmediate(resolve));
      }
    } catch (err) {
      log.warn("catalog history: a pass failed; tried again at the next interval", {
        err,
        removedBackups: total.backups,
        removedJobs: total.jobs,
      });
      return total;
    }
    total.backups += await this.#goneVolumes(before);
    if (total.backups || total.jobs) {
      log.info("catalog history: removed what is older than catalog.historyDays", {
        historyDays,
        before: new Date(before).toISOString(),
        backups: total.backups,
        jobs: total.jobs,
      });
    }
    return total;
  }

  /**
   * This pass's volumes to ask about: from the cursor, and — when that reaches the end with room left —
   * on from the first, so every pass asks about up to GONE_CHECKS_PER_PASS whatever the cursor.
   */
  #candidates(before: number): VolumeRef[] {
    const { catalog } = this.deps;
    const n = GONE_CHECKS_PER_PASS;
    let out = catalog.goneHistoryCandidates(before, this.#cursor, n);
    if (out.length < n && this.#cursor) {
      const seen = new Set(out.map(volumeKey));
      out = out.concat(
        catalog.goneHistoryCandidates(before, null, n - out.length).filter((v) => !seen.has(volumeKey(v))),
      );
    }
    this.#cursor = out.length < n ? null : (out.at(-1) ?? null);
    return out;
  }

  /**
   * Removes the DELETED records of volumes no longer backed up whose source is gone; how many went. A
   * cluster that does not answer (no agent, a deadline, a lost session: UNAVAILABLE) is not asked again
   * this pass: one hanging cluster would otherwise hold the pass for a call deadline per volume.
   */
  async #goneVolumes(before: number): Promise<number> {
    const { catalog, log, sourceState } = this.deps;
    if (!sourceState) return 0;
    let removed = 0;
    const outcomes: Record<SourceState | "unknown", number> = { present: 0, gone: 0, trash: 0, missing: 0, unknown: 0 };
    /** "cluster/pool" not answering this pass. */
    const notAnswering = new Set<string>();
    try {
      const candidates = this.#candidates(before);
      for (const v of candidates) {
        if (this.#stopped) break;
        const volume = volumeLabel(v);
        let state: SourceState;
        const where = `${v.cluster}/${v.pool}`;
        if (notAnswering.has(where)) {
          outcomes.unknown++;
          continue;
        }
        try {
          state = await sourceState(v, this.#stop.signal);
        } catch (err) {
          if (this.#stop.signal.aborted) break;
          // No agent, a deadline, a lost session, a pool whose ops time out: that pool of the cluster is
          // not asked again this pass. Any other error is the volume's own (its namespace outside the
          // agent's caps, say): the next one is asked.
          if (statusOf(err) === Status.UNAVAILABLE) notAnswering.add(where);
          outcomes.unknown++;
          log.debug("catalog history: whether a volume is gone is unknown; its records are kept", { volume, err });
          continue;
        }
        outcomes[state]++;
        // In the trash (restorable, its snapshots kept) or not known to be out of it: kept.
        if (state !== "gone") continue;
        let records = 0;
        for (let i = 0; i < HISTORY_MAX_BATCHES && !this.#stopped; i++) {
          const n = catalog.pruneGoneVolume(v, before, HISTORY_BATCH);
          records += n;
          if (n < HISTORY_BATCH) break;
          await new Promise((resolve) => setImmediate(resolve));
        }
        removed += records;
        this.deps.removed?.labels("backups").inc(records);
        if (records)
          log.info("catalog history: removed the DELETED records of a volume gone from its source", {
            volume,
            records,
          });
      }
    } catch (err) {
      log.warn("catalog history: the pass over volumes no longer backed up failed; tried again at the next interval", {
        err,
        removedBackups: removed,
      });
    }
    // What was asked: a cluster that never answers keeps its volumes' records unseen otherwise. At info
    // when what could not be told changed since the last pass (not every 10 minutes for good).
    const summary = { ...outcomes, poolsNotAnswering: [...notAnswering].sort() };
    // Keyed on what kind of thing could not be told and where, not on counts (each pass asks other volumes).
    const untold = JSON.stringify([outcomes.unknown > 0, outcomes.missing > 0, summary.poolsNotAnswering]);
    const changed = untold !== this.#lastUntold;
    this.#lastUntold = untold;
    if ((outcomes.unknown > 0 || outcomes.missing > 0) && changed)
      log.info(
        "catalog history: volumes no longer backed up whose source could not be told gone (records kept)",
        summary,
      );
    else if (Object.values(outcomes).some((x) => x > 0))
      log.debug("catalog history: volumes no longer backed up asked about", summary);
    return removed;
  }
}
