/**
 * The catalog rebuild's eyes (session call scan_backups): every `backup.<id>.meta` object in the pools
 * of this cluster, in every RADOS namespace, read back with what a catalog needs to trust it — does
 * the snapshot it names exist on its base image, is there a digest map beside it (and its SHA-256).
 * Read-only. Paged: metas are visited in (pool, namespace, id) order and a page ends after `max_items`
 * or about PAGE_BYTES of meta bytes; the cursor names the last meta returned. A pool's listing walks
 * every object of the pool (its data objects too), so the page that ends inside a pool keeps what is
 * left of its sorted listing for the next page (PlacesAhead: one pool's, for LISTING_KEPT_MS, only for
 * the cursor that page handed out); any other cursor lists again.
 *
 * One object that cannot be read (EIO from a damaged placement group, a base image whose header does
 * not read) is that backup's metaError or digestsError, reported like a meta that does not parse, so that
 * damage — what a disaster leaves — does not stop the whole scan; the cluster not answering (a timeout,
 * a lost connection) fails the page as before, to be asked again.
 */
import { failedPrecondition, invalidArgument, notFound } from "../../src/common/errors";
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
/** How long the rest of a pool's listing waits for the next page's call. */
export const LISTING_KEPT_MS = 120_000;
/**
 * Errors of one damaged object or image, not of the cluster or of this agent's access: reported for that
 * backup, the scan goes on. (EPERM/EACCES come from the agent's cephx caps — a key without `profile rbd`
 * cannot open any base image — and fail the page, naming the caps, rather than skip every backup.)
 */
const OBJECT_ERRORS = ["EIO", "EBADMSG", "ENODATA", "ENXIO", "EFBIG", "EOPNOTSUPP"];

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

/**
 * The rest of one pool's sorted listing after the page that ended inside it, for the call that presents
 * that page's cursor (the next page of the same scan) within LISTING_KEPT_MS. One at a time: a second
 * scan, or a cursor of another page, lists again. Never more than the one listing a page builds anyway.
 */
export class PlacesAhead {
  #kept: { pool: string; cursor: string; places: MetaPlace[]; at: number } | null = null;

  constructor(private readonly now: () => number = Date.now) {}

  /** The places after `cursor` in `pool`, when the page that handed out `cursor` kept them. */
  take(pool: string, cursor: string): MetaPlace[] | null {
    const k = this.#kept;
    if (!k || k.cursor !== cursor || this.now() - k.at > LISTING_KEPT_MS) return null;
    // The page ended at a pool's end: nothing of the cursor's pool is left; the next pool's is kept.
    if (k.pool > pool) return [];
    this.#kept = null;
    return k.pool === pool ? k.places : null;
  }

  keep(pool: string, cursor: string, places: MetaPlace[]): void {
    this.#kept = { pool, cursor, places, at: this.now() };
  }
}

const placesAhead = new PlacesAhead();

/** An error of this one object or image (OBJECT_ERRORS) as text for the report; anything else thrown. */
function objectError(e: unknown, what: string): string {
  if (isCephError(e, ...OBJECT_ERRORS)) return `${what} could not be read: ${(e as Error).message}`;
  if (isCephError(e, "EPERM", "EACCES")) {
    throw failedPrecondition(
      `${what} could not be read: ${(e as Error).message}: this agent's Ceph key lacks access (its caps need \`profile rbd\` on the pools scanned)`,
    );
  }
  throw e;
}

/** Opens I/O contexts per namespace and lists base images' snapshots once per page. */
class PageReader {
  #io = new Map<string, IoCtx>();
  #snaps = new Map<string, Set<string> | null | Error>();

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

  /**
   * Snapshot names of a base image; null when the image does not exist. A damaged image's failure is
   * kept too (each backup of that chain reports it, without opening the image again).
   */
  async snapshots(io: IoCtx, image: string): Promise<Set<string> | null> {
    const key = `${io.pool}\0${io.namespace}\0${image}`;
    const known = this.#snaps.get(key);
    if (known instanceof Error) throw known;
    if (known !== undefined) return known;
    let names: Set<string> | null = null;
    try {
      const img = await io.imageOpen(image, { readOnly: true });
      try {
        names = new Set((await img.snapList()).map((s) => s.name));
      } finally {
        await img.close();
      }
    } catch (e) {
      if (!isCephError(e, "ENOENT")) {
        if (isCephError(e, ...OBJECT_ERRORS)) this.#snaps.set(key, e);
        throw e;
      }
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
  const s: ScannedBackup = {
    pool: p.pool,
    namespace: p.namespace,
    backupId: p.id,
    meta: Buffer.alloc(0),
    metaError: "",
    snapshotExists: false,
    digestsExists: false,
    digestsSha256: "",
    digestBlockSize: 0,
    digestsError: "",
  };
  let raw: Buffer | null;
  try {
    raw = await readOrNull(io, metaObjectName(p.id));
  } catch (e) {
    s.metaError = objectError(e, `backup.${p.id}.meta`);
    return s;
  }
  if (raw === null) return null;
  s.meta = raw;
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
    s.metaError = isCephError(e) ? objectError(e, "its base image's snapshots") : (e as Error).message;
  }
  let digests: Buffer | null;
  try {
    digests = await readOrNull(io, digestsObjectName(p.id));
  } catch (e) {
    s.digestsError = objectError(e, `backup.${p.id}.digests`);
    return s;
  }
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
  ahead: PlacesAhead = placesAhead,
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
      const places = ahead.take(pool, req.cursor) ?? (await metaPlaces(cluster, pool));
      for (let i = 0; i < places.length; i++) {
        const place = places[i] as MetaPlace;
        if (after && comparePlaces(place, after) <= 0) continue;
        const last = out.backups.at(-1);
        // The page ends before `place`: the rest of this pool's listing waits for the next page.
        const endBefore = (): ScanBackupsResponse => {
          const l = last as ScannedBackup;
          out.nextCursor = encodeScanCursor({ pool: l.pool, namespace: l.namespace, id: l.backupId });
          ahead.keep(pool, out.nextCursor, places.slice(i));
          return out;
        };
        if (last && out.backups.length >= max) return endBefore();
        const s = await inspect(reader, place);
        if (!s) continue;
        if (last && bytes + s.meta.length > PAGE_BYTES) return endBefore();
        out.backups.push(s);
        bytes += s.meta.length;
      }
    }
    return out;
  } finally {
    await reader.close();
  }
}
