/**
 * Human-readable output of the CLI: sizes, times, aligned tables, key: value blocks, and the rendering
 * of backups, jobs, agents, snapshots and cluster checks. Pure functions returning text.
 */
import type { ClusterCheckResponse } from "../gen/rbdbackup/v1/agent";
import {
  type AgentStatus,
  type Backup,
  type BackupStatus,
  backupStatusToJSON,
  type Job,
  type JobKind,
  type JobProgress,
  JobState,
  jobKindToJSON,
  jobStateToJSON,
} from "../gen/rbdbackup/v1/backup_service";
import type { BackupLocation, VolumeRef } from "../gen/rbdbackup/v1/common";
import type { BackupSnapshot } from "../gen/rbdbackup/v1/transfer";
import { integrityRows, verifyRows } from "./format-verify";

const UNITS = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/** Bytes in binary units: "0 B", "512 B", "1.5 KiB", "10.0 GiB". */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return "-";
  if (n < 1024) return `${Math.round(n)} B`;
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  // 1023.96 KiB would print as "1024.0 KiB": show it as the next unit.
  if (v.toFixed(1) === "1024.0" && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${UNITS[i]}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** ISO 8601 (UTC), or "-" when unset. */
export function formatTime(d: Date | undefined): string {
  return d && !Number.isNaN(d.getTime()) ? d.toISOString() : "-";
}

/** Seconds as "0.4 s", "12.3 s", "4m05s", "2h03m". */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "-";
  if (s < 60) return `${s.toFixed(1)} s`;
  const total = Math.round(s);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(sec).padStart(2, "0")}s`;
}

/** A fraction as a percentage with one decimal, clamped to [0, 100]. */
export function formatPercent(done: number, total: number): string {
  if (!(total > 0)) return "-";
  return `${(Math.min(1, Math.max(0, done / total)) * 100).toFixed(1)}%`;
}

/** Columns aligned on the widest cell, separated by two spaces, without trailing spaces. */
export function table(headers: string[], rows: string[][]): string {
  const all = [headers, ...rows];
  const widths = headers.map((_, c) => Math.max(...all.map((r) => (r[c] ?? "").length)));
  return all
    .map((r) =>
      headers
        .map((_, c) => (r[c] ?? "").padEnd(widths[c] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .map((line) => `${line}\n`)
    .join("");
}

/** "key:   value" lines aligned on the longest key; rows whose value is undefined are left out. */
export function keyValues(rows: [string, string | undefined][]): string {
  const shown = rows.filter((r): r is [string, string] => r[1] !== undefined);
  const width = Math.max(0, ...shown.map(([k]) => k.length + 1));
  return shown.map(([k, v]) => `${`${k}:`.padEnd(width)}  ${v}\n`).join("");
}

/** A value for keyValues: undefined (left out) when empty. */
function opt(v: string | undefined): string | undefined {
  return v === undefined || v === "" ? undefined : v;
}

export function volumeSpec(v: VolumeRef | undefined): string {
  if (!v) return "-";
  return [v.cluster, v.pool, ...(v.namespace ? [v.namespace] : []), v.image].join("/");
}

export function locationSpec(l: BackupLocation | undefined): string {
  if (!l) return "-";
  return [l.cluster, ...(l.pool ? [l.pool] : []), ...(l.namespace ? [l.namespace] : [])].join("/");
}

function shortEnum(json: string, prefix: string): string {
  return (json.startsWith(prefix) ? json.slice(prefix.length) : json).toLowerCase();
}

export const backupStatusName = (s: BackupStatus) => shortEnum(backupStatusToJSON(s), "BACKUP_STATUS_");
export const jobStateName = (s: JobState) => shortEnum(jobStateToJSON(s), "JOB_STATE_");
export const jobKindName = (k: JobKind) => shortEnum(jobKindToJSON(k), "JOB_KIND_");

function metadataText(m: { [key: string]: string }): string | undefined {
  const entries = Object.entries(m);
  if (entries.length === 0) return undefined;
  return entries.map(([k, v]) => `${k}=${v}`).join(", ");
}

export function backupTable(backups: Backup[]): string {
  return table(
    ["ID", "VOLUME", "LOCATION", "STATUS", "TYPE", "SIZE", "SENT", "CREATED"],
    backups.map((b) => [
      b.id,
      volumeSpec(b.volume),
      locationSpec(b.location),
      backupStatusName(b.status),
      b.incremental ? "incremental" : "full",
      formatBytes(b.sizeBytes),
      formatBytes(b.dataBytesSent),
      formatTime(b.createdAt),
    ]),
  );
}

export function backupBlock(b: Backup): string {
  return keyValues([
    ["id", b.id],
    ["status", backupStatusName(b.status)],
    ["volume", volumeSpec(b.volume)],
    ["volume id", opt(b.volumeId)],
    ["metadata", metadataText(b.volumeMetadata)],
    ["location", locationSpec(b.location)],
    ["location fsid", opt(b.locationFsid)],
    ["type", b.incremental ? "incremental" : "full"],
    ["parent snapshot", opt(b.parentSnapshot)],
    ["forced full", opt(b.forcedFullReason)],
    ["base image", opt(b.baseImage)],
    ["snapshot", opt(b.snapshot)],
    ["size", formatBytes(b.sizeBytes)],
    ["data sent", formatBytes(b.dataBytesSent)],
    ["zero bytes", formatBytes(b.zeroBytes)],
    ["transfer time", b.transferSeconds > 0 ? formatSeconds(b.transferSeconds) : undefined],
    ["job", opt(b.jobId)],
    ["created", formatTime(b.createdAt)],
    ["completed", b.completedAt ? formatTime(b.completedAt) : undefined],
    ["error", opt(b.error)],
    ...integrityRows(b.integrity, formatTime),
    ...b.warnings.map((w): [string, string] => ["warning", w]),
  ]);
}

/** "transfer 42.0%", "snapshot", or "" without progress. */
export function progressText(p: JobProgress | undefined): string {
  if (!p) return "";
  const pct = p.bytesTotal > 0 ? formatPercent(p.bytesDone, p.bytesTotal) : "";
  return [p.phase, pct].filter((s) => s !== "").join(" ");
}

export function jobTable(jobs: Job[]): string {
  return table(
    ["ID", "KIND", "STATE", "BACKUP", "VOLUME", "PROGRESS", "CREATED", "ERROR"],
    jobs.map((j) => [
      j.id,
      jobKindName(j.kind),
      jobStateName(j.state) + (j.cancelRequested && !isFinal(j.state) ? " (cancelling)" : ""),
      j.backupId || "-",
      volumeSpec(j.volume),
      isFinal(j.state) ? "" : progressText(j.progress),
      formatTime(j.createdAt),
      j.errorCode,
    ]),
  );
}

export function isFinal(state: JobState): boolean {
  return (
    state === JobState.JOB_STATE_SUCCEEDED ||
    state === JobState.JOB_STATE_FAILED ||
    state === JobState.JOB_STATE_CANCELLED
  );
}

function jobError(j: Job): string | undefined {
  if (!j.errorCode && !j.errorMessage) return undefined;
  return [j.errorCode, j.errorMessage].filter((s) => s !== "").join(": ");
}

export function jobBlock(j: Job): string {
  const p = j.progress;
  const running = j.state === JobState.JOB_STATE_RUNNING;
  return keyValues([
    ["id", j.id],
    ["kind", jobKindName(j.kind)],
    ["state", jobStateName(j.state)],
    ["cancel requested", j.cancelRequested && !isFinal(j.state) ? "yes" : undefined],
    ["backup", opt(j.backupId)],
    ["volume", volumeSpec(j.volume)],
    ["waiting", j.state === JobState.JOB_STATE_QUEUED ? opt(j.waitingReason) : undefined],
    ["attempts", j.maxAttempts > 0 ? `${j.attempts}/${j.maxAttempts}` : String(j.attempts)],
    ["agent", opt(j.agentId)],
    ["phase", running && p ? opt(p.phase) : undefined],
    [
      "progress",
      running && p && p.bytesTotal > 0
        ? `${formatPercent(p.bytesDone, p.bytesTotal)} (${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)})`
        : undefined,
    ],
    ["transferred", running && p && p.bytesTransferred > 0 ? formatBytes(p.bytesTransferred) : undefined],
    ["rate", running && p && p.rateBytesPerSecond > 0 ? formatRate(p.rateBytesPerSecond) : undefined],
    ["idempotency key", opt(j.idempotencyKey)],
    ["created", formatTime(j.createdAt)],
    ["started", j.startedAt ? formatTime(j.startedAt) : undefined],
    ["finished", j.finishedAt ? formatTime(j.finishedAt) : undefined],
    ["next attempt", j.nextAttemptAt && !isFinal(j.state) ? formatTime(j.nextAttemptAt) : undefined],
    ["error", jobError(j)],
    ...resultRows(j),
    ...j.warnings.map((w): [string, string] => ["warning", w]),
  ]);
}

/** What a finished job produced: the backup's figures, or the restore's. */
function resultRows(j: Job): [string, string | undefined][] {
  const rows: [string, string | undefined][] = [];
  const b = j.backup;
  if (b && j.state === JobState.JOB_STATE_SUCCEEDED) {
    rows.push(
      ["backup status", backupStatusName(b.status)],
      ["backup type", b.incremental ? "incremental" : "full"],
      ["backup size", formatBytes(b.sizeBytes)],
      ["data sent", formatBytes(b.dataBytesSent)],
      ["forced full", opt(b.forcedFullReason)],
    );
  }
  rows.push(...verifyRows(j.verify, formatSeconds));
  const r = j.restore;
  if (r) {
    rows.push(
      ["restored size", formatBytes(r.imageSize)],
      ["restored data", formatBytes(r.dataBytesSent)],
      ["restore time", r.seconds > 0 ? formatSeconds(r.seconds) : undefined],
      ["volume id", opt(r.volumeId)],
      ["metadata", metadataText(r.volumeMetadata)],
      ...r.warnings.map((w): [string, string] => ["warning", w]),
    );
  }
  return rows;
}

/** The few lines printed when a watched job ends. */
export function jobSummary(j: Job): string {
  return keyValues([
    ["job", j.id],
    ["kind", jobKindName(j.kind)],
    ["state", jobStateName(j.state)],
    ["backup", opt(j.backupId)],
    ["volume", volumeSpec(j.volume)],
    ["error", jobError(j)],
    ...resultRows(j),
    ...j.warnings.map((w): [string, string] => ["warning", w]),
  ]);
}

export function agentTable(agents: AgentStatus[]): string {
  return table(
    ["AGENT", "CLUSTER", "CONNECTED", "JOBS", "VERSION", "TRANSFER ADDRESS", "BACKUP POOL", "LAST SEEN"],
    agents.map((a) => [
      a.agentId,
      a.clusterName,
      a.connected ? "yes" : "no",
      `${a.runningJobs}/${a.capacity}`,
      a.version || "-",
      a.transferAddress || "-",
      a.defaultBackupPool || "-",
      formatTime(a.lastSeen),
    ]),
  );
}

export function snapshotTable(snaps: BackupSnapshot[]): string {
  return table(
    ["SNAPSHOT", "BACKUP", "TAKEN", "SNAP ID", "SIZE"],
    snaps.map((s) => [
      s.name,
      s.backupId,
      s.timestamp > 0 ? formatTime(new Date(s.timestamp * 1000)) : "-",
      String(s.snapId),
      formatBytes(s.size),
    ]),
  );
}

export function clusterCheckText(cluster: string, r: ClusterCheckResponse): string {
  const rows = table(
    ["CHECK", "RESULT", "DETAILS"],
    r.checks.map((c) => [c.name, c.ok ? "ok" : "FAILED", c.message]),
  );
  const fsid = r.clusterFsid ? ` (fsid ${r.clusterFsid})` : "";
  return `${rows}cluster ${cluster}${fsid}: ${r.ok ? "ready" : "NOT ready"}\n`;
}
