/**
 * backup.<id>.meta: the versioned JSON kept next to every backup in the backup pool (the Cinder
 * driver's VolumeMetadataBackup, extended). Written once by the destination at commit; read back on
 * restore, which re-applies image_meta and returns the caller's volume metadata. A version this code
 * does not know fails the restore clearly instead of being half understood. A catalog rebuild
 * (engine/scan-backups.ts, src/coordinator/rebuild) makes a catalog Backup of each; fields added since
 * version 1 was first written are optional (older objects lack them) and need no new version.
 */
import { failedPrecondition } from "../../src/common/errors";

export const METADATA_VERSION = 1;

export interface BackupMetadataV1 {
  version: 1;
  backup_id: string;
  created_at: string;
  /** What the caller (control plane) said about the volume. */
  volume: { id: string; metadata: Record<string, string> };
  source:
    | {
        kind: "rbd";
        cluster_fsid: string;
        /** The source cluster's name as its agents register it (absent in older objects). */
        cluster_name?: string;
        pool: string;
        namespace: string;
        image: string;
        snapshot: string;
      }
    | { kind: "path"; path: string; name: string };
  /** Facts of the source image at the backup's snapshot. */
  image: {
    size: number;
    /** RBD feature bits as a decimal string (64-bit). */
    features: string;
    order: number;
    stripe_unit: number;
    stripe_count: number;
    image_meta: Record<string, string>;
  };
  chain: {
    base_image: string;
    incremental: boolean;
    parent_snapshot: string | null;
    snapshot: string;
    /** Why AUTO made a full backup ("" or absent when it did not; absent in older objects). */
    forced_full_reason?: string;
  };
  /**
   * An imported backup (agents/engine/import.ts): the snapshot names its `rbd export-diff` stream carried
   * ('f' and 't' records; null when it had none). A later incremental stream applies onto this backup
   * only when its 'f' names this backup's snapshot or `stream_to_snapshot`. Absent in other backups and
   * in imports made before it existed.
   */
  import?: { stream_from_snapshot: string | null; stream_to_snapshot: string | null };
}

export function encodeMetadata(m: BackupMetadataV1): Buffer {
  return Buffer.from(JSON.stringify(m));
}

/** Parses backup.<id>.meta; an unknown version or a malformed object is FAILED_PRECONDITION. */
export function decodeMetadata(raw: Buffer | string, backupId: string): BackupMetadataV1 {
  let obj: unknown;
  try {
    obj = JSON.parse(raw.toString());
  } catch {
    throw failedPrecondition(`backup.${backupId}.meta is not valid JSON`);
  }
  const version = (obj as { version?: unknown })?.version;
  if (version !== METADATA_VERSION) {
    throw failedPrecondition(
      `backup.${backupId}.meta has incompatible version ${JSON.stringify(version)} (this agent understands version ${METADATA_VERSION})`,
    );
  }
  const m = obj as BackupMetadataV1;
  if (typeof m.image?.size !== "number" || typeof m.volume?.metadata !== "object") {
    throw failedPrecondition(`backup.${backupId}.meta is missing required fields`);
  }
  return m;
}
