/** What `policy` and `protection` verbs print: tables and blocks of policies and volume protection. */
import {
  type Policy,
  type PolicySchedule,
  ProtectionState,
  protectionStateToJSON,
  type RetentionRule,
  type VolumeProtection,
} from "../gen/rbdbackup/v1/policy";
import { formatSeconds, formatTime, keyValues, locationSpec, table, volumeSpec } from "./format";
import { transferText } from "./transfer-flags";

export const protectionStateName = (s: ProtectionState): string =>
  s === ProtectionState.PROTECTION_STATE_UNSPECIFIED ? "-" : protectionStateToJSON(s).slice(17).toLowerCase();

export function scheduleText(s: PolicySchedule | undefined): string {
  if (!s) return "-";
  const parts = [s.intervalSeconds ? `every ${formatSeconds(s.intervalSeconds)}` : `cron "${s.cron}"`];
  if (s.timeZone) parts.push(`tz ${s.timeZone}`);
  if (s.startOffsetSeconds) parts.push(`offset ${formatSeconds(s.startOffsetSeconds)}`);
  if (s.jitterSeconds) parts.push(`jitter ${formatSeconds(s.jitterSeconds)}`);
  if (s.window?.start || s.window?.end) parts.push(`window ${s.window.start}-${s.window.end}`);
  return parts.join(", ");
}

export function retentionText(r: RetentionRule | undefined): string {
  if (!r) return "-";
  const keys: Array<[keyof RetentionRule, string]> = [
    ["keepLast", "last"],
    ["hourly", "hourly"],
    ["daily", "daily"],
    ["weekly", "weekly"],
    ["monthly", "monthly"],
    ["yearly", "yearly"],
  ];
  const parts = keys.filter(([k]) => r[k]).map(([k, n]) => `${n} ${r[k]}`);
  if (r.minAgeSeconds) parts.push(`min age ${formatSeconds(r.minAgeSeconds)}`);
  return parts.join(", ") || "-";
}

function selectorText(p: Policy): string {
  const s = p.selector;
  if (!s) return "-";
  const parts: string[] = [];
  if (s.volumes.length) parts.push(`${s.volumes.length} volume${s.volumes.length === 1 ? "" : "s"}`);
  if (s.cluster) {
    const pool = [s.cluster, s.pool, ...(s.namespace ? [s.namespace] : [])].join("/");
    parts.push(s.imageRegex ? `${pool} /${s.imageRegex}/` : pool);
  }
  return parts.join(" + ") || "-";
}

export function policyTable(policies: Policy[]): string {
  return table(
    ["NAME", "SELECTS", "TO", "SCHEDULE", "RETENTION", "VOLUMES", "PAUSED"],
    policies.map((p) => [
      p.name,
      selectorText(p),
      locationSpec(p.destination),
      scheduleText(p.schedule),
      retentionText(p.retention),
      String(p.selectedVolumes),
      p.paused ? "yes" : "no",
    ]),
  );
}

export function policyBlock(p: Policy): string {
  const meta = Object.entries(p.volumeMetadata);
  return keyValues([
    ["name", p.name],
    ["description", p.description || undefined],
    ["selects", selectorText(p)],
    ["volumes", p.selector?.volumes.length ? p.selector.volumes.map(volumeSpec).join(", ") : undefined],
    ["destination", locationSpec(p.destination)],
    ["schedule", scheduleText(p.schedule)],
    ["retention", retentionText(p.retention)],
    ["max snapshots", p.maxSnapshots ? String(p.maxSnapshots) : undefined],
    ["transfer", transferText(p.transfer)],
    ["metadata", meta.length ? meta.map(([k, v]) => `${k}=${v}`).join(", ") : undefined],
    ["paused", p.paused ? "yes" : "no"],
    ["selected now", String(p.selectedVolumes)],
    ["revision", String(p.revision)],
    ["created", formatTime(p.createdAt)],
    ["updated", formatTime(p.updatedAt)],
  ]);
}

const lag = (v: VolumeProtection) => (v.lastBackupId ? formatSeconds(v.recoveryPointAgeSeconds) : "-");

export function protectionTable(volumes: VolumeProtection[]): string {
  return table(
    ["VOLUME", "POLICY", "STATE", "LAG", "LAST BACKUP", "NEXT RUN", "FAILURES", "MISSED"],
    volumes.map((v) => [
      volumeSpec(v.volume),
      v.policy,
      protectionStateName(v.state),
      lag(v),
      formatTime(v.lastBackupAt),
      formatTime(v.nextRunAt),
      String(v.consecutiveFailures),
      String(v.missedRuns),
    ]),
  );
}

export function protectionBlock(v: VolumeProtection): string {
  return keyValues([
    ["volume", volumeSpec(v.volume)],
    ["policy", v.policy],
    ["state", protectionStateName(v.state)],
    ["paused because", v.pausedReason || undefined],
    ["recovery point age", lag(v)],
    ["last backup", v.lastBackupId ? `${v.lastBackupId} (${formatTime(v.lastBackupAt)})` : "none yet"],
    ["next run", formatTime(v.nextRunAt)],
    ["consecutive failures", String(v.consecutiveFailures)],
    ["missed runs", String(v.missedRuns)],
    ["last job", v.lastJobId || undefined],
    ["last error", v.lastError || undefined],
  ]);
}
