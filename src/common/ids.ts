/** Ids, names and the backup layout shared with the Cinder Ceph backup driver. */
import { randomUUID } from "node:crypto";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function newId(): string {
  return randomUUID();
}

export function isUuid(s: string): boolean {
  return UUID.test(s);
}

/** Backup snapshot names: same on the source volume and on the base image. */
export const BACKUP_SNAP_PATTERN = /^backup\.([a-z0-9-]+?)\.snap\.(.+)$/;

/** "backup.<id>.snap.<unix seconds with fraction>" */
export function backupSnapName(backupId: string, nowMs = Date.now()): string {
  return `backup.${backupId}.snap.${(nowMs / 1000).toFixed(6)}`;
}

export interface ParsedBackupSnap {
  backupId: string;
  /** Unix seconds from the name (NaN if the tail is not a number). */
  timestamp: number;
}

/** The backup id and timestamp of a backup snapshot name, or null when the name is not ours. */
export function parseBackupSnap(name: string): ParsedBackupSnap | null {
  const m = BACKUP_SNAP_PATTERN.exec(name);
  if (!m) return null;
  return { backupId: m[1] as string, timestamp: Number(m[2]) };
}

/** Base image of a chain: "<source image>.backup.<id of the chain's first backup>". */
export function baseImageName(sourceImage: string, firstBackupId: string): string {
  return `${sourceImage}.backup.${firstBackupId}`;
}

/** The chain id (first backup id) when `image` is a base image of `sourceImage`, else null. */
export function parseBaseImage(image: string, sourceImage: string): string | null {
  const prefix = `${sourceImage}.backup.`;
  if (!image.startsWith(prefix)) return null;
  const id = image.slice(prefix.length);
  return isUuid(id) ? id : null;
}

/** Any base image: "<something>.backup.<uuid>". */
export function isBaseImage(image: string): boolean {
  const i = image.lastIndexOf(".backup.");
  return i > 0 && isUuid(image.slice(i + ".backup.".length));
}

export function metaObjectName(backupId: string): string {
  return `backup.${backupId}.meta`;
}
