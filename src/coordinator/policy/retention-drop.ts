/**
 * The guard on tightening retention (UpdatePolicy; policy.proto `confirm_retention_drop`): the available
 * backups that retention would delete at each volume's next successful run, or the one after it, under
 * a policy's new version and not under its current one. Judged as retention-jobs.ts will judge them then:
 *
 * - the next run's own backup is in the plan, pinned (the run being settled stays, and takes its place
 *   in keep_last and in the newest period) — without it, keep_last 10 → 4 over 4 backups looked free —
 *   and both versions judge at that run's time (the volume's next run: its record's when the schedule
 *   stays, else the new schedule's first slot; and again at the new schedule's run after it): a day
 *   later, today's backup is no longer the newest of its day and min_age has passed for more of them;
 * - the candidates are what the policy made of the volume at the NEW destination (policyBackups);
 * - the current version's drops are subtracted only where its retention runs today: a volume it selects,
 *   at that same destination. A volume the update adds, or a destination it moves to, is reached by
 *   retention for the first time: everything kept there so far counts;
 * - volumes: those the new version selects of every volume with an available backup (a widened regex
 *   brings back volumes whose backups by this policy were left alone; one the update removes is never
 *   judged again);
 * - pinned: only a backup an RBD clone depends on (it stays until flattened). One a job uses now is
 *   counted: its pin ends with the job.
 *
 * The run's time is at least the newest backup's: a clock behind the one that dated them holds retention
 * (retention.ts), but not for ever, and the guard judges what follows. Catalog reads: the in-memory index
 * of available backups; the caller reads the records once. No clock of its own.
 */
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy, RetentionRule } from "../../gen/rbdbackup/v1/policy";
import type { Catalog } from "../catalog/catalog";
import { volumeLabel } from "../model";
import { volumeKey } from "./model";
import { planRetention, type RetentionCandidate } from "./retention";
import { policyBackups } from "./retention-jobs";
import { nextRun } from "./slots";
import { destinationKey, selects } from "./validate";

export interface RetentionDrop {
  /** Backups the new version drops that the current one keeps. */
  backups: number;
  /** Of how many volumes. */
  volumes: number;
  /** The most recently made of them (the one an operator least expects to lose). */
  newest?: { id: string; volume: VolumeRef; at: number };
}

const NEXT_RUN = "\0next run";

/** Whether the update can change what retention deletes at all (else the guard is not run). */
export function retentionScopeChanged(current: Policy, next: Policy, defaultPool: (c: string) => string): boolean {
  const rule = (r: RetentionRule | undefined) => JSON.stringify(r ?? {});
  return (
    rule(current.retention) !== rule(next.retention) ||
    (current.schedule?.timeZone ?? "") !== (next.schedule?.timeZone ?? "") ||
    destinationKey(current.destination, defaultPool) !== destinationKey(next.destination, defaultPool) ||
    JSON.stringify(current.selector ?? {}) !== JSON.stringify(next.selector ?? {})
  );
}

/**
 * `selectedNow`: the volumes the runner selects under `current` (where its retention runs today).
 * `recorded`: volume key → its record's next run, when the schedule stays (a volume without one, or
 * under a new schedule: the new schedule's first slot). The caller skips this when retentionScopeChanged says nothing that matters
 * changed.
 *
 * When retention will run is a guess: the run is settled after its slot, a failed or skipped run, or a
 * pause, defers it. So each volume is judged at two times — its next run (or now, if that is overdue),
 * and the new schedule's run after it (the next run failed, the one after succeeds) — the next run's
 * backup dated at that time, and a backup counts when either judgement drops it under the new version
 * and not under the current one. Not foreseen: a longer deferral (a pause, runs failing for days), and
 * what later runs add and min_age releases over the days after (keep_last 14 -> 2 with min_age 7 days
 * counts what goes at the next two runs, not over the week).
 */
export function retentionDrop(
  catalog: Catalog,
  current: Policy,
  next: Policy,
  selectedNow: VolumeRef[],
  nowMs: number,
  defaultPool: (cluster: string) => string,
  recorded: ReadonlyMap<string, number> = new Map(),
): RetentionDrop {
  const out: RetentionDrop = { backups: 0, volumes: 0 };
  if (!next.retention) return out;
  const dest = destinationKey(next.destination, defaultPool);
  const sameDestination = dest === destinationKey(current.destination, defaultPool);
  const judgedNow = new Set(selectedNow.map(volumeKey));
  const seen = new Set<string>();
  const withBackups = catalog
    .lastSuccessByVolume()
    .map((v) => ({ cluster: v.cluster, pool: v.pool, namespace: v.namespace, image: v.image }));
  for (const vol of [...selectedNow, ...withBackups]) {
    const key = volumeKey(vol);
    if (seen.has(key) || !selects(next, vol)) continue;
    seen.add(key);
    const made = policyBackups(catalog, next, vol, defaultPool);
    if (made.length === 0) continue;
    const newestAt = Math.max(...made.map((b) => b.createdAt));
    const due = recorded.get(key) ?? nextRun(next, vol, nowMs).nextRunAt;
    const first = Math.max(due, nowMs, newestAt + 1);
    const lostSet = new Set<string>();
    // The run after it by the new schedule (its window, jitter and DST included).
    const second = Math.max(nextRun(next, vol, first).nextRunAt, first + 1);
    for (const at of [first, second]) {
      // The run settled at `at`: its backup dated then, pinned, among the kept.
      const candidates: RetentionCandidate[] = [
        ...made.map((b) => ({ id: b.id, at: b.createdAt, pinned: b.clones ? "has clones" : undefined })),
        { id: NEXT_RUN, at, pinned: "the next run's" },
      ];
      const dropped = planRetention(next.retention, candidates, at, next.schedule?.timeZone ?? "").drop;
      if (dropped.length === 0) continue;
      // The current version's retention runs here today only for a volume it selects, at this destination.
      const already =
        sameDestination && current.retention && judgedNow.has(key)
          ? new Set(planRetention(current.retention, candidates, at, current.schedule?.timeZone ?? "").drop)
          : new Set<string>();
      for (const id of dropped) if (!already.has(id)) lostSet.add(id);
    }
    const lost = [...lostSet];
    if (lost.length === 0) continue;
    out.backups += lost.length;
    out.volumes++;
    const times = new Map(made.map((b) => [b.id, b.createdAt]));
    for (const id of lost) {
      const t = times.get(id) ?? 0;
      if (!out.newest || t > out.newest.at) out.newest = { id, volume: vol, at: t };
    }
  }
  return out;
}

/** The refusal's message: what would go, when, and how to apply the update anyway. */
export function retentionDropMessage(policy: string, d: RetentionDrop): string {
  const n = d.newest;
  const newest = n
    ? ` (the newest: backup ${n.id} of ${volumeLabel(n.volume)}, made ${new Date(n.at).toISOString()})`
    : "";
  return (
    `policy ${policy}: its new retention would delete ${d.backups} backup${d.backups === 1 ? "" : "s"} of ` +
    `${d.volumes} volume${d.volumes === 1 ? "" : "s"} that it keeps now${newest}, at each volume's next ` +
    "successful run or the one after it. Set confirm_retention_drop to apply it (rbdbackup policy update --confirm-retention-drop); " +
    "nothing was changed"
  );
}
