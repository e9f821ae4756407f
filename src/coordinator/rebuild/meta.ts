/**
 * backup.<id>.meta as the coordinator reads it for a catalog rebuild: the version 1 JSON the agents
 * write (agents/engine/metadata.ts — the coordinator may not import it, so the fields it needs are
 * checked here again, strictly: a meta that lacks one is damaged, never guessed at). Fields added
 * after version 1 was first written (source.cluster_name, chain.forced_full_reason) are optional.
 */
import { isBaseImage, isUuid, parseBackupSnap, parseBaseImage } from "../../common/ids";
// The API's validators: their refusal's message is the skip reason.
import * as checked from "../validate";

export interface RebuildMeta {
  backupId: string;
  createdAt: Date;
  volumeId: string;
  volumeMetadata: Record<string, string>;
  /** A path source (a file on an agent's host) is not a catalog volume: the planner skips it. */
  source:
    | { kind: "rbd"; fsid: string; clusterName: string; pool: string; namespace: string; image: string }
    | { kind: "path"; path: string };
  sizeBytes: number;
  baseImage: string;
  snapshot: string;
  incremental: boolean;
  parentSnapshot: string;
  /** For an incremental: the backup id its parent snapshot names. */
  parentId: string;
  forcedFullReason: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function str(o: Record<string, unknown>, key: string, where: string, { optional = false } = {}): string {
  const v = o[key];
  if (v === undefined && optional) return "";
  if (typeof v !== "string") throw new Error(`${where}${key} is not a string`);
  return v;
}

function stringMap(v: unknown, where: string): Record<string, string> {
  if (!isObject(v)) throw new Error(`${where} is not an object`);
  for (const [k, x] of Object.entries(v)) if (typeof x !== "string") throw new Error(`${where}.${k} is not a string`);
  return v as Record<string, string>;
}

function source(v: unknown): RebuildMeta["source"] {
  if (!isObject(v)) throw new Error("source is not an object");
  if (v.kind === "path") return { kind: "path", path: str(v, "path", "source.") };
  if (v.kind !== "rbd") throw new Error(`source.kind ${JSON.stringify(v.kind)} is neither "rbd" nor "path"`);
  const s = {
    kind: "rbd" as const,
    fsid: str(v, "cluster_fsid", "source."),
    clusterName: str(v, "cluster_name", "source.", { optional: true }),
    pool: str(v, "pool", "source."),
    namespace: str(v, "namespace", "source."),
    image: str(v, "image", "source."),
  };
  // The volume becomes a catalog record: a NUL failed the chain's insert on PostgreSQL and ended the
  // whole rebuild INTERNAL. Names are held to what the agents take (a policy's discovery backs up any
  // name Ceph has, surrounding spaces too), not to the API's stricter rule for names typed in.
  if (s.clusterName) checked.clusterName(s.clusterName, "source.cluster_name");
  cephName(s.pool, "source.pool");
  if (s.namespace) cephName(s.namespace, "source.namespace");
  cephName(s.image, "source.image");
  if (isBaseImage(s.image)) throw new Error(`source.image "${s.image.slice(0, 200)}" is named like a base image`);
  return s;
}

/** A pool, namespace or image name as the agents take it (agents/transfer/protocol.ts validName). */
function cephName(name: string, field: string): void {
  if (!name) throw new Error(`${field} is empty`);
  if (Buffer.byteLength(name) > 4096) throw new Error(`${field} is longer than 4096 bytes`);
  if (/[\0/@]/.test(name)) throw new Error(`${field} "${name.slice(0, 200)}" holds a "/", "@" or NUL`);
}

function chain(v: unknown, id: string) {
  if (!isObject(v)) throw new Error("chain is not an object");
  const baseImage = str(v, "base_image", "chain.");
  const snapshot = str(v, "snapshot", "chain.");
  if (!baseImage) throw new Error("chain.base_image is empty");
  if (parseBackupSnap(snapshot)?.backupId !== id) throw new Error(`chain.snapshot "${snapshot}" is not this backup's`);
  if (typeof v.incremental !== "boolean") throw new Error("chain.incremental is not a boolean");
  const parentSnapshot = v.parent_snapshot === null ? "" : str(v, "parent_snapshot", "chain.", { optional: true });
  let parentId = "";
  if (v.incremental) {
    parentId = parseBackupSnap(parentSnapshot)?.backupId ?? "";
    if (!isUuid(parentId)) throw new Error(`incremental with parent_snapshot "${parentSnapshot}" naming no backup`);
  }
  return {
    baseImage,
    snapshot,
    incremental: v.incremental,
    parentSnapshot,
    parentId,
    forcedFullReason: str(v, "forced_full_reason", "chain.", { optional: true }),
  };
}

/** Parses a meta object found under backup.<objectId>.meta; throws an Error saying what is wrong. */
export function parseRebuildMeta(raw: Uint8Array, objectId: string): RebuildMeta {
  let o: unknown;
  try {
    o = JSON.parse(Buffer.from(raw).toString("utf8"));
  } catch (e) {
    throw new Error(`not JSON (${(e as Error).message})`);
  }
  if (!isObject(o)) throw new Error("not a JSON object");
  if (o.version !== 1) throw new Error(`version ${JSON.stringify(o.version)} is not 1`);
  const id = str(o, "backup_id", "");
  if (id !== objectId) throw new Error(`backup_id "${id.slice(0, 80)}" is not the object's id`);
  const createdAt = new Date(str(o, "created_at", ""));
  // Listings order by creation time; the catalogs store years 1970-9999 alike (ISO text, epoch ms).
  const t = createdAt.getTime();
  if (!(t >= 0 && t <= Date.UTC(9999, 11, 31, 23, 59, 59, 999)))
    throw new Error("created_at is not a date in 1970-9999");
  if (!isObject(o.volume)) throw new Error("volume is not an object");
  const image = o.image;
  if (!isObject(image) || typeof image.size !== "number" || !Number.isSafeInteger(image.size) || image.size < 0) {
    throw new Error("image.size is not a size");
  }
  const src = source(o.source);
  const c = chain(o.chain, id);
  // As ImportBackupRecord requires (api/records.ts): deleting the backup removes its base image once no
  // backup snapshot is left on it, so a meta naming a live volume as its base image must not be imported.
  if (src.kind === "rbd" && parseBaseImage(c.baseImage, src.image) === null) {
    throw new Error(
      `chain.base_image "${c.baseImage.slice(0, 200)}" is not a base image of ${src.image} (<volume>.backup.<uuid>)`,
    );
  }
  const volumeId = str(o.volume, "id", "volume.");
  const volumeMetadata = stringMap(o.volume.metadata, "volume.metadata");
  checked.volumeMetadata(volumeId, volumeMetadata);
  return {
    backupId: id,
    createdAt,
    volumeId,
    volumeMetadata,
    source: src,
    sizeBytes: image.size,
    ...c,
  };
}
