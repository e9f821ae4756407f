/** protectionView: each ProtectionState by its rule in policy.proto, and the fields copied through. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ProtectionRecord } from "../../../src/coordinator/policy/model";
import { protectionView } from "../../../src/coordinator/policy/status";
import { BackupMode } from "../../../src/gen/rbdbackup/v1/agent";
import { type Policy, type PolicySchedule, ProtectionState } from "../../../src/gen/rbdbackup/v1/policy";

const MIN = 60_000;
const T0 = Date.parse("2024-01-01T00:00:00Z");

const schedule = (s: Partial<PolicySchedule>): PolicySchedule => ({
  intervalSeconds: 0,
  cron: "",
  timeZone: "",
  startOffsetSeconds: 0,
  jitterSeconds: 0,
  window: undefined,
  ...s,
});

const policy = (p: Partial<Policy> = {}): Policy => ({
  name: "gold",
  description: "",
  verify: undefined,
  selector: undefined,
  destination: { cluster: "site-b", pool: "", namespace: "" },
  mode: BackupMode.BACKUP_MODE_AUTO,
  maxSnapshots: 2,
  volumeMetadata: {},
  schedule: schedule({ intervalSeconds: 600 }),
  retention: undefined,
  paused: false,
  revision: 1,
  createdAt: undefined,
  updatedAt: undefined,
  selectedVolumes: 1,
  transfer: undefined,
  ...p,
});

const record = (r: Partial<ProtectionRecord> = {}): ProtectionRecord => ({
  policy: "gold",
  volume: { cluster: "site-a", pool: "rbd", namespace: "", image: "vol1" },
  source: "explicit",
  nextSlotAt: T0 + 10 * MIN,
  nextRunAt: T0 + 10 * MIN + 1234,
  lastSlotAt: 0,
  lastJobId: "",
  lastError: "",
  consecutiveFailures: 0,
  missedRuns: 0,
  pausedReason: "",
  lastSeenAt: T0,
  createdAt: T0 + 5 * MIN, // first slot: T0 + 10 min
  ...r,
});

const newest = (atMin: number) => ({ id: "b1", at: T0 + atMin * MIN, completedAt: T0 + (atMin + 1) * MIN });

describe("protectionView", () => {
  it("copies the record and the newest backup", () => {
    const v = protectionView(
      policy(),
      record({ consecutiveFailures: 0, missedRuns: 4, lastJobId: "j9", lastError: "" }),
      newest(20),
      T0 + 25 * MIN,
    );
    assert.deepEqual(v, {
      volume: { cluster: "site-a", pool: "rbd", namespace: "", image: "vol1" },
      policy: "gold",
      state: ProtectionState.PROTECTION_STATE_OK,
      lastBackupId: "b1",
      lastBackupAt: new Date(T0 + 21 * MIN),
      recoveryPointAgeSeconds: 300,
      nextRunAt: new Date(T0 + 10 * MIN + 1234),
      consecutiveFailures: 0,
      missedRuns: 4,
      lastJobId: "j9",
      lastVerifiedAt: undefined,
      lastVerifyOk: false,
      corruptBackups: 0,
      lastError: "",
      pausedReason: "",
    });
  });

  it("no backup: PENDING until the first slot plus a period, then LATE; age 0", () => {
    const at = (min: number) => protectionView(policy(), record(), undefined, T0 + min * MIN);
    assert.equal(at(6).state, ProtectionState.PROTECTION_STATE_PENDING);
    assert.equal(at(20).state, ProtectionState.PROTECTION_STATE_PENDING); // slot 10 + period 10
    assert.equal(at(21).state, ProtectionState.PROTECTION_STATE_LATE);
    assert.equal(at(21).recoveryPointAgeSeconds, 0);
    assert.equal(at(21).lastBackupId, "");
    assert.equal(at(21).lastBackupAt, undefined);
  });

  it("OK while the recovery point is younger than twice the period, LATE after", () => {
    assert.equal(
      protectionView(policy(), record(), newest(20), T0 + 40 * MIN).state,
      ProtectionState.PROTECTION_STATE_OK,
    );
    const late = protectionView(policy(), record(), newest(20), T0 + 41 * MIN);
    assert.equal(late.state, ProtectionState.PROTECTION_STATE_LATE);
    assert.equal(late.recoveryPointAgeSeconds, 21 * 60);
  });

  it("cron: the period is the gap around the backup (weekdays: Friday's backup lasts the weekend)", () => {
    const p = policy({ schedule: schedule({ cron: "0 2 * * 1-5" }) });
    const fri = { id: "b", at: Date.parse("2024-01-05T02:00:00Z"), completedAt: Date.parse("2024-01-05T02:10:00Z") };
    assert.equal(
      protectionView(p, record(), fri, Date.parse("2024-01-08T01:00:00Z")).state,
      ProtectionState.PROTECTION_STATE_OK,
    );
    const tue = { id: "b", at: Date.parse("2024-01-02T02:00:00Z"), completedAt: Date.parse("2024-01-02T02:10:00Z") };
    assert.equal(
      protectionView(p, record(), tue, Date.parse("2024-01-04T02:01:00Z")).state,
      ProtectionState.PROTECTION_STATE_LATE,
    );
  });

  it("a window: due again by the second slot after the backup in the window's hours, not the clock's", () => {
    // Hourly, 22:00–06:00 UTC; the last backup at 05:00: slots 22:00 and 23:00 come next.
    const p = policy({ schedule: schedule({ intervalSeconds: 3600, window: { start: "22:00", end: "06:00" } }) });
    const b = { id: "b", at: Date.parse("2024-01-02T05:00:00Z"), completedAt: Date.parse("2024-01-02T05:05:00Z") };
    for (const ok of ["2024-01-02T07:30:00Z", "2024-01-02T15:00:00Z", "2024-01-02T22:59:00Z"]) {
      assert.equal(protectionView(p, record(), b, Date.parse(ok)).state, ProtectionState.PROTECTION_STATE_OK, ok);
    }
    assert.equal(
      protectionView(p, record(), b, Date.parse("2024-01-02T23:01:00Z")).state,
      ProtectionState.PROTECTION_STATE_LATE,
    );
  });

  it("FAILING when the last run failed, whatever the lag", () => {
    const v = protectionView(
      policy(),
      record({ consecutiveFailures: 2, lastError: "boom" }),
      newest(20),
      T0 + 21 * MIN,
    );
    assert.equal(v.state, ProtectionState.PROTECTION_STATE_FAILING);
    assert.equal(v.lastError, "boom");
  });

  it("PAUSED (policy or volume) wins, and shows no next run", () => {
    const byPolicy = protectionView(
      policy({ paused: true }),
      record({ consecutiveFailures: 3 }),
      undefined,
      T0 + 999 * MIN,
    );
    assert.equal(byPolicy.state, ProtectionState.PROTECTION_STATE_PAUSED);
    assert.equal(byPolicy.nextRunAt, undefined);
    const failedOver = protectionView(
      policy(),
      record({ pausedReason: "failed over to site-b/rbd//vol1 by job j7" }),
      newest(20),
      T0 + 999 * MIN,
    );
    assert.equal(failedOver.state, ProtectionState.PROTECTION_STATE_PAUSED);
    assert.equal(failedOver.pausedReason, "failed over to site-b/rbd//vol1 by job j7");
  });

  it("a clock behind the backup gives age 0, not negative", () => {
    assert.equal(protectionView(policy(), record(), newest(20), T0 + 19 * MIN).recoveryPointAgeSeconds, 0);
  });
});
