/**
 * The raw native addon (agents/native, built by `npm run build:native`) and the shapes it returns.
 * Nothing outside agents/ceph/ imports this: the facade in this folder validates every argument and
 * names every error; the addon re-checks only what could crash. The `.node` file is loaded on first
 * use, from RBDBACKUP_NATIVE_PATH when set.
 */
import path from "node:path";

export interface NativeCluster {
  fsid(): string;
  poolList(): Promise<string[]>;
  poolExists(pool: string): Promise<boolean>;
  clusterStat(): Promise<ClusterStat>;
  openIoCtx(pool: string, opts: { namespace?: string; poolFullTry?: boolean }): Promise<NativeIoCtx>;
  monCommand(command: string): Promise<{ output: string; status: string }>;
  addrs(): string;
  /** rados_get_instance_id: this client's global id (client.<id>), as watchers are listed with. */
  instanceId(): number;
  blocklistAdd(address: string, expireSeconds: number): Promise<void>;
  close(): Promise<void>;
}

export interface ClusterStat {
  bytes: number;
  bytesUsed: number;
  bytesAvailable: number;
  objects: number;
}

export interface PoolStat {
  bytes: number;
  objects: number;
}

export interface NativeImageCreateOptions {
  features?: bigint;
  order?: number;
  stripeUnit?: number;
  stripeCount?: number;
  dataPool?: string;
  cloneFormat?: number;
}

/** A clone of a snapshot (rbd_list_children3). */
export interface ChildImage {
  pool: string;
  namespace: string;
  image: string;
  id: string;
  /** Moved to the trash (it still depends on the snapshot). */
  trash: boolean;
}

export interface NativeIoCtx {
  objCreateExclusive(oid: string, data: Buffer): Promise<void>;
  objWriteFull(oid: string, data: Buffer): Promise<void>;
  objRead(oid: string, maxBytes: number): Promise<Buffer>;
  objStat(oid: string): Promise<{ size: number; mtime: number }>;
  objRemove(oid: string): Promise<void>;
  objList(): Promise<string[]>;
  objListAllNamespaces(prefix: string): Promise<Array<[string, string]>>;
  poolStat(): Promise<PoolStat>;
  imageList(): Promise<string[]>;
  /** Names of the images in this pool's (and namespace's) trash. */
  trashList(): Promise<string[]>;
  namespaceExists(name: string): Promise<boolean>;
  imageCreate(name: string, size: number, opts: NativeImageCreateOptions): Promise<void>;
  imageRemove(name: string): Promise<void>;
  imageOpen(name: string, opts: { readOnly?: boolean; snapshot?: string }): Promise<NativeImage>;
  imageClone(
    parent: string,
    parentSnap: string,
    dest: NativeIoCtx,
    destName: string,
    opts: NativeImageCreateOptions,
  ): Promise<void>;
  close(): Promise<void>;
}

export interface ImageStat {
  size: number;
  objectSize: number;
  numObjects: number;
  order: number;
  features: bigint;
  flags: number;
  stripeUnit: number;
  stripeCount: number;
  /**
   * A clone's parent overlap: how much of it still reads through to its parent (rbd_get_overlap; lowered
   * for good when the clone is shrunk, so a clone grown back reads zeros beyond it). 0 without a parent.
   */
  parentOverlap: number;
}

export interface SnapInfo {
  id: number;
  name: string;
  size: number;
  /** Creation time, Unix seconds with fraction. */
  timestamp: number;
  protected: boolean;
}

/** A client watching an image: its address (IP:PORT/NONCE) and its RADOS global id. */
export interface ImageWatcher {
  addr: string;
  id: number;
}

export interface NativeImage {
  stat(): Promise<ImageStat>;
  resize(size: number): Promise<void>;
  /** skipQuiesce: rbd_snap_create2 with RBD_SNAP_CREATE_SKIP_QUIESCE; otherwise rbd_snap_create. */
  snapCreate(name: string, skipQuiesce?: boolean): Promise<void>;
  snapRemove(name: string): Promise<void>;
  snapList(): Promise<SnapInfo[]>;
  snapProtect(name: string): Promise<void>;
  snapUnprotect(name: string): Promise<void>;
  snapRollback(name: string): Promise<void>;
  /** rbd_snap_set: the handle moves to the snapshot, or back to the head with null. */
  snapSet(name: string | null): Promise<void>;
  /** ctl: BigInt64Array(3), [0] non-zero cancels, [1]/[2] objects started and their total (image.cc). */
  flatten(ctl?: BigInt64Array): Promise<void>;
  listChildren(): Promise<ChildImage[]>;
  /** rbd_watchers_list: the clients watching the image's header (every read-write open, rbd map, a VM). */
  watchers(): Promise<ImageWatcher[]>;
  metaGet(key: string): Promise<string | null>;
  metaSet(key: string, value: string): Promise<void>;
  metaRemove(key: string): Promise<void>;
  metaList(): Promise<Record<string, string>>;
  read(buffer: Buffer, offset: number): Promise<number>;
  write(buffer: Buffer, offset: number): Promise<number>;
  writeZeroes(offset: number, length: number): Promise<number>;
  discard(offset: number, length: number): Promise<number>;
  flush(): Promise<number>;
  diffIterate(opts: {
    fromSnapshot?: string;
    offset: number;
    length?: number;
    wholeObject: boolean;
    includeParent: boolean;
    batchSize: number;
  }): NativeDiffIterator;
  close(): Promise<void>;
}

export interface NativeDiffIterator {
  /** Triples (offset, length, exists 0|1); done = no more batches. */
  next(): Promise<{ extents: Float64Array; done: boolean }>;
  close(): Promise<void>;
}

/** Test-only hooks, exported only when RBDBACKUP_NATIVE_TEST_FAULTS=1 at load (agents/native/src/test-faults.h). */
export interface NativeTesting {
  /** The next `count` (default 1) passes through `point` throw a C++ exception of `kind`. */
  arm(
    point: "method" | "execute" | "task" | "thread",
    kind: "system_error" | "bad_alloc" | "runtime_error" | "unknown",
    count?: number,
  ): void;
  disarm(): void;
  /** Where final closes of native handles ran: on a pool/diff thread, on the closer thread, or inline as a fallback. */
  handleStats(): { worker: number; closer: number; fallback: number; queued: number; barrierTimeouts: number };
  /** Parks a completion handler on librados' finish strand of `io`'s cluster until releaseFinishStrand() (≤ 60 s). */
  holdFinishStrand(io: NativeIoCtx): void;
  /** True while the handler holdFinishStrand() parked runs. */
  finishStrandHeld(): boolean;
  releaseFinishStrand(): void;
  /** How long an image close waits for the finish strand before it goes ahead (default 10,000 ms). */
  setCloseBarrierTimeout(ms: number): void;
  /** Ends the process as a C++ crash would: a new thread throws std::system_error(EINVAL), uncaught. */
  terminateOnThread(): void;
}

interface NativeModule {
  connect(opts: {
    conf: string;
    clientId: string;
    keyring?: string;
    config: Record<string, string>;
  }): Promise<NativeCluster>;
  versions(): { librados: string; librbd: string };
  crc32c(data: Uint8Array): number;
  /** CRC-32C of data in one pass as pieces (first bytes, then blockSize each) into out; returns the whole's. */
  crc32cPieces(data: Uint8Array, first: number, blockSize: number, out: Uint32Array): number;
  crc32cHardware: boolean;
  /** Compressed bytes written to dst (0: they do not fit); algorithm 1 zstd, 2 lz4. */
  compress(algorithm: number, level: number, src: Buffer, dst: Buffer): Promise<number>;
  /** Decompresses exactly dst.length bytes into dst (rejects EBADMSG otherwise). */
  decompress(algorithm: number, src: Buffer, dst: Buffer): Promise<number>;
  codecVersions(): { zstd: string; lz4: string; zstdMaxLevel: number };
  /** glibc malloc_trim(0) on libuv's pool: true when memory went back to the kernel. */
  mallocTrim(): Promise<boolean>;
  testing?: NativeTesting;
}

/** Where the addon is looked for: RBDBACKUP_NATIVE_PATH when set (only there), else the build folder. */
function candidates(): string[] {
  const override = process.env.RBDBACKUP_NATIVE_PATH;
  if (override) return [path.resolve(override)];
  // Compiled facade lives in dist/agents/ceph/, sources in agents/ceph/: look from the repo root.
  return [
    path.resolve(__dirname, "../native/build/Release/rbdbackup_native.node"),
    path.resolve(__dirname, "../../../agents/native/build/Release/rbdbackup_native.node"),
  ];
}

function load(): NativeModule {
  let last: unknown;
  for (const c of candidates()) {
    try {
      return require(c) as NativeModule;
    } catch (e) {
      last = e;
      if ((e as NodeJS.ErrnoException).code !== "MODULE_NOT_FOUND") break;
    }
  }
  throw new Error(
    `rbdbackup native addon could not be loaded (build it with "npm run build:native"; needs librados and librbd): ${String(
      (last as Error)?.message ?? last,
    )}`,
  );
}

let loaded: NativeModule | undefined;

/**
 * The addon, loaded on first use (not when this module is evaluated): a process that imports the
 * facade but never talks to Ceph — the coordinator, the CLI, unit tests — needs neither the addon nor
 * Ceph's libraries. A failed load throws each time it is asked for (nothing is cached).
 */
export function native(): NativeModule {
  loaded ??= load();
  return loaded;
}
