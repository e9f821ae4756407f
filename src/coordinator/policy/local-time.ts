/**
 * Wall-clock time in an IANA time zone, for schedule windows and retention periods. Design: a
 * "wall" time is the local date and time encoded as if it were UTC epoch ms (wall = t + offset(t)), so
 * local calendar fields come from Date's getUTC* methods and local hours/days are plain integer
 * divisions. The offset comes from Intl (the runtime's tz database), memoised per UTC day: a day whose
 * start and end have the same offset is taken to have that offset throughout (zones change offset at
 * most once a day), the rare transition day is asked per instant. Imports nothing of ours.
 */

export const MINUTE_MS = 60_000;
export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;

const formatters = new Map<string, Intl.DateTimeFormat>();
/** Per zone: UTC day index → the offset all day, or null when the offset changes that day. */
const dayOffsets = new Map<string, Map<number, number | null>>();
const MAX_CACHED_DAYS = 20_000;

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
      era: "short",
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** Whether the runtime knows this IANA time zone name ("" = UTC is the caller's business). */
export function isTimeZone(name: string): boolean {
  if (!/^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$/.test(name)) return false;
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

const isUtc = (tz: string) => tz === "" || tz === "UTC" || tz === "Etc/UTC";

/** Local minus UTC at instant t, in ms, asked of Intl (no cache). */
function offsetUncached(timeZone: string, t: number): number {
  const parts = formatter(timeZone).formatToParts(new Date(t));
  const f: Record<string, string> = {};
  for (const p of parts) f[p.type] = p.value;
  let year = Number(f.year);
  if (f.era === "BC" || f.era === "B") year = 1 - year;
  const wall = Date.UTC(year, Number(f.month) - 1, Number(f.day), Number(f.hour), Number(f.minute), Number(f.second));
  const whole = t - (((t % 1000) + 1000) % 1000); // Intl drops milliseconds
  return wall - whole;
}

/** Local minus UTC at instant t, in ms ("" = UTC). */
export function offsetMs(timeZone: string, t: number): number {
  if (isUtc(timeZone)) return 0;
  let days = dayOffsets.get(timeZone);
  if (!days) {
    days = new Map();
    dayOffsets.set(timeZone, days);
  }
  const day = Math.floor(t / DAY_MS);
  let o = days.get(day);
  if (o === undefined) {
    const a = offsetUncached(timeZone, day * DAY_MS);
    const b = offsetUncached(timeZone, (day + 1) * DAY_MS - 1000);
    o = a === b ? a : null;
    if (days.size >= MAX_CACHED_DAYS) days.clear();
    days.set(day, o);
  }
  return o ?? offsetUncached(timeZone, t);
}

/** The wall time (local fields encoded as UTC ms) of instant t. */
export function wallOf(timeZone: string, t: number): number {
  return t + offsetMs(timeZone, t);
}

/**
 * The first instant whose wall time is `wall`: on a repeated hour (clocks set back) the earlier one; in a
 * skipped hour (clocks set forward) the first instant after the gap, i.e. the first whose wall time is
 * not before `wall`.
 */
export function instantOf(timeZone: string, wall: number): number {
  if (isUtc(timeZone)) return wall;
  const a = wall - offsetMs(timeZone, wall - DAY_MS);
  const b = wall - offsetMs(timeZone, wall + DAY_MS);
  const hits = [a, b].filter((t) => wallOf(timeZone, t) === wall);
  if (hits.length > 0) return Math.min(...hits);
  // A gap: wall times jump from before `wall` to after it between min(a, b) and max(a, b).
  let lo = Math.min(a, b);
  let hi = Math.max(a, b);
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (wallOf(timeZone, mid) >= wall) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** The ISO-week index of a wall day index (day 0 = 1970-01-01, a Thursday): weeks start on Monday. */
export function isoWeekIndex(wallDay: number): number {
  return Math.floor((wallDay + 3) / 7);
}
