/**
 * When a policy's runs are due: pure functions of a PolicySchedule and a time (epoch ms), no clock.
 * Raw slots are either epoch-aligned (start_offset + k × interval, time zone irrelevant) or the cron
 * expression's times in the schedule's time zone (cron-parser). A window then moves a slot that falls
 * outside it to the window's next opening (local time; an opening inside a skipped DST hour is the end
 * of the gap). Iterating nextSlot from a slot gives the next one, so countSlots (missed runs) counts
 * exactly the runs the runner would have started. jitterMs spreads volumes over [0, jitter) by a hash of
 * policy and volume, stable across restarts.
 */
import { createHash } from "node:crypto";
import { CronExpressionParser } from "cron-parser";
import { invalidArgument } from "../../common/errors";
import type { PolicySchedule, ScheduleWindow } from "../../gen/rbdbackup/v1/policy";
import { DAY_MS, instantOf, isTimeZone, MINUTE_MS, wallOf } from "./local-time";

/** Longest interval accepted: a year. */
export const MAX_INTERVAL_SECONDS = 366 * 86_400;
/** Cron schedules: the shortest gap between runs is checked over this many upcoming runs. */
const CRON_GAP_SAMPLES = 100;

const F = "policy.schedule";

/** Throws INVALID_ARGUMENT naming the field when the schedule cannot be run as written. */
export function validateSchedule(s: PolicySchedule, minIntervalSeconds: number): void {
  const interval = s.intervalSeconds;
  const cron = s.cron.trim();
  if (interval !== 0 && cron !== "") {
    throw invalidArgument(`${F}: set either interval_seconds or cron, not both`);
  }
  if (interval === 0 && cron === "") throw invalidArgument(`${F}: set interval_seconds or cron`);
  if (s.timeZone !== "" && !isTimeZone(s.timeZone)) {
    throw invalidArgument(`${F}.time_zone: "${s.timeZone}" is not an IANA time zone name (e.g. "Europe/Paris")`);
  }
  let shortestGapSeconds: number;
  if (interval !== 0) {
    if (!Number.isInteger(interval) || interval < minIntervalSeconds) {
      throw invalidArgument(`${F}.interval_seconds: ${interval} is below the minimum of ${minIntervalSeconds}`);
    }
    if (interval > MAX_INTERVAL_SECONDS) {
      throw invalidArgument(`${F}.interval_seconds: ${interval} is above the maximum of ${MAX_INTERVAL_SECONDS}`);
    }
    if (s.startOffsetSeconds >= interval) {
      throw invalidArgument(
        `${F}.start_offset_seconds: ${s.startOffsetSeconds} must be less than interval_seconds (${interval})`,
      );
    }
    shortestGapSeconds = interval;
  } else {
    shortestGapSeconds = validateCron(cron, s.timeZone, minIntervalSeconds);
    if (s.startOffsetSeconds !== 0) {
      throw invalidArgument(`${F}.start_offset_seconds: applies to interval schedules only; cron sets the times`);
    }
  }
  if (s.jitterSeconds >= shortestGapSeconds) {
    throw invalidArgument(
      `${F}.jitter_seconds: ${s.jitterSeconds} must be less than the schedule's period (${shortestGapSeconds} s)`,
    );
  }
  if (s.window) parseWindow(s.window);
}

/** Checks a cron expression; returns the shortest gap (seconds) between its next runs. */
function validateCron(cron: string, timeZone: string, minIntervalSeconds: number): number {
  const fields = cron.split(/\s+/);
  if (fields.length !== 5) {
    throw invalidArgument(
      `${F}.cron: "${cron}" has ${fields.length} field(s); expected 5 (minute hour day-of-month month day-of-week)`,
    );
  }
  let expr: ReturnType<typeof CronExpressionParser.parse>;
  try {
    expr = CronExpressionParser.parse(cron, { tz: tz(timeZone), currentDate: new Date() });
  } catch (e) {
    throw invalidArgument(`${F}.cron: "${cron}" does not parse: ${(e as Error).message}`);
  }
  let shortest = Number.POSITIVE_INFINITY;
  let prev: number | undefined;
  try {
    for (let i = 0; i < CRON_GAP_SAMPLES && expr.hasNext(); i++) {
      const t = expr.next().getTime();
      if (prev !== undefined) shortest = Math.min(shortest, t - prev);
      prev = t;
    }
  } catch (e) {
    throw invalidArgument(`${F}.cron: "${cron}" does not parse: ${(e as Error).message}`);
  }
  if (prev === undefined) throw invalidArgument(`${F}.cron: "${cron}" never runs`);
  const gapSeconds = Number.isFinite(shortest) ? Math.round(shortest / 1000) : MAX_INTERVAL_SECONDS;
  if (gapSeconds < minIntervalSeconds) {
    throw invalidArgument(
      `${F}.cron: "${cron}" runs ${gapSeconds} s apart, below the minimum interval of ${minIntervalSeconds} s`,
    );
  }
  return gapSeconds;
}

const tz = (timeZone: string) => (timeZone === "" ? "UTC" : timeZone);

interface Window {
  startMin: number;
  endMin: number;
}

/** Whether the schedule has a daily window (both times empty = none). */
export const hasWindow = (s: PolicySchedule): boolean => !!s.window && (s.window.start !== "" || s.window.end !== "");

/** "HH:MM" pair → minutes of the day; undefined = no window. Throws INVALID_ARGUMENT naming the field. */
function parseWindow(w: ScheduleWindow | undefined): Window | undefined {
  if (!w || (w.start === "" && w.end === "")) return undefined;
  const minutes = (v: string, field: string) => {
    const m = /^([01]\d|2[0-3]):([0-5]\d)$/.exec(v);
    if (!m) throw invalidArgument(`${F}.window.${field}: "${v}" is not a time of day as HH:MM (00:00 to 23:59)`);
    return Number(m[1]) * 60 + Number(m[2]);
  };
  const startMin = minutes(w.start, "start");
  const endMin = minutes(w.end, "end");
  if (startMin === endMin) {
    throw invalidArgument(`${F}.window: start and end are both ${w.start}; omit the window to run at any time`);
  }
  return { startMin, endMin };
}

/** The first raw slot (window not applied) strictly after afterMs. */
function rawNext(s: PolicySchedule, afterMs: number): number {
  if (s.intervalSeconds > 0) {
    const i = s.intervalSeconds * 1000;
    const off = s.startOffsetSeconds * 1000;
    return off + (Math.floor((afterMs - off) / i) + 1) * i;
  }
  return CronExpressionParser.parse(s.cron.trim(), { currentDate: new Date(afterMs), tz: tz(s.timeZone) })
    .next()
    .getTime();
}

/** The first instant ≥ t inside the window (t itself when inside). */
function windowOpenAt(w: Window, timeZone: string, t: number): number {
  const today = Math.floor(wallOf(timeZone, t) / DAY_MS);
  // One window per local day d: [d + start, d' + end) with d' = d, or d + 1 when it wraps past midnight.
  for (let d = today - 1; d <= today + 7; d++) {
    const open = instantOf(timeZone, d * DAY_MS + w.startMin * MINUTE_MS);
    const close = instantOf(timeZone, (w.endMin > w.startMin ? d : d + 1) * DAY_MS + w.endMin * MINUTE_MS);
    if (open < close && close > t) return Math.max(open, t);
  }
  throw new Error(`schedule window ${w.startMin}-${w.endMin} min never opens in ${timeZone} after ${t}`);
}

/** The end of the window that holds t (t inside it); t when t is outside every window. */
function windowCloseAt(w: Window, timeZone: string, t: number): number {
  const today = Math.floor(wallOf(timeZone, t) / DAY_MS);
  for (let d = today - 1; d <= today + 1; d++) {
    const open = instantOf(timeZone, d * DAY_MS + w.startMin * MINUTE_MS);
    const close = instantOf(timeZone, (w.endMin > w.startMin ? d : d + 1) * DAY_MS + w.endMin * MINUTE_MS);
    if (open <= t && t < close) return close;
  }
  return t;
}

/**
 * When a run of the slot at `slotMs` starts: the slot plus the volume's jitter, kept inside the window
 * that holds the slot and before the next slot (a jitter longer than that wraps within it), so a run never
 * starts outside the schedule's window, nor after the next slot — a window can move a slot to its opening,
 * close to the next one, and a run past the next slot would count that slot missed.
 */
export function runStart(s: PolicySchedule, slotMs: number, jitter: number): number {
  const w = parseWindow(s.window);
  if (!w || jitter <= 0) return slotMs + jitter;
  const room = Math.min(windowCloseAt(w, s.timeZone, slotMs), nextSlot(s, slotMs)) - slotMs;
  return room > 0 ? slotMs + (jitter % room) : slotMs;
}

/** Epoch ms of the first slot strictly after afterMs, moved to the window's next opening when outside it. */
export function nextSlot(s: PolicySchedule, afterMs: number): number {
  const raw = rawNext(s, afterMs);
  const w = parseWindow(s.window);
  return w ? windowOpenAt(w, s.timeZone, raw) : raw;
}

/** This volume's fixed delay after each slot, in [0, jitter_seconds × 1000): a hash of policy and volume. */
export function jitterMs(s: PolicySchedule, policyName: string, volumeKey: string): number {
  const span = s.jitterSeconds * 1000;
  if (span <= 0) return 0;
  const h = createHash("sha256").update(policyName).update("\0").update(volumeKey).digest();
  return Math.floor((h.readUIntBE(0, 6) / 2 ** 48) * span);
}

/** The schedule's period at atMs: the interval, or the gap between the cron runs around atMs. */
export function periodMs(s: PolicySchedule, atMs: number): number {
  if (s.intervalSeconds > 0) return s.intervalSeconds * 1000;
  const expr = CronExpressionParser.parse(s.cron.trim(), { currentDate: new Date(atMs + 1), tz: tz(s.timeZone) });
  const before = expr.prev().getTime(); // the last run at or before atMs
  expr.reset(new Date(atMs));
  return expr.next().getTime() - before;
}

/** How many slots (as nextSlot iterates them) fall in (fromMs, toMs], counting at most `limit`. */
export function countSlots(s: PolicySchedule, fromMs: number, toMs: number, limit: number): number {
  if (toMs <= fromMs || limit <= 0) return 0;
  const w = parseWindow(s.window);
  if (!w && s.intervalSeconds > 0) {
    const i = s.intervalSeconds * 1000;
    const off = s.startOffsetSeconds * 1000;
    return Math.min(limit, Math.floor((toMs - off) / i) - Math.floor((fromMs - off) / i));
  }
  let n = 0;
  if (!w) {
    // Cron without a window: one iterator, not a parse per slot.
    const expr = CronExpressionParser.parse(s.cron.trim(), { currentDate: new Date(fromMs), tz: tz(s.timeZone) });
    while (n < limit && expr.next().getTime() <= toMs) n++;
    return n;
  }
  for (let t = nextSlot(s, fromMs); t <= toMs && n < limit; t = nextSlot(s, t)) n++;
  return n;
}
