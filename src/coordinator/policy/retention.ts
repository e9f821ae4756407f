/**
 * Which backups a policy keeps (GFS, like Benji's `latest3,hours48,days7,weeks4,months12` and restic's
 * --keep-*): sort the candidates newest first once; keep_last keeps the first N; each period rule walks
 * the same order and keeps the first (newest) backup of each new period until it has N periods. Periods
 * are wall-clock hours, days, ISO weeks (Monday first), months and years in the schedule's time zone; a
 * repeated hour (clocks set back) is one hour. Whatever the rules say, the newest backup, backups younger
 * than min_age and pinned ones (in use, cloned) stay; and while any backup is dated after now (by more
 * than CLOCK_SKEW_MS: this clock is behind the one that dated it — it stepped back, or a new leader's is
 * slow) every one stays, as the order by time (and min_age) cannot be trusted: the backup just made
 * would sort behind older ones and go. O(n log n); no clock, no I/O.
 */
import { invalidArgument } from "../../common/errors";
import type { RetentionRule } from "../../gen/rbdbackup/v1/policy";
import { DAY_MS, HOUR_MS, isoWeekIndex, wallOf } from "./local-time";

/** A backup dated further than this after now means the clock is behind the one that dated it. */
export const CLOCK_SKEW_MS = 5 * 60_000;

/** The largest count a retention rule may ask for (shared with the CLI). */
import { MAX_RETENTION_COUNT } from "../../common/api-limits";

export { MAX_RETENTION_COUNT };
/** The longest min_age accepted: ten years (catches milliseconds given as seconds). */
export const MAX_MIN_AGE_SECONDS = 10 * 365 * 86_400;

export interface RetentionCandidate {
  id: string;
  /** Epoch ms of the backup (its source snapshot time). */
  at: number;
  /** Non-empty: a reason the backup must stay whatever the rules (used by a job, has clones). */
  pinned?: string;
}

export type RetentionReason =
  | "last"
  | "hourly"
  | "daily"
  | "weekly"
  | "monthly"
  | "yearly"
  | "newest"
  | "min_age"
  | "pinned"
  | "clock";

export interface RetentionPlan {
  /** id → the rules that keep it (in the order of RetentionReason). */
  keep: Map<string, RetentionReason[]>;
  /** ids to delete, oldest first. */
  drop: string[];
  /** A backup is dated after now (the clock is behind): everything is kept, reason "clock". */
  clockBehind: boolean;
}

const COUNTS = [
  ["keepLast", "keep_last"],
  ["hourly", "hourly"],
  ["daily", "daily"],
  ["weekly", "weekly"],
  ["monthly", "monthly"],
  ["yearly", "yearly"],
] as const;

/** Throws INVALID_ARGUMENT naming the field when the rule is unusable. */
export function validateRetention(r: RetentionRule): void {
  for (const [key, field] of COUNTS) {
    const v = r[key];
    if (!Number.isInteger(v) || v < 0) {
      throw invalidArgument(`policy.retention.${field}: ${v} is not a count`);
    }
    if (v > MAX_RETENTION_COUNT) {
      throw invalidArgument(`policy.retention.${field}: ${v} is above the maximum of ${MAX_RETENTION_COUNT}`);
    }
  }
  if (COUNTS.every(([key]) => r[key] === 0)) {
    throw invalidArgument(
      "policy.retention: every count is 0; set at least one of keep_last, hourly, daily, weekly, monthly, yearly",
    );
  }
  if (r.minAgeSeconds > MAX_MIN_AGE_SECONDS) {
    throw invalidArgument(
      `policy.retention.min_age_seconds: ${r.minAgeSeconds} is above the maximum of ${MAX_MIN_AGE_SECONDS} (10 years)`,
    );
  }
}

type PeriodRule = "hourly" | "daily" | "weekly" | "monthly" | "yearly";
const PERIOD_RULES: PeriodRule[] = ["hourly", "daily", "weekly", "monthly", "yearly"];

/** The index of each period a wall time falls in (monotonic in the wall time). */
function periodKeys(wall: number): Record<PeriodRule, number> {
  const day = Math.floor(wall / DAY_MS);
  const d = new Date(wall);
  const year = d.getUTCFullYear();
  return {
    hourly: Math.floor(wall / HOUR_MS),
    daily: day,
    weekly: isoWeekIndex(day),
    monthly: year * 12 + d.getUTCMonth(),
    yearly: year,
  };
}

/** What the rule keeps of one volume's available backups at nowMs; periods in timeZone ("" = UTC). */
export function planRetention(
  rule: RetentionRule,
  candidates: RetentionCandidate[],
  nowMs: number,
  timeZone: string,
): RetentionPlan {
  // Newest first; equal times by id, so the plan does not depend on the input order.
  const sorted = candidates
    .map((c) => ({ c, reasons: [] as RetentionReason[] }))
    .sort((a, b) => b.c.at - a.c.at || (a.c.id < b.c.id ? 1 : a.c.id > b.c.id ? -1 : 0));

  for (const e of sorted.slice(0, rule.keepLast)) e.reasons.push("last");

  const active = PERIOD_RULES.filter((p) => rule[p] > 0);
  if (active.length > 0) {
    const kept: Record<PeriodRule, number> = { hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 };
    const last: Partial<Record<PeriodRule, number>> = {};
    for (const e of sorted) {
      const keys = periodKeys(wallOf(timeZone, e.c.at));
      for (const p of active) {
        if (keys[p] === last[p]) continue; // same period as a newer backup: that one represents it
        last[p] = keys[p];
        if (kept[p] < rule[p]) {
          kept[p]++;
          e.reasons.push(p);
        }
      }
    }
  }

  const minAgeMs = rule.minAgeSeconds * 1000;
  const clockBehind = candidates.some((c) => c.at > nowMs + CLOCK_SKEW_MS);
  const keep = new Map<string, RetentionReason[]>();
  const drop: string[] = [];
  sorted.forEach(({ c, reasons }, i) => {
    if (i === 0) reasons.push("newest");
    if (minAgeMs > 0 && nowMs - c.at < minAgeMs) reasons.push("min_age");
    if (c.pinned) reasons.push("pinned");
    if (clockBehind) reasons.push("clock");
    if (reasons.length > 0) keep.set(c.id, reasons);
    else drop.push(c.id);
  });
  drop.reverse();
  return { keep, drop, clockBehind };
}
