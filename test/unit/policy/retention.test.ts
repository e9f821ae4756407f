/**
 * Retention (GFS) without Ceph or a clock: a simulated year of hourly backups against an obviously
 * correct brute force (labels from Intl, ISO weeks by the textbook rule, group → newest → most recent N
 * groups), hand-checked cases (Benji's latest3,hours48,days7,weeks4,months12; DST; time zones), the
 * protections (newest, min_age, pinned), a randomised comparison, and 10,000 candidates in well under a
 * second.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AppError, Status } from "../../../src/common/errors";
import { planRetention, type RetentionCandidate, validateRetention } from "../../../src/coordinator/policy/retention";
import type { RetentionRule } from "../../../src/gen/rbdbackup/v1/policy";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const rule = (r: Partial<RetentionRule>): RetentionRule => ({
  keepLast: 0,
  hourly: 0,
  daily: 0,
  weekly: 0,
  monthly: 0,
  yearly: 0,
  minAgeSeconds: 0,
  ...r,
});

const iso = (t: number) => new Date(t).toISOString();

/** Hourly backups in [from, to), ids = ISO times. */
function hourly(from: string, to: string, stepMs = HOUR): RetentionCandidate[] {
  const out: RetentionCandidate[] = [];
  for (let t = Date.parse(from); t < Date.parse(to); t += stepMs) out.push({ id: iso(t), at: t });
  return out;
}

// ---- the brute force: independent of the implementation's wall-time arithmetic ----

const fmtCache = new Map<string, Intl.DateTimeFormat>();
const labelCache = new Map<string, ReturnType<typeof computeLabels>>();
function labels(t: number, timeZone: string) {
  const key = `${timeZone}|${t}`;
  let l = labelCache.get(key);
  if (!l) {
    l = computeLabels(t, timeZone);
    labelCache.set(key, l);
  }
  return l;
}
function computeLabels(t: number, timeZone: string) {
  let f = fmtCache.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: timeZone || "UTC",
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
    });
    fmtCache.set(timeZone, f);
  }
  const p = Object.fromEntries(f.formatToParts(new Date(t)).map((x) => [x.type, x.value]));
  const y = Number(p.year);
  const m = Number(p.month);
  const d = Number(p.day);
  // ISO week: the week (Monday..Sunday) belongs to the year of its Thursday.
  const date = Date.UTC(y, m - 1, d);
  const mondayBased = (new Date(date).getUTCDay() + 6) % 7;
  const thursday = date + (3 - mondayBased) * DAY;
  const isoYear = new Date(thursday).getUTCFullYear();
  const week = 1 + Math.floor((thursday - Date.UTC(isoYear, 0, 1)) / (7 * DAY));
  return {
    hourly: `${p.year}-${p.month}-${p.day}T${p.hour}`,
    daily: `${p.year}-${p.month}-${p.day}`,
    weekly: `${isoYear}-W${week}`,
    monthly: `${p.year}-${p.month}`,
    yearly: `${p.year}`,
  };
}

function bruteKeep(r: RetentionRule, cands: RetentionCandidate[], now: number, tz: string): Set<string> {
  const keep = new Set<string>();
  const byAt = [...cands].sort((a, b) => b.at - a.at);
  for (const c of byAt.slice(0, r.keepLast)) keep.add(c.id);
  for (const p of ["hourly", "daily", "weekly", "monthly", "yearly"] as const) {
    const groups = new Map<string, RetentionCandidate>();
    for (const c of cands) {
      const l = labels(c.at, tz)[p];
      const g = groups.get(l);
      if (!g || c.at > g.at) groups.set(l, c);
    }
    const newestOfEach = [...groups.values()].sort((a, b) => b.at - a.at);
    for (const c of newestOfEach.slice(0, r[p])) keep.add(c.id);
  }
  if (byAt[0]) keep.add(byAt[0].id);
  for (const c of cands) {
    if (r.minAgeSeconds > 0 && now - c.at < r.minAgeSeconds * 1000) keep.add(c.id);
    if (c.pinned) keep.add(c.id);
  }
  return keep;
}

function checkAgainstBrute(r: RetentionRule, cands: RetentionCandidate[], now: number, tz: string) {
  const plan = planRetention(r, cands, now, tz);
  const expected = bruteKeep(r, cands, now, tz);
  assert.deepEqual(new Set(plan.keep.keys()), expected);
  const expectedDrop = cands
    .filter((c) => !expected.has(c.id))
    .sort((a, b) => a.at - b.at)
    .map((c) => c.id);
  assert.deepEqual(plan.drop, expectedDrop);
  return plan;
}

// A year of hourly backups: 2023-01-01T00:00Z … 2023-12-31T23:00Z (8,760 backups).
const YEAR = hourly("2023-01-01T00:00:00Z", "2024-01-01T00:00:00Z");
const NOW = Date.parse("2024-01-01T00:30:00Z");
const BENJI = rule({ keepLast: 3, hourly: 48, daily: 7, weekly: 4, monthly: 12 });

describe("planRetention: a simulated year of hourly backups", () => {
  it("has 8,760 backups", () => assert.equal(YEAR.length, 8760));

  it("Benji latest3,hours48,days7,weeks4,months12 in UTC keeps exactly the hand-counted 67", () => {
    const plan = checkAgainstBrute(BENJI, YEAR, NOW, "");
    // 48 hours (Dec 30 00:00 … Dec 31 23:00) cover latest3 and two days; days add Dec 25…29 23:00 (5);
    // ISO weeks: Dec 25–31 (in), Dec 18–24 → Dec 24, Dec 11–17 → Dec 17, Dec 4–10 → Dec 10 (3);
    // months: Dec (in) and the last hour of Jan…Nov (11). 48 + 5 + 3 + 11 = 67.
    assert.equal(plan.keep.size, 67);
    assert.equal(plan.drop.length, 8760 - 67);
    const kept = [...plan.keep.keys()];
    for (const id of [
      "2023-12-31T23:00:00.000Z",
      "2023-12-30T00:00:00.000Z",
      "2023-12-29T23:00:00.000Z",
      "2023-12-25T23:00:00.000Z",
      "2023-12-24T23:00:00.000Z",
      "2023-12-17T23:00:00.000Z",
      "2023-12-10T23:00:00.000Z",
      "2023-11-30T23:00:00.000Z",
      "2023-02-28T23:00:00.000Z",
      "2023-01-31T23:00:00.000Z",
    ]) {
      assert.ok(kept.includes(id), id);
    }
    assert.equal(plan.keep.has("2023-12-29T22:00:00.000Z"), false);
    assert.equal(plan.keep.has("2023-12-03T23:00:00.000Z"), false); // a 5th week
    assert.equal(plan.keep.has("2022-12-31T23:00:00.000Z"), false);
    assert.deepEqual(plan.keep.get("2023-12-31T23:00:00.000Z"), [
      "last",
      "hourly",
      "daily",
      "weekly",
      "monthly",
      "newest",
    ]);
    assert.deepEqual(plan.keep.get("2023-12-30T00:00:00.000Z"), ["hourly"]);
    assert.deepEqual(plan.keep.get("2023-12-24T23:00:00.000Z"), ["weekly"]);
    assert.deepEqual(plan.keep.get("2023-01-31T23:00:00.000Z"), ["monthly"]);
    assert.equal(plan.drop[0], "2023-01-01T00:00:00.000Z"); // oldest first
    assert.equal(plan.drop.at(-1), "2023-12-29T22:00:00.000Z");
  });

  it("Benji's rules in America/New_York (two DST changes) match the brute force", () => {
    const plan = checkAgainstBrute(BENJI, YEAR, NOW, "America/New_York");
    // Local time is 5 h behind: the newest backup is Dec 31 18:00 local, so the 48 hours (from Dec 29
    // 19:00) hold three days' newest and the days add only Dec 25…28 (4): 48 + 4 + 3 + 11 = 66.
    // January's newest is Jan 31 23:00 local = Feb 1 04:00Z.
    assert.ok(plan.keep.has("2023-02-01T04:00:00.000Z"));
    assert.ok(plan.keep.has("2023-12-29T04:00:00.000Z")); // Dec 28 23:00 local
    assert.equal(plan.keep.size, 66);
  });

  const sets: [string, RetentionRule, string][] = [
    ["keep_last 10", rule({ keepLast: 10 }), ""],
    [
      "daily 30, weekly 8, monthly 6, yearly 2 in Europe/Berlin",
      rule({ daily: 30, weekly: 8, monthly: 6, yearly: 2 }),
      "Europe/Berlin",
    ],
    ["hourly 24 in Asia/Kolkata (half-hour offset)", rule({ hourly: 24 }), "Asia/Kolkata"],
    ["weekly 60 (more weeks than exist)", rule({ weekly: 60 }), "Australia/Lord_Howe"],
    ["monthly 3, yearly 5 in Pacific/Auckland", rule({ monthly: 3, yearly: 5 }), "Pacific/Auckland"],
    [
      "all counts in America/Sao_Paulo",
      rule({ keepLast: 5, hourly: 100, daily: 100, weekly: 30, monthly: 24, yearly: 10 }),
      "America/Sao_Paulo",
    ],
  ];
  for (const [name, r, tz] of sets) {
    it(`${name}: exact survivors`, () => {
      checkAgainstBrute(r, YEAR, NOW, tz);
    });
  }

  it("exact counts for simple rule sets", () => {
    assert.equal(planRetention(rule({ keepLast: 10 }), YEAR, NOW, "").keep.size, 10);
    assert.equal(planRetention(rule({ hourly: 10_000 }), YEAR, NOW, "").keep.size, 8760);
    assert.equal(planRetention(rule({ daily: 10_000 }), YEAR, NOW, "").keep.size, 365);
    // 2023 in UTC touches ISO weeks 2022-W52 (Jan 1, a Sunday) … 2023-W52: 53 weeks.
    assert.equal(planRetention(rule({ weekly: 10_000 }), YEAR, NOW, "").keep.size, 53);
    assert.equal(planRetention(rule({ monthly: 10_000 }), YEAR, NOW, "").keep.size, 12);
    // New York: the first five hours are still 2022 locally.
    assert.equal(planRetention(rule({ yearly: 10 }), YEAR, NOW, "America/New_York").keep.size, 2);
    assert.deepEqual(
      planRetention(rule({ yearly: 10 }), YEAR, NOW, "America/New_York").keep.get("2023-01-01T04:00:00.000Z"),
      ["yearly"],
    );
  });
});

describe("planRetention: time zones and DST, by hand", () => {
  const cands = [
    { id: "a", at: Date.parse("2023-06-09T12:00:00Z") },
    { id: "b", at: Date.parse("2023-06-10T21:30:00Z") }, // Berlin: Jun 10 23:30
    { id: "c", at: Date.parse("2023-06-10T22:30:00Z") }, // Berlin: Jun 11 00:30
  ];
  it("days are the schedule's local days", () => {
    assert.deepEqual(planRetention(rule({ daily: 2 }), cands, NOW, "").drop, ["b"]);
    assert.deepEqual(planRetention(rule({ daily: 2 }), cands, NOW, "Europe/Berlin").drop, ["a"]);
  });

  it("the repeated hour when clocks go back (New York, 2023-11-05) is one hour", () => {
    const half = hourly("2023-11-05T04:00:00Z", "2023-11-05T08:30:00Z", HOUR / 2);
    // Local: 00:00 00:30 01:00 01:30 (EDT) 01:00 01:30 (EST) 02:00 02:30 03:00.
    const ny = planRetention(rule({ hourly: 4 }), half, NOW, "America/New_York");
    assert.deepEqual([...ny.keep.keys()].sort(), [
      "2023-11-05T04:30:00.000Z",
      "2023-11-05T06:30:00.000Z",
      "2023-11-05T07:30:00.000Z",
      "2023-11-05T08:00:00.000Z",
    ]);
    const utc = planRetention(rule({ hourly: 4 }), half, NOW, "");
    assert.deepEqual([...utc.keep.keys()].sort(), [
      "2023-11-05T05:30:00.000Z",
      "2023-11-05T06:30:00.000Z",
      "2023-11-05T07:30:00.000Z",
      "2023-11-05T08:00:00.000Z",
    ]);
  });

  it("the 23-hour day when clocks go forward (New York, 2023-03-12) is one day", () => {
    const h = hourly("2023-03-11T00:00:00Z", "2023-03-14T12:00:00Z");
    const plan = checkAgainstBrute(rule({ daily: 3 }), h, NOW, "America/New_York");
    // Local days Mar 14 (newest), Mar 13 (23:00 EDT = 03:00Z Mar 14), Mar 12 (23:00 EDT = 03:00Z Mar 13).
    assert.deepEqual([...plan.keep.keys()].sort(), [
      "2023-03-13T03:00:00.000Z",
      "2023-03-14T03:00:00.000Z",
      "2023-03-14T11:00:00.000Z",
    ]);
  });

  it("ISO weeks start on Monday and cross years", () => {
    const c = [
      { id: "sun-2023-01-01", at: Date.parse("2023-01-01T12:00:00Z") }, // 2022-W52
      { id: "sat-2022-12-31", at: Date.parse("2022-12-31T12:00:00Z") }, // 2022-W52
      { id: "mon-2023-01-02", at: Date.parse("2023-01-02T12:00:00Z") }, // 2023-W01
      { id: "sun-2022-12-25", at: Date.parse("2022-12-25T12:00:00Z") }, // 2022-W51
    ];
    const plan = planRetention(rule({ weekly: 3 }), c, NOW, "");
    assert.deepEqual(plan.drop, ["sat-2022-12-31"]);
  });

  it("a period without a backup does not count (the most recent N periods that have one)", () => {
    const c = [
      { id: "jan", at: Date.parse("2023-01-15T00:00:00Z") },
      { id: "mar", at: Date.parse("2023-03-15T00:00:00Z") },
      { id: "jun", at: Date.parse("2023-06-15T00:00:00Z") },
    ];
    assert.deepEqual(planRetention(rule({ monthly: 2 }), c, NOW, "").drop, ["jan"]);
  });
});

describe("planRetention: never dropped", () => {
  it("the newest, even when a tie on time is broken by id", () => {
    const t = Date.parse("2023-05-01T00:00:00Z");
    const plan = planRetention(
      rule({ yearly: 1 }),
      [
        { id: "x", at: t },
        { id: "y", at: t },
        { id: "z", at: t - HOUR },
      ],
      NOW,
      "",
    );
    assert.deepEqual(plan.keep.get("y"), ["yearly", "newest"]);
    assert.deepEqual(plan.drop, ["z", "x"]);
    // The input order does not matter.
    assert.deepEqual(
      planRetention(
        rule({ yearly: 1 }),
        [
          { id: "z", at: t - HOUR },
          { id: "y", at: t },
          { id: "x", at: t },
        ],
        NOW,
        "",
      ).drop,
      ["z", "x"],
    );
  });

  it("backups younger than min_age", () => {
    const now = Date.parse("2023-12-31T23:30:00Z");
    const plan = planRetention(rule({ keepLast: 1, minAgeSeconds: 6 * 3600 }), YEAR, now, "");
    // Ages 0.5 h … 5.5 h: 18:00…23:00 are younger than 6 h; 17:00 (6.5 h) is not.
    assert.equal(plan.keep.size, 6);
    assert.deepEqual(plan.keep.get("2023-12-31T18:00:00.000Z"), ["min_age"]);
    assert.deepEqual(plan.keep.get("2023-12-31T23:00:00.000Z"), ["last", "newest", "min_age"]);
    assert.equal(plan.drop.at(-1), "2023-12-31T17:00:00.000Z");
  });

  it("pinned backups (in use, cloned), with the rule name 'pinned'", () => {
    const c = YEAR.map((b, i) =>
      i === 100 || i === 5000 ? { ...b, pinned: i === 100 ? "in use by job j1" : "has clones" } : b,
    );
    const plan = checkAgainstBrute(BENJI, c, NOW, "");
    assert.equal(plan.keep.size, 69);
    assert.deepEqual(plan.keep.get(YEAR[100]?.id ?? ""), ["pinned"]);
    assert.deepEqual(plan.keep.get(YEAR[5000]?.id ?? ""), ["pinned"]);
  });

  it("anything, while a backup is dated after now (the clock behind the one that dated it): reason 'clock'", () => {
    const c = hourly("2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z");
    const now = Date.parse("2026-01-02T00:00:00Z"); // a day behind the newest backup's clock
    const held = planRetention(rule({ keepLast: 1 }), c, now, "");
    assert.deepEqual(held.drop, []);
    assert.equal(held.keep.size, c.length);
    assert.ok([...held.keep.values()].every((r) => r.includes("clock")));
    // Within the skew allowed (the newest 4 min ahead), the rules apply.
    const near = planRetention(rule({ keepLast: 1 }), c, (c.at(-1)?.at ?? 0) - 4 * 60_000, "");
    assert.equal(near.drop.length, c.length - 1);
  });

  it("no candidates: nothing to do", () => {
    const plan = planRetention(BENJI, [], NOW, "");
    assert.equal(plan.keep.size, 0);
    assert.deepEqual(plan.drop, []);
  });
});

describe("planRetention: randomised against the brute force", () => {
  // A seeded PRNG (mulberry32): reproducible.
  let seed = 0x5eed;
  const rand = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const zones = [
    "",
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/St_Johns",
  ];
  it("300 random rule sets and backup histories agree", () => {
    for (let round = 0; round < 300; round++) {
      const tz = pick(zones);
      const n = Math.floor(rand() * 200);
      const start = Date.parse("2021-01-01T00:00:00Z") + Math.floor(rand() * 3 * 365) * DAY;
      const spread = pick([6 * HOUR, 3 * DAY, 60 * DAY, 800 * DAY]);
      const cands: RetentionCandidate[] = [];
      for (let i = 0; i < n; i++) {
        const at = start + Math.floor((rand() * spread) / 60_000) * 60_000;
        cands.push({ id: `b${i}`, at, pinned: rand() < 0.02 ? "clone" : undefined });
      }
      // Distinct times (the brute force has no tie-break).
      const unique = [...new Map(cands.map((c) => [c.at, c])).values()];
      const r = rule({
        keepLast: pick([0, 0, 1, 3, 10]),
        hourly: pick([0, 0, 5, 48]),
        daily: pick([0, 0, 3, 7, 30]),
        weekly: pick([0, 0, 2, 4, 10]),
        monthly: pick([0, 0, 1, 12]),
        yearly: pick([0, 0, 1, 3]),
        minAgeSeconds: pick([0, 0, 3600, 86_400]),
      });
      const now = start + spread + Math.floor(rand() * 2 * DAY);
      checkAgainstBrute(r, unique, now, tz);
    }
  });
});

describe("planRetention: at scale", () => {
  // Its speed is not asserted here (no timing in tests): the 10,000 candidates are a scale check only.
  it("10,000 candidates over two years in a DST zone: each kept or dropped exactly once", () => {
    const c: RetentionCandidate[] = [];
    const start = Date.parse("2022-01-01T00:00:00Z");
    for (let i = 0; i < 10_000; i++) c.push({ id: `id-${i}`, at: start + i * 6_317_000 });
    c.reverse();
    const plan = planRetention(BENJI, c, start + 10_000 * 6_317_000, "Europe/Paris");
    assert.equal(plan.keep.size + plan.drop.length, 10_000);
    assert.equal(new Set([...plan.keep, ...plan.drop]).size, 10_000, "no candidate both kept and dropped");
  });
});

describe("validateRetention", () => {
  const bad = (r: Partial<RetentionRule>, re: RegExp) =>
    assert.throws(
      () => validateRetention(rule(r)),
      (e: unknown) => e instanceof AppError && e.status === Status.INVALID_ARGUMENT && re.test(e.message),
    );
  it("needs at least one non-zero count (min_age alone keeps nothing)", () => {
    bad({}, /^policy\.retention: every count is 0/);
    bad({ minAgeSeconds: 3600 }, /^policy\.retention: every count is 0/);
  });
  it("names the count above 10,000", () => {
    bad({ keepLast: 10_001 }, /^policy\.retention\.keep_last: 10001 is above the maximum of 10000$/);
    bad({ daily: 7, monthly: 20_000 }, /^policy\.retention\.monthly: 20000 is above the maximum of 10000$/);
  });
  it("refuses a min_age that is surely milliseconds", () => {
    bad({ daily: 7, minAgeSeconds: 604_800_000 }, /^policy\.retention\.min_age_seconds: 604800000 is above/);
  });
  it("accepts sensible rules", () => {
    validateRetention(BENJI);
    validateRetention(rule({ yearly: 10_000, minAgeSeconds: 86_400 }));
  });
});
