/** TEMP stand-in of p1's schedule.ts (the contract's signatures; interval schedules only) — the lead drops it. */
import { createHash } from "node:crypto";
import type { PolicySchedule } from "../../gen/rbdbackup/v1/policy";

export function validateSchedule(_s: PolicySchedule, _minIntervalSeconds: number): void {}

export function nextSlot(s: PolicySchedule, afterMs: number): number {
  const p = (s.intervalSeconds || 60) * 1000;
  const off = (s.startOffsetSeconds ?? 0) * 1000;
  return Math.floor((afterMs - off) / p) * p + p + off;
}

export function jitterMs(s: PolicySchedule, policyName: string, volumeKey: string): number {
  if (!s.jitterSeconds) return 0;
  const h = createHash("sha256").update(`${policyName}\0${volumeKey}`).digest().readUInt32BE(0);
  return h % (s.jitterSeconds * 1000);
}

export function periodMs(s: PolicySchedule, _atMs: number): number {
  return (s.intervalSeconds || 60) * 1000;
}

export function countSlots(s: PolicySchedule, fromMs: number, toMs: number, limit: number): number {
  let n = 0;
  for (let t = nextSlot(s, fromMs); t <= toMs && n < limit; t = nextSlot(s, t)) n++;
  return n;
}
