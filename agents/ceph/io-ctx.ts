/** An I/O context on one pool (+ namespace): RADOS objects and image-level calls that need no open image. */
import { nativeCall } from "./errors";
import { Image } from "./image";
import type { NativeImageCreateOptions, NativeIoCtx, PoolStat } from "./native";
import * as v from "./validate";

/** The largest object objRead reads by default. */
export const OBJ_READ_MAX_BYTES = 64 << 20;

export interface ImageCreateOptions {
  /** RBD feature bits (see RbdFeature); default: the cluster's rbd_default_features. */
  features?: bigint;
  /** Object size as a power of two, 12..26 (4 KiB..64 MiB); default 22 (4 MiB). */
  order?: number;
  stripeUnit?: number;
  stripeCount?: number;
  dataPool?: string;
  /** imageClone only: 1 (the parent snapshot must be protected) or 2 (no protection needed). */
  cloneFormat?: 1 | 2;
}

/** RBD feature bits (librbd/features.h). */
export const RbdFeature = {
  layering: 1n << 0n,
  stripingV2: 1n << 1n,
  exclusiveLock: 1n << 2n,
  objectMap: 1n << 3n,
  fastDiff: 1n << 4n,
  deepFlatten: 1n << 5n,
  journaling: 1n << 6n,
  dataPool: 1n << 7n,
  operations: 1n << 8n,
  migrating: 1n << 9n,
  nonPrimary: 1n << 10n,
} as const;

export function featureNames(features: bigint): string[] {
  return Object.entries(RbdFeature)
    .filter(([, bit]) => (features & bit) !== 0n)
    .map(([n]) => n);
}

function createOptions(opts: ImageCreateOptions): NativeImageCreateOptions {
  v.object(opts, "options");
  const out: NativeImageCreateOptions = {};
  if (opts.features !== undefined) {
    if (typeof opts.features !== "bigint" || opts.features < 0n)
      throw new TypeError("features must be a non-negative bigint");
    out.features = opts.features;
  }
  if (opts.order !== undefined) {
    out.order = v.uint(opts.order, "order", 26);
    if (out.order < 12) throw new RangeError(`order must be between 12 and 26, got ${out.order}`);
  }
  if (opts.stripeUnit !== undefined) out.stripeUnit = v.positiveInt(opts.stripeUnit, "stripeUnit", 2 ** 32);
  if (opts.stripeCount !== undefined) out.stripeCount = v.positiveInt(opts.stripeCount, "stripeCount", 2 ** 32);
  if (opts.dataPool !== undefined) out.dataPool = v.name(opts.dataPool, "dataPool", 256);
  if (opts.cloneFormat !== undefined) {
    if (opts.cloneFormat !== 1 && opts.cloneFormat !== 2) throw new RangeError("cloneFormat must be 1 or 2");
    out.cloneFormat = opts.cloneFormat;
  }
  return out;
}

export class IoCtx {
  #h: NativeIoCtx;
  #closed = false;

  /** @internal use Cluster.openIoCtx() */
  constructor(
    handle: NativeIoCtx,
    readonly pool: string,
    readonly namespace: string,
  ) {
    this.#h = handle;
  }

  /** pool or pool/namespace, for messages. */
  get label(): string {
    return this.namespace ? `${this.pool}/${this.namespace}` : this.pool;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** @internal */
  get nativeHandle(): NativeIoCtx {
    return this.#h;
  }

  // --- RADOS objects -------------------------------------------------------------------------------

  /** Creates `oid` with `data` atomically; EEXIST (content unchanged) when it already exists. */
  objCreateExclusive(oid: string, data: Buffer): Promise<void> {
    v.name(oid, "oid");
    v.buffer(data, "data");
    return nativeCall(`create object ${this.label}/${oid}`, () => this.#h.objCreateExclusive(oid, data));
  }

  objWriteFull(oid: string, data: Buffer): Promise<void> {
    v.name(oid, "oid");
    v.buffer(data, "data");
    return nativeCall(`write object ${this.label}/${oid}`, () => this.#h.objWriteFull(oid, data));
  }

  /**
   * The whole object. One larger than `maxBytes` (default OBJ_READ_MAX_BYTES: our objects — a backup's
   * meta, a digest map of at most 2 MiB — are far smaller) is EFBIG, never read into memory: its size is
   * whatever someone with write access to the pool made it.
   */
  objRead(oid: string, { maxBytes = OBJ_READ_MAX_BYTES }: { maxBytes?: number } = {}): Promise<Buffer> {
    v.name(oid, "oid");
    v.uint(maxBytes, "maxBytes");
    return nativeCall(`read object ${this.label}/${oid}`, () => this.#h.objRead(oid, maxBytes));
  }

  objStat(oid: string): Promise<{ size: number; mtime: number }> {
    v.name(oid, "oid");
    return nativeCall(`stat object ${this.label}/${oid}`, () => this.#h.objStat(oid));
  }

  objRemove(oid: string): Promise<void> {
    v.name(oid, "oid");
    return nativeCall(`remove object ${this.label}/${oid}`, () => this.#h.objRemove(oid));
  }

  /** Names of all objects in this pool's namespace. */
  objList(): Promise<string[]> {
    return nativeCall(`list objects in ${this.label}`, () => this.#h.objList());
  }

  /**
   * Objects of the whole pool, in every RADOS namespace (this context's namespace is ignored), whose
   * name starts with `prefix`: their namespace ("" = the default) and name, in the pool's listing order.
   */
  async objListAllNamespaces(prefix: string): Promise<Array<{ namespace: string; oid: string }>> {
    v.text(prefix, "prefix");
    const pairs = await nativeCall(`list objects in every namespace of ${this.pool}`, () =>
      this.#h.objListAllNamespaces(prefix),
    );
    return pairs.map(([namespace, oid]) => ({ namespace, oid }));
  }

  poolStat(): Promise<PoolStat> {
    return nativeCall(`stat pool ${this.pool}`, () => this.#h.poolStat());
  }

  // --- RBD images ----------------------------------------------------------------------------------

  /** Whether an RBD namespace exists in this pool (call it on the pool's default namespace). */
  namespaceExists(name: string): Promise<boolean> {
    v.text(name, "name");
    return nativeCall(`check namespace ${name} in ${this.label}`, () => this.#h.namespaceExists(name));
  }

  imageList(): Promise<string[]> {
    return nativeCall(`list images in ${this.label}`, () => this.#h.imageList());
  }

  /** Names of the images in the trash (moved there, not yet removed: they keep their snapshots). */
  trashList(): Promise<string[]> {
    return nativeCall(`list the trash of ${this.label}`, () => this.#h.trashList());
  }

  imageCreate(name: string, size: number, opts: ImageCreateOptions = {}): Promise<void> {
    v.name(name, "name", 4096);
    v.uint(size, "size");
    const o = createOptions(opts);
    return nativeCall(`create image ${this.label}/${name}`, () => this.#h.imageCreate(name, size, o));
  }

  imageRemove(name: string): Promise<void> {
    v.name(name, "name");
    return nativeCall(`remove image ${this.label}/${name}`, () => this.#h.imageRemove(name));
  }

  /** Opens an image read-write (head), or read-only, or read-only at a snapshot. */
  async imageOpen(name: string, opts: { readOnly?: boolean; snapshot?: string } = {}): Promise<Image> {
    v.name(name, "name");
    const snapshot = v.optionalName(opts.snapshot, "snapshot");
    const readOnly = opts.readOnly === undefined ? snapshot !== undefined : v.bool(opts.readOnly, "readOnly");
    const label = `${this.label}/${name}`;
    const h = await nativeCall(`open image ${label}${snapshot ? `@${snapshot}` : ""}`, () =>
      this.#h.imageOpen(name, { readOnly, ...(snapshot ? { snapshot } : {}) }),
    );
    // At a snapshot the image takes no writes, whichever way librbd opened it (Image.readOnly).
    return new Image(h, label, readOnly, snapshot ?? null, (at) =>
      this.imageOpen(name, { snapshot: at, readOnly: true }),
    );
  }

  /**
   * Clones parent@parentSnapshot into dest/destName (same cluster). Clone v1 needs the snapshot
   * protected; v2 (`cloneFormat: 2`) does not, and is what the cluster picks only when its
   * require-min-compat-client is mimic or newer — so pass it explicitly.
   */
  imageClone(
    parent: string,
    parentSnapshot: string,
    dest: IoCtx,
    destName: string,
    opts: ImageCreateOptions = {},
  ): Promise<void> {
    v.name(parent, "parent");
    v.name(parentSnapshot, "parentSnapshot");
    if (!(dest instanceof IoCtx)) throw new TypeError("dest must be an IoCtx");
    v.name(destName, "destName");
    const o = createOptions(opts);
    return nativeCall(`clone ${this.label}/${parent}@${parentSnapshot} to ${dest.label}/${destName}`, () =>
      this.#h.imageClone(parent, parentSnapshot, dest.nativeHandle, destName, o),
    );
  }

  /** Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await nativeCall(`close pool ${this.label}`, () => this.#h.close());
  }
}
