/** TEMP stand-in of p1's retention.ts (the contract's signatures; keep_last, min_age, pinned only) — the lead drops it. */
import type { RetentionRule } from "../../gen/rbdbackup/v1/policy";

export interface RetentionCandidate {
  id: string;
  at: number;
  pinned?: string;
}

export function validateRetention(_r: RetentionRule): void {}

export function planRetention(
  rule: RetentionRule,
  candidates: RetentionCandidate[],
  nowMs: number,
  _timeZone: string,
): { keep: Map<string, string[]>; drop: string[] } {
  const sorted = [...candidates].sort((a, b) => b.at - a.at);
  const keep = new Map<string, string[]>();
  const add = (id: string, why: string) => keep.set(id, [...(keep.get(id) ?? []), why]);
  sorted.forEach((c, i) => {
    if (i === 0) add(c.id, "newest");
    if (i < rule.keepLast) add(c.id, "last");
    if (nowMs - c.at < rule.minAgeSeconds * 1000) add(c.id, "min_age");
    if (c.pinned) add(c.id, "pinned");
  });
  const drop = sorted
    .filter((c) => !keep.has(c.id))
    .reverse()
    .map((c) => c.id);
  return { keep, drop };
}
