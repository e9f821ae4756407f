/**
 * Checks of every public API input, before anything is queued: each failure is INVALID_ARGUMENT with
 * a message naming the field.
 */

import { MAX_SNAPSHOTS } from "../common/api-limits";
import { invalidArgument } from "../common/errors";
import { isBaseImage, isUuid } from "../common/ids";
import { BackupMode, RestoreMode, VerifyMode } from "../gen/rbdbackup/v1/agent";
import { BackupStatus, DiffFormat, JobKind, JobState } from "../gen/rbdbackup/v1/backup_service";
import { type BackupLocation, Compression, type TransferOptions, type VolumeRef } from "../gen/rbdbackup/v1/common";

/** Cluster names (as agents register them). */
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const MAX_CLUSTER_NAME = 64;
/** Pool, namespace and image names: what RBD accepts, bounded (a base image adds 44 characters). */
export const MAX_RBD_NAME = 200;
const MAX_VOLUME_ID = 256;
const MAX_META_ENTRIES = 64;
const MAX_META_KEY = 256;
export const MAX_META_VALUE = 4096;
const IDEMPOTENCY_RE = /^[A-Za-z0-9._:-]{1,128}$/;

export function clusterName(v: string, field: string): string {
  if (!v) throw invalidArgument(`${field} is required`);
  if (!NAME_RE.test(v)) throw invalidArgument(`${field} "${v.slice(0, 80)}" must be 1-64 characters of [A-Za-z0-9._-]`);
  return v;
}

export function rbdName(v: string, field: string, { allowEmpty = false } = {}): string {
  if (v === "") {
    if (allowEmpty) return v;
    throw invalidArgument(`${field} is required`);
  }
  if (Buffer.byteLength(v) > MAX_RBD_NAME) throw invalidArgument(`${field} is longer than ${MAX_RBD_NAME} bytes`);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[/@\x00-\x1f\x7f]/.test(v) || v.trim() !== v || v === "." || v === "..") {
    throw invalidArgument(
      `${field} "${v}" is not a valid name (no "/", "@", control characters or surrounding spaces)`,
    );
  }
  return v;
}

/**
 * A volume the call names. A name of the backup layout's base images (`<volume>.backup.<uuid>`, which
 * only this product makes) is refused unless `lookup` (a call that only reads what the catalog or an
 * agent holds under it): a restore over one would rewrite a backup chain's head, a volume made or
 * backed up under one would be taken for a chain's base image by the agents (ListChains, policy
 * discovery, catalog rebuild).
 */
export function volumeRef(v: VolumeRef | undefined, field: string, { lookup = false } = {}): VolumeRef {
  if (!v) throw invalidArgument(`${field} is required`);
  clusterName(v.cluster, `${field}.cluster`);
  rbdName(v.pool, `${field}.pool`);
  rbdName(v.namespace, `${field}.namespace`, { allowEmpty: true });
  rbdName(v.image, `${field}.image`);
  if (!lookup && isBaseImage(v.image)) {
    throw invalidArgument(
      `${field}.image "${v.image}" is named like a backup's base image (<volume>.backup.<uuid>), which only rbdbackup makes`,
    );
  }
  return v;
}

export function location(l: BackupLocation | undefined, field: string): BackupLocation {
  if (!l) throw invalidArgument(`${field} is required`);
  clusterName(l.cluster, `${field}.cluster`);
  rbdName(l.pool, `${field}.pool`, { allowEmpty: true });
  rbdName(l.namespace, `${field}.namespace`, { allowEmpty: true });
  if (l.namespace && !l.pool) throw invalidArgument(`${field}.namespace needs ${field}.pool`);
  return l;
}

export function uuid(v: string, field: string): string {
  if (!v) throw invalidArgument(`${field} is required`);
  if (!isUuid(v)) throw invalidArgument(`${field} "${v.slice(0, 80)}" must be a lowercase UUID`);
  return v;
}

export function idempotencyKey(v: string): string {
  if (v && !IDEMPOTENCY_RE.test(v)) {
    throw invalidArgument("idempotency_key must be 1-128 characters of [A-Za-z0-9._:-]");
  }
  return v;
}

/** A control plane's volume id: at most 256 characters, no NUL (PostgreSQL's text cannot hold one). */
export function volumeId(v: string, field = "volume_id"): string {
  if (v.length > MAX_VOLUME_ID) throw invalidArgument(`${field} is longer than ${MAX_VOLUME_ID} characters`);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is what is refused
  if (/\x00/.test(v)) throw invalidArgument(`${field} contains NUL`);
  return v;
}

export function volumeMetadata(id: string, meta: Record<string, string>): void {
  volumeId(id);
  const entries = Object.entries(meta);
  if (entries.length > MAX_META_ENTRIES)
    throw invalidArgument(`volume_metadata has ${entries.length} entries; at most ${MAX_META_ENTRIES}`);
  for (const [k, v] of entries) {
    if (!k) throw invalidArgument("volume_metadata keys must not be empty");
    if (k.length > MAX_META_KEY)
      throw invalidArgument(`volume_metadata key "${k.slice(0, 40)}…" is longer than ${MAX_META_KEY}`);
    if (v.length > MAX_META_VALUE)
      throw invalidArgument(`volume_metadata["${k}"] is longer than ${MAX_META_VALUE} characters`);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is what is refused
    if (/\x00/.test(k) || /\x00/.test(v)) throw invalidArgument(`volume_metadata["${k}"] contains NUL`);
  }
}

function enumValue<E extends Record<string, string | number>>(e: E, v: number, field: string, allowZero = true) {
  if (!Number.isInteger(v) || v < 0 || !(v in e) || (!allowZero && v === 0)) {
    const names = Object.keys(e).filter((k) => Number.isNaN(Number(k)) && k !== "UNRECOGNIZED");
    throw invalidArgument(`${field}: unknown value ${v} (expected one of ${names.join(", ")})`);
  }
  return v;
}

export const backupMode = (v: number) => enumValue(BackupMode, v, "mode");
export const restoreMode = (v: number) => enumValue(RestoreMode, v, "mode");
export const backupStatus = (v: number) => enumValue(BackupStatus, v, "status");
export const jobState = (v: number) => enumValue(JobState, v, "state");
export const verifyMode = (v: number, field = "mode") => enumValue(VerifyMode, v, field);

/** SAMPLE's percent of blocks, 1..100 (0 = the default); only with mode SAMPLE (or UNSPECIFIED, which is SAMPLE). */
export function samplePercent(v: number, mode: VerifyMode, field = "sample_percent"): number {
  if (!Number.isInteger(v) || v < 0 || v > 100) throw invalidArgument(`${field}: ${v} is not a percent in 1..100`);
  const sample = mode === VerifyMode.VERIFY_MODE_SAMPLE || mode === VerifyMode.VERIFY_MODE_UNSPECIFIED;
  if (v && !sample) throw invalidArgument(`${field}: only mode SAMPLE reads a sample (mode is ${VerifyMode[mode]})`);
  return v;
}
export const jobKind = (v: number) => enumValue(JobKind, v, "kind");
export const diffFormat = (v: number) => enumValue(DiffFormat, v, "format");

export function pageSize(v: number): number {
  if (v === 0) return 100;
  if (v > 1000) throw invalidArgument(`page_size ${v} is above 1000`);
  return v;
}

/** Runs a catalog listing; a page token this server did not issue (RangeError) is the caller's mistake. */
export function page<T>(list: () => T): T {
  try {
    return list();
  } catch (e) {
    if (e instanceof RangeError) throw invalidArgument(e.message);
    throw e;
  }
}

export function maxSnapshots(v: number): number {
  if (v > MAX_SNAPSHOTS) throw invalidArgument(`max_snapshots ${v} is above ${MAX_SNAPSHOTS}`);
  return v;
}

/** TransferOptions.bandwidth_limit_bytes_per_second when set: at least 1 MiB/s, at most 1 TiB/s. */
export const MIN_BANDWIDTH = 1048576;
export const MAX_BANDWIDTH = 2 ** 40;

/**
 * A request's TransferOptions (common.proto), `field` naming them: compression a known value, the cap 0
 * or in [MIN_BANDWIDTH, MAX_BANDWIDTH]. Returns them, or undefined when they ask for nothing (absent, or
 * every field at its default), so that a job keeps only options that do something.
 */
export function transferOptions(t: TransferOptions | undefined, field = "transfer"): TransferOptions | undefined {
  if (!t) return undefined;
  enumValue(Compression, t.compression, `${field}.compression`);
  const bw = t.bandwidthLimitBytesPerSecond;
  if (!Number.isInteger(bw) || bw < 0 || (bw > 0 && bw < MIN_BANDWIDTH) || bw > MAX_BANDWIDTH) {
    throw invalidArgument(
      `${field}.bandwidth_limit_bytes_per_second: ${bw} is not 0 (no cap) or in [${MIN_BANDWIDTH} (1 MiB/s), ${MAX_BANDWIDTH} (1 TiB/s)]`,
    );
  }
  if (t.compression === Compression.COMPRESSION_NONE && bw === 0) return undefined;
  return { compression: t.compression, bandwidthLimitBytesPerSecond: bw };
}

/** `{ transfer }` for a job's operation when the options do something, else nothing. */
export function transferField(t: TransferOptions | undefined): { transfer?: TransferOptions } {
  const checked = transferOptions(t);
  return checked ? { transfer: checked } : {};
}
