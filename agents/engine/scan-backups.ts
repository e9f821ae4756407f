/**
 * The catalog rebuild's eyes (session call scan_backups): every `backup.<id>.meta` object in the pools
 * of this cluster, in every RADOS namespace, read back with what a catalog needs to trust it — does
 * the snapshot it names exist on its base image, is there a digest map beside it (and its SHA-256).
 * Read-only. Paged: metas are visited in (pool, namespace, id) order and a page ends after `max_items`
 * or about PAGE_BYTES of meta bytes; the cursor names the last meta returned, so each page lists the
 * pools again from there (a listing is cheap next to the reads) and nothing is held between calls.
 */
import { invalidArgument, notFound } from "../../src/common/errors";
import { isUuid, metaObjectName } from "../../src/common/ids";
import type { ScanBackupsRequest, ScanBackupsResponse, ScannedBackup } from "../../src/gen/rbdbackup/v1/session";
import { type Cluster, type IoCtx, isCephError } from "../ceph";
import { DigestMapError, decodeDigestMap, digestsObjectName, mapDigest } from "../transfer/digests";
import { validName } from "../transfer/protocol";
import { decodeMetadata } from "./metadata";

export const DEFAULT_SCAN_ITEMS = 256;
export const MAX_SCAN_ITEMS = 1024;
/** A page stops before the meta bytes in it pass this (a single meta is at most 1 MiB). */
export const PAGE_BYTES = 1.5 * 1024 * 1024;
/** A meta object larger than this is reported, not returned (the writer refuses larger ones). */
const MAX_META_BYTES = 1024 * 1024;
const META_OBJECT = /^backup\.([0-9a-f-]{36})\.meta$/;

/** Where a meta object lives; the cursor is the last one a page returned. */
export interface MetaPlace {
  pool: string;
  namespace: string;
  id: string;
}

export function encodeScanCursor(p: MetaPlace): string {
  return Buffer.from(JSON.stringify([p.pool, p.namespace, p.id])).toString("base64url");
}

/** The place a cursor names; INVALID_ARGUMENT for anything this agent did not make. */
export function decodeScanCursor(cursor: string): MetaPlace | null {
  if (!cursor) return null;
  try {
    const v = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
    if (Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === "string")) {
      const [pool, namespace, id] = v as [string, string, string];
      return { pool, namespace, id };
    }
  } catch {
    // falls through
  }
  throw invalidArgument("cursor is not one a scan_backups reply gave");
}

/** Orders places by pool, namespace, id (plain code-unit order, the same on every call). */
export function comparePlaces(a: MetaPlace, b: MetaPlace): number {
  const k = (p: MetaPlace) => [p.pool, p.namespace, p.id];
  const [x, y] = [k(a), k(b)];
  for (let i = 0; i < 3; i++) {
    const [s, t] = [x[i] as string, y[i] as string];
    if (s !== t) return s < t ? -1 : 1;
  }
  return 0;
}

/** The meta objects of one pool, every namespace, sorted. */
export async function metaPlaces(cluster: Cluster, pool: string): Promise<MetaPlace[]> {
  const io = await cluster.openIoCtx(pool);
  try {
    const objects = await io.objListAllNamespaces("backup.");
    const places: MetaPlace[] = [];
    for (const o of objects) {
      const m = META_OBJECT.exec(o.oid);
      if (m && isUuid(m[1] as string)) places.push({ pool, namespace: o.namespace, id: m[1] as string });
    }
    return places.sort(comparePlaces);
  } finally {
    await io.close();
  }
}

/** Opens I/O contexts per namespace and lists base images' snapshots once per page. */
class PageReader {
  #io = new Map<string, IoCtx>();
  #snaps = new Map<string, Set<string> | null>();

  constructor(readonly cluster: Cluster) {}

  async io(pool: string, namespace: string): Promise<IoCtx> {
    const key = `${pool}\0${namespace}`;
    let io = this.#io.get(key);
    if (!io) {
      io = await this.cluster.openIoCtx(pool, { namespace });
      this.#io.set(key, io);
    }
    return io;
  }

  /** Snapshot names of a base image; null when the image does not exist. */
  async snapshots(io: IoCtx, image: string): Promise<Set<string> | null> {
    const key = `${io.pool}\0${io.namespace}\0${image}`;
    if (this.#snaps.has(key)) return this.#snaps.get(key) ?? null;
    let names: Set<string> | null = null;
    try {
      const img = await io.imageOpen(image, { readOnly: true });
      try {
        names = new Set((await img.snapList()).map((s) => s.name));
      } finally {
        await img.close();
      }
    } catch (e) {
      if (!isCephError(e, "ENOENT")) throw e;
    }
    this.#snaps.set(key, names);
    return names;
  }

  async close(): Promise<void> {
    for (const io of this.#io.values()) await io.close();
    this.#io.clear();
  }
}

async function readOrNull(io: IoCtx, oid: string): Promise<Buffer | null> {
  try {
    return await io.objRead(oid);
  } catch (e) {
    if (isCephError(e, "ENOENT")) return null;
    throw e;
  }
}

/** One meta object as the rebuild needs it; null when it vanished since the listing. */
async function inspect(r: PageReader, p: MetaPlace): Promise<ScannedBackup | null> {
  const io = await r.io(p.pool, p.namespace);
  const raw = await readOrNull(io, metaObjectName(p.id));
  if (raw === null) return null;
  const s: ScannedBackup = {
    pool: p.pool,
    namespace: p.namespace,
    backupId: p.id,
    meta: raw,
    metaError: "",
    snapshotExists: false,
    digestsExists: false,
    digestsSha256: "",
    digestBlockSize: 0,
    digestsError: "",
  };
  if (raw.length > MAX_META_BYTES) {
    s.meta = Buffer.alloc(0);
    s.metaError = `backup.${p.id}.meta is ${raw.length} bytes, larger than the 1 MiB a meta object may be`;
    return s;
  }
  try {
    const m = decodeMetadata(raw, p.id);
    const chain = m.chain;
    if (typeof chain?.base_image !== "string" || !chain.base_image || typeof chain.snapshot !== "string") {
      throw new Error(`backup.${p.id}.meta has no chain.base_image or chain.snapshot`);
    }
    s.snapshotExists = (await r.snapshots(io, chain.base_image))?.has(chain.snapshot) ?? false;
  } catch (e) {
    if (isCephError(e)) throw e;
    s.metaError = (e as Error).message;
  }
  const digests = await readOrNull(io, digestsObjectName(p.id));
  if (digests !== null) {
    s.digestsExists = true;
    try {
      s.digestBlockSize = decodeDigestMap(digests).blockSize;
      s.digestsSha256 = mapDigest(digests);
    } catch (e) {
      if (!(e instanceof DigestMapError)) throw e;
      s.digestsError = e.message;
    }
  }
  return s;
}

/** The pools to scan, sorted: those asked for (each must exist), else every pool of the cluster. */
async function poolsToScan(cluster: Cluster, asked: string[]): Promise<string[]> {
  if (asked.length === 0) return (await cluster.poolList()).sort();
  for (const p of asked) {
    validName(p, "pools[]");
    if (!(await cluster.poolExists(p))) throw notFound(`pool ${p} not found`);
  }
  return [...new Set(asked)].sort();
}

/** One page of the scan (see the module comment). */
export async function scanBackups(
  cluster: Cluster,
  fsid: string,
  req: ScanBackupsRequest,
): Promise<ScanBackupsResponse> {
  const after = decodeScanCursor(req.cursor);
  const max = Math.min(req.maxItems || DEFAULT_SCAN_ITEMS, MAX_SCAN_ITEMS);
  const pools = await poolsToScan(cluster, req.pools);
  const reader = new PageReader(cluster);
  const out: ScanBackupsResponse = { clusterFsid: fsid, backups: [], nextCursor: "" };
  let bytes = 0;
  try {
    for (const pool of pools) {
      if (after && pool < after.pool) continue;
      for (const place of await metaPlaces(cluster, pool)) {
        if (after && comparePlaces(place, after) <= 0) continue;
        const last = out.backups.at(-1);
        if (last && out.backups.length >= max) {
          out.nextCursor = encodeScanCursor({ pool: last.pool, namespace: last.namespace, id: last.backupId });
          return out;
        }
        const s = await inspect(reader, place);
        if (!s) continue;
        if (last && bytes + s.meta.length > PAGE_BYTES) {
          out.nextCursor = encodeScanCursor({ pool: last.pool, namespace: last.namespace, id: last.backupId });
          return out;
        }
        out.backups.push(s);
        bytes += s.meta.length;
      }
    }
    return out;
  } finally {
    await reader.close();
  }
}
