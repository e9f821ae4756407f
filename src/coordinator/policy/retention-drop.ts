/**
 * The guard on tightening retention (UpdatePolicy; policy.proto `confirm_retention_drop`): the available
 * backups a policy's new version would have its retention delete that its current version keeps, judged
 * now, per volume, as retention-jobs.ts will judge them after each volume's next successful run — the
 * same candidates, pinned the same way (in use, with clones), at the new destination. A destination
 * the current version does not write to is one its retention never reaches: all it keeps there. Pure
 * over the catalog's in-memory index of available backups; no I/O, no clock.
 */
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { Policy } from "../../gen/rbdbackup/v1/policy";
import type { Catalog } from "../catalog/catalog";
import { volumeLabel } from "../model";
import { volumeKey } from "./model";
import { planRetention } from "./retention";
import { retentionCandidates } from "./retention-jobs";

export interface RetentionDrop {
  /** Backups the new version drops that the current one keeps. */
  backups: number;
  /** Of how many volumes. */
  volumes: number;
  /** The most recently made of them (the one an operator least expects to lose). */
  newest?: { id: string; volume: VolumeRef; at: number };
}

/** Where `p`'s backups go, its pool "" resolved ("" when the default is unknown: retention reaches none). */
function destinationKey(p: Policy, defaultPool: (cluster: string) => string): string {
  const d = p.destination;
  if (!d) return "";
  const pool = d.pool || defaultPool(d.cluster);
  return pool ? `${d.cluster}\0${pool}\0${d.namespace}` : "";
}

export function retentionDrop(
  catalog: Catalog,
  current: Policy,
  next: Policy,
  volumes: VolumeRef[],
  nowMs: number,
  defaultPool: (cluster: string) => string,
): RetentionDrop {
  const out: RetentionDrop = { backups: 0, volumes: 0 };
  if (!next.retention) return out;
  const dest = destinationKey(next, defaultPool);
  const sameDestination = dest !== "" && dest === destinationKey(current, defaultPool);
  const seen = new Set<string>();
  for (const vol of volumes) {
    const key = volumeKey(vol);
    if (seen.has(key)) continue;
    seen.add(key);
    // The backups `next` would judge: made by this policy (since it was created) at next's destination.
    const candidates = retentionCandidates(catalog, next, vol, defaultPool);
    if (candidates.length === 0) continue;
    const dropped = planRetention(next.retention, candidates, nowMs, next.schedule?.timeZone ?? "").drop;
    if (dropped.length === 0) continue;
    const already =
      sameDestination && current.retention
        ? new Set(planRetention(current.retention, candidates, nowMs, current.schedule?.timeZone ?? "").drop)
        : new Set<string>();
    const lost = dropped.filter((id) => !already.has(id));
    if (lost.length === 0) continue;
    out.backups += lost.length;
    out.volumes++;
    const at = new Map(candidates.map((c) => [c.id, c.at]));
    for (const id of lost) {
      const t = at.get(id) ?? 0;
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
    `${d.volumes} volume${d.volumes === 1 ? "" : "s"} that it keeps now${newest}, each volume's after its next ` +
    "successful run. Set confirm_retention_drop to apply it (rbdbackup policy update --confirm-retention-drop); " +
    "nothing was changed"
  );
}
