/**
 * Schedules without a clock: validation messages naming the field, interval and cron slots (cron in a
 * time zone, across DST), windows (wrapping midnight, in a time zone, opening inside a skipped hour),
 * missed-slot counting consistent with nextSlot, jitter stable and spread, the period around a time.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AppError, Status } from "../../../src/common/errors";
import {
  countSlots,
  jitterMs,
  nextSlot,
  periodMs,
  runStart,
  validateSchedule,
} from "../../../src/coordinator/policy/schedule";
import { advance, newRecord } from "../../../src/coordinator/policy/slots";
import { Policy, type PolicySchedule } from "../../../src/gen/rbdbackup/v1/policy";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const T = (s: string) => Date.parse(s);
const iso = (t: number) => new Date(t).toISOString();

const sched = (s: Partial<PolicySchedule>): PolicySchedule => ({
  intervalSeconds: 0,
  cron: "",
  timeZone: "",
  startOffsetSeconds: 0,
  jitterSeconds: 0,
  window: undefined,
  ...s,
});

describe("validateSchedule", () => {
  const bad = (s: Partial<PolicySchedule>, re: RegExp, min = 30) =>
    assert.throws(
      () => validateSchedule(sched(s), min),
      (e: unknown) => e instanceof AppError && e.status === Status.INVALID_ARGUMENT && re.test(e.message),
    );
  const ok = (s: Partial<PolicySchedule>, min = 30) => validateSchedule(sched(s), min);

  it("exactly one of interval_seconds and cron", () => {
    bad({}, /^policy\.schedule: set interval_seconds or cron$/);
    bad(
      { intervalSeconds: 60, cron: "0 * * * *" },
      /^policy\.schedule: set either interval_seconds or cron, not both$/,
    );
  });
  it("interval bounds", () => {
    bad({ intervalSeconds: 10 }, /^policy\.schedule\.interval_seconds: 10 is below the minimum of 30$/);
    bad({ intervalSeconds: 59 }, /^policy\.schedule\.interval_seconds: 59 is below the minimum of 60$/, 60);
    bad({ intervalSeconds: 400 * 86_400 }, /^policy\.schedule\.interval_seconds: 34560000 is above the maximum/);
    ok({ intervalSeconds: 30 });
    ok({ intervalSeconds: 5 }, 1); // a test-only lower minimum
  });
  it("cron: five fields, parses, not more often than the minimum interval", () => {
    bad({ cron: "0 2 * * * *" }, /^policy\.schedule\.cron: "0 2 \* \* \* \*" has 6 field\(s\); expected 5/);
    bad({ cron: "@daily" }, /^policy\.schedule\.cron: "@daily" has 1 field\(s\); expected 5/);
    bad({ cron: "61 * * * *" }, /^policy\.schedule\.cron: "61 \* \* \* \*" does not parse: /);
    bad({ cron: "0 0 30 2 *" }, /^policy\.schedule\.cron: .* does not parse/);
    bad({ cron: "bogus x y z w" }, /^policy\.schedule\.cron: .* does not parse/);
    bad(
      { cron: "* * * * *" },
      /^policy\.schedule\.cron: "\* \* \* \* \*" runs 60 s apart, below the minimum interval of 300 s$/,
      300,
    );
    bad({ cron: "0,59 0,23 * * *" }, /runs 60 s apart/, 120); // 23:59 → 00:00 next day
    ok({ cron: "*/5 * * * *" }, 300);
    ok({ cron: "  0 2 * * 1-5  ", timeZone: "Europe/Berlin" });
  });
  it("time zone must be an IANA name", () => {
    bad(
      { intervalSeconds: 60, timeZone: "Mars/Olympus" },
      /^policy\.schedule\.time_zone: "Mars\/Olympus" is not an IANA time zone name/,
    );
    bad({ intervalSeconds: 60, timeZone: "+01:00" }, /^policy\.schedule\.time_zone: /);
    ok({ intervalSeconds: 60, timeZone: "America/New_York" });
    ok({ intervalSeconds: 60, timeZone: "UTC" });
  });
  it("window: HH:MM pairs, both or neither, not equal", () => {
    bad(
      { intervalSeconds: 60, window: { start: "24:00", end: "06:00" } },
      /^policy\.schedule\.window\.start: "24:00" is not a time of day as HH:MM/,
    );
    bad(
      { intervalSeconds: 60, window: { start: "22:00", end: "6:00" } },
      /^policy\.schedule\.window\.end: "6:00" is not/,
    );
    bad({ intervalSeconds: 60, window: { start: "22:00", end: "" } }, /^policy\.schedule\.window\.end: "" is not/);
    bad(
      { intervalSeconds: 60, window: { start: "01:00", end: "01:00" } },
      /^policy\.schedule\.window: start and end are both 01:00/,
    );
    ok({ intervalSeconds: 60, window: { start: "", end: "" } });
    ok({ intervalSeconds: 60, window: { start: "22:00", end: "06:00" } });
  });
  it("jitter below the period; start offset below the interval and only for intervals", () => {
    bad(
      { intervalSeconds: 60, jitterSeconds: 60 },
      /^policy\.schedule\.jitter_seconds: 60 must be less than the schedule's period \(60 s\)$/,
    );
    ok({ intervalSeconds: 60, jitterSeconds: 59 });
    bad(
      { cron: "0 * * * *", jitterSeconds: 3600 },
      /^policy\.schedule\.jitter_seconds: 3600 must be less .* \(3600 s\)$/,
    );
    ok({ cron: "0 * * * *", jitterSeconds: 3599 });
    bad(
      { intervalSeconds: 60, startOffsetSeconds: 60 },
      /^policy\.schedule\.start_offset_seconds: 60 must be less than interval_seconds \(60\)$/,
    );
    bad(
      { cron: "0 * * * *", startOffsetSeconds: 5 },
      /^policy\.schedule\.start_offset_seconds: applies to interval schedules only/,
    );
  });
});

describe("nextSlot", () => {
  it("interval slots are epoch + offset + k × interval, strictly after", () => {
    const s = sched({ intervalSeconds: 3600, startOffsetSeconds: 600 });
    assert.equal(iso(nextSlot(s, T("2024-01-01T12:10:00Z"))), "2024-01-01T13:10:00.000Z");
    assert.equal(iso(nextSlot(s, T("2024-01-01T12:09:59.999Z"))), "2024-01-01T12:10:00.000Z");
    assert.equal(iso(nextSlot(s, T("2024-01-01T12:10:00.001Z"))), "2024-01-01T13:10:00.000Z");
    // The time zone does not move interval slots.
    assert.equal(nextSlot({ ...s, timeZone: "Asia/Kolkata" }, T("2024-01-01T12:10:00Z")), T("2024-01-01T13:10:00Z"));
    assert.equal(iso(nextSlot(sched({ intervalSeconds: 30 }), T("2024-01-01T00:00:10Z"))), "2024-01-01T00:00:30.000Z");
  });

  it("cron in the schedule's time zone, across DST", () => {
    const berlin = sched({ cron: "0 2 * * *", timeZone: "Europe/Berlin" });
    assert.equal(iso(nextSlot(berlin, T("2024-01-15T00:00:00Z"))), "2024-01-15T01:00:00.000Z"); // CET
    assert.equal(iso(nextSlot(berlin, T("2024-07-14T12:00:00Z"))), "2024-07-15T00:00:00.000Z"); // CEST
    assert.equal(iso(nextSlot(berlin, T("2024-07-15T00:00:00Z"))), "2024-07-16T00:00:00.000Z"); // strictly after
    assert.equal(iso(nextSlot(sched({ cron: "0 2 * * *" }), T("2024-07-14T12:00:00Z"))), "2024-07-15T02:00:00.000Z");
    // New York, clocks forward on 2024-03-10: 02:30 does not exist that day; it runs once, after the gap.
    const ny = sched({ cron: "30 2 * * *", timeZone: "America/New_York" });
    assert.equal(iso(nextSlot(ny, T("2024-03-09T12:00:00Z"))), "2024-03-10T07:30:00.000Z");
    assert.equal(iso(nextSlot(ny, T("2024-03-10T07:30:00Z"))), "2024-03-11T06:30:00.000Z");
    // Clocks back on 2024-11-03: 01:30 happens twice; the schedule runs once.
    const back = sched({ cron: "30 1 * * *", timeZone: "America/New_York" });
    assert.equal(countSlots(back, T("2024-11-01T00:00:00Z"), T("2024-12-01T00:00:00Z"), 1000), 30);
  });

  it("a window wrapping past midnight moves slots to its next opening", () => {
    const s = sched({ intervalSeconds: 3600, window: { start: "22:00", end: "06:00" } });
    assert.equal(iso(nextSlot(s, T("2024-01-01T11:30:00Z"))), "2024-01-01T22:00:00.000Z");
    assert.equal(iso(nextSlot(s, T("2024-01-01T22:30:00Z"))), "2024-01-01T23:00:00.000Z");
    assert.equal(iso(nextSlot(s, T("2024-01-02T04:30:00Z"))), "2024-01-02T05:00:00.000Z");
    assert.equal(iso(nextSlot(s, T("2024-01-02T05:30:00Z"))), "2024-01-02T22:00:00.000Z"); // end excluded
    const offset = sched({ intervalSeconds: 3600, window: { start: "21:30", end: "00:30" } });
    assert.equal(iso(nextSlot(offset, T("2024-01-01T12:00:00Z"))), "2024-01-01T21:30:00.000Z");
    assert.equal(iso(nextSlot(offset, T("2024-01-01T21:30:00Z"))), "2024-01-01T22:00:00.000Z");
    assert.equal(iso(nextSlot(offset, T("2024-01-02T00:00:00Z"))), "2024-01-02T21:30:00.000Z");
  });

  it("a window in a time zone; an opening in a skipped hour opens at the end of the gap", () => {
    const berlin = sched({
      intervalSeconds: 3600,
      timeZone: "Europe/Berlin",
      window: { start: "01:00", end: "03:00" },
    });
    assert.equal(iso(nextSlot(berlin, T("2024-01-15T02:30:00Z"))), "2024-01-16T00:00:00.000Z");
    assert.equal(iso(nextSlot(berlin, T("2024-07-15T02:30:00Z"))), "2024-07-15T23:00:00.000Z");
    const ny = sched({ intervalSeconds: 3600, timeZone: "America/New_York", window: { start: "02:30", end: "04:00" } });
    // 2024-03-10: 02:00 EST jumps to 03:00 EDT (07:00Z); the window opens then and closes at 04:00 EDT.
    assert.equal(iso(nextSlot(ny, T("2024-03-10T05:30:00Z"))), "2024-03-10T07:00:00.000Z");
    assert.equal(iso(nextSlot(ny, T("2024-03-10T07:00:00Z"))), "2024-03-11T06:30:00.000Z");
    // A window entirely inside the skipped hour does not open that day.
    const gone = sched({
      intervalSeconds: 3600,
      timeZone: "America/New_York",
      window: { start: "02:00", end: "02:30" },
    });
    assert.equal(iso(nextSlot(gone, T("2024-03-10T05:30:00Z"))), "2024-03-11T06:00:00.000Z");
  });
});

describe("countSlots (missed runs)", () => {
  it("interval: slots in (from, to], at most limit", () => {
    const s = sched({ intervalSeconds: 3600 });
    assert.equal(countSlots(s, T("2024-01-01T00:00:00Z"), T("2024-01-01T10:00:00Z"), 1000), 10);
    assert.equal(countSlots(s, T("2024-01-01T00:00:00Z"), T("2024-01-01T09:59:59Z"), 1000), 9);
    assert.equal(countSlots(s, T("2024-01-01T00:00:00Z"), T("2024-01-01T10:00:00Z"), 3), 3);
    assert.equal(countSlots(s, T("2024-01-01T10:00:00Z"), T("2024-01-01T10:00:00Z"), 3), 0);
    assert.equal(countSlots(s, T("2024-01-01T10:00:00Z"), T("2024-01-01T09:00:00Z"), 3), 0);
    assert.equal(countSlots(sched({ intervalSeconds: 30 }), 0, 365 * DAY, 10), 10);
  });
  it("windows collapse the slots outside them into the opening", () => {
    const s = sched({ intervalSeconds: 3600, window: { start: "00:00", end: "02:00" } });
    assert.equal(countSlots(s, T("2024-01-01T00:00:00Z") - 1, T("2024-01-01T23:59:00Z"), 1000), 2);
    assert.equal(countSlots(s, T("2024-01-01T00:00:00Z") - 1, T("2024-01-03T23:59:00Z"), 1000), 6);
    const c = sched({ cron: "*/15 * * * *", timeZone: "Europe/Berlin", window: { start: "09:00", end: "10:00" } });
    assert.equal(countSlots(c, T("2024-01-01T00:00:00Z"), T("2024-01-02T00:00:00Z"), 1000), 4);
  });
  it("cron", () => {
    assert.equal(
      countSlots(sched({ cron: "*/15 * * * *" }), T("2024-01-01T00:00:00Z"), T("2024-01-02T00:00:00Z"), 1000),
      96,
    );
    assert.equal(
      countSlots(sched({ cron: "*/15 * * * *" }), T("2024-01-01T00:00:00Z"), T("2024-01-02T00:00:00Z"), 7),
      7,
    );
    // Weekdays at 02:00 New York time in March 2024: 21 weekdays.
    assert.equal(
      countSlots(
        sched({ cron: "0 2 * * 1-5", timeZone: "America/New_York" }),
        T("2024-03-01T00:00:00Z"),
        T("2024-04-01T04:00:00Z"),
        1000,
      ),
      21,
    );
  });
  it("agrees with iterating nextSlot", () => {
    const schedules = [
      sched({ intervalSeconds: 3700, startOffsetSeconds: 123 }),
      sched({ intervalSeconds: 5400, timeZone: "Australia/Lord_Howe", window: { start: "23:00", end: "03:00" } }),
      sched({ cron: "17 */3 * * *", timeZone: "America/St_Johns" }),
    ];
    for (const s of schedules) {
      for (let k = 0; k < 20; k++) {
        const from = T("2024-03-01T00:00:00Z") + k * 37 * HOUR + k * 1234;
        const to = from + k * 11 * HOUR;
        let n = 0;
        for (let t = nextSlot(s, from); t <= to; t = nextSlot(s, t)) n++;
        assert.equal(countSlots(s, from, to, 10_000), n);
      }
    }
  });
});

describe("jitterMs", () => {
  const s = sched({ intervalSeconds: 3600, jitterSeconds: 600 });
  it("stable for a policy and volume, in [0, jitter)", () => {
    const a = jitterMs(s, "gold", "site-a/rbd//vol1");
    assert.equal(jitterMs(s, "gold", "site-a/rbd//vol1"), a);
    assert.ok(a >= 0 && a < 600_000);
    assert.equal(jitterMs(sched({ intervalSeconds: 3600 }), "gold", "site-a/rbd//vol1"), 0);
    // A different policy spreads the same volume differently.
    const differs = Array.from({ length: 20 }, (_, i) => `site-a/rbd//v${i}`).filter(
      (v) => jitterMs(s, "gold", v) !== jitterMs(s, "silver", v),
    );
    assert.ok(differs.length >= 19);
  });
  it("spreads 1,000 volumes evenly over the jitter", () => {
    const buckets = new Array(10).fill(0);
    const seconds = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const j = jitterMs(s, "gold", `site-a/rbd//vol-${i}`);
      assert.ok(j >= 0 && j < 600_000);
      buckets[Math.floor(j / 60_000)]++;
      seconds.add(Math.floor(j / 1000));
    }
    for (const b of buckets) assert.ok(b >= 60 && b <= 140, `bucket sizes ${buckets.join(",")}`);
    assert.ok(seconds.size > 400, `only ${seconds.size} distinct start seconds`);
  });
});

describe("advance (missed slots after downtime)", () => {
  it("a minutely cron a week behind counts at most 1,000 missed slots (plus the due one), for every volume of the policy alike", () => {
    const p = Policy.fromPartial({ name: "gold", schedule: sched({ cron: "* * * * *" }) });
    const t0 = T("2026-12-01T00:00:30Z");
    const week = t0 + 7 * DAY;
    for (const image of ["v1", "v2", "v3"]) {
      const rec = newRecord(p, { cluster: "a", pool: "rbd", namespace: "", image }, "explicit", t0);
      const next = advance(p, rec, week, "");
      assert.equal(next.missedRuns, 1_001, image);
      assert.equal(next.nextSlotAt, T("2026-12-08T00:01:00Z"));
    }
  });
});

describe("runStart (slot + jitter, inside the window)", () => {
  it("without a window: slot + jitter", () => {
    assert.equal(
      runStart(sched({ cron: "0 1 * * *" }), T("2026-12-01T01:00:00Z"), 3 * HOUR),
      T("2026-12-01T04:00:00Z"),
    );
  });

  it("with a window: a jitter longer than what is left of the window wraps within it; every start is inside", () => {
    const s = sched({ cron: "0 1 * * *", jitterSeconds: 3 * 3600, window: { start: "01:00", end: "02:00" } });
    const slot = T("2026-12-01T01:00:00Z");
    for (let j = 0; j < 3 * HOUR; j += 7 * 60_000) {
      const at = runStart(s, slot, j);
      assert.ok(at >= slot && at < T("2026-12-01T02:00:00Z"), `jitter ${j / 60_000} min starts at ${iso(at)}`);
    }
    assert.equal(runStart(s, slot, 30 * 60_000), slot + 30 * 60_000, "a jitter that fits is kept as is");
    // A window wrapping midnight, in a time zone: a slot at 05:30 local has 30 min left.
    const ny = sched({
      intervalSeconds: 3600,
      timeZone: "America/New_York",
      jitterSeconds: 3000,
      window: { start: "22:00", end: "06:00" },
    });
    const late = T("2026-12-01T10:30:00Z"); // 05:30 in New York (UTC-5)
    const at = runStart(ny, late, 45 * 60_000);
    assert.ok(at >= late && at < T("2026-12-01T11:00:00Z"), `starts at ${iso(at)}, before 06:00 local`);
  });

  it("a slot the window moved to its opening, close to the next slot: the run starts before that next slot", () => {
    // Every 30 min, window 23:50–01:00: the 23:30 slot opens at 23:50, 10 minutes before the 00:00 slot.
    const s = sched({ intervalSeconds: 1800, jitterSeconds: 1500, window: { start: "23:50", end: "01:00" } });
    const slot = T("2026-12-01T23:50:00Z");
    for (let j = 0; j < 25 * 60_000; j += 60_000) {
      const at = runStart(s, slot, j);
      assert.ok(at >= slot && at < T("2026-12-02T00:00:00Z"), `jitter ${j / 60_000} min starts at ${iso(at)}`);
    }
  });
});

describe("periodMs", () => {
  it("the interval, or the cron's gap around the time", () => {
    assert.equal(periodMs(sched({ intervalSeconds: 90 }), 0), 90_000);
    const weekdays = sched({ cron: "0 2 * * 1-5" });
    assert.equal(periodMs(weekdays, T("2024-01-05T03:00:00Z")), 3 * DAY); // Friday → Monday
    assert.equal(periodMs(weekdays, T("2024-01-05T02:00:00Z")), 3 * DAY); // exactly on Friday's run
    assert.equal(periodMs(weekdays, T("2024-01-02T03:00:00Z")), DAY);
    assert.equal(periodMs(weekdays, T("2024-01-02T01:00:00Z")), DAY);
    // Noon in New York around clocks going forward: a 23-hour day.
    assert.equal(
      periodMs(sched({ cron: "0 12 * * *", timeZone: "America/New_York" }), T("2024-03-10T00:00:00Z")),
      23 * HOUR,
    );
  });
});
