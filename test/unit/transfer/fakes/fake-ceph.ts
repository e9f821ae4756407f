/**
 * An in-memory stand-in for the few Cluster / IoCtx / Image methods the sink uses (agents/transfer/
 * sink/ports.ts), with the semantics the sink relies on: images with data, snapshots (rollback, diff
 * against the head), image-meta, RADOS objects; errors as CephError with the real errno names; an
 * open image cannot be removed (EBUSY); close() waits for the writes still in flight, like librbd.
 *
 * Every mutating call is appended to `log` ("write img 0+4096", "flush img", "snapCreate img s"…)
 * so tests can check the order of what happened; `faults` make a chosen call fail; writes complete
 * after a few event-loop turns (deterministic per offset), so many overlap.
 */
import { constants } from "node:os";
import { CephError, type DiffOptions, type Extent, type ImageCreateOptions } from "../../../../agents/ceph";
import type { SinkCluster, SinkImage, SinkIoCtx } from "../../../../agents/transfer/sink";

const errno = constants.errno;
export const cephError = (code: keyof typeof errno, what = "fake op") =>
  new CephError(errno[code], what, "fake", code.toLowerCase());

const turn = () => new Promise<void>((r) => setImmediate(r));

export interface ImageState {
  data: Buffer;
  /** quiesced: made with its watchers asked to quiesce (snapCreate without skipQuiesce). */
  snaps: Array<{ name: string; data: Buffer; quiesced?: boolean }>;
  meta: Map<string, string>;
  /** Open handles (an image with any cannot be removed). */
  opens: number;
  /** Other clients watching it (a VM, rbd map): what watchers() lists beside this agent's own handles. */
  watchers?: Array<{ addr: string; id: number }>;
  /** What stat() says of its features (default 0: none, e.g. no fast-diff). */
  features?: bigint;
}

export interface Faults {
  /** Fail the write at this offset (after it was handed to "librbd"). */
  writeAt?: { offset: number; error: Error };
  flush?: Error;
  objCreate?: Error;
  /** objCreate fails only for this object (default: any). */
  objCreateOid?: string;
  snapCreate?: Error;
  metaRemove?: Error;
  metaSet?: Error;
  /** The image-meta is set, then the call fails (an op timeout whose request went through). */
  metaSetAfter?: Error;
  /** The snapshot is made, then its creation fails (an op timeout whose request went through). */
  snapCreateAfter?: Error;
  snapList?: Error;
  imageCreate?: Error;
  /** The image is created, then its creation fails (an op timeout whose request went through). */
  imageCreateAfter?: Error;
}

/** Calls that wait for the test before they go on. */
export interface Gates {
  /** An image's flush (a thenable: a test can see the sink reach it). */
  flush?: PromiseLike<void>;
  /** An image handle's close(). */
  close?: Promise<void>;
  /** An image handle's metaRemove(). */
  metaRemove?: Promise<void>;
  /** An image handle's metaSet(). */
  metaSet?: Promise<void>;
}

export class FakeCeph implements SinkCluster {
  readonly log: string[] = [];
  readonly pools = new Map<string, { images: Map<string, ImageState>; objects: Map<string, Buffer> }>();
  readonly blocklisted: string[] = [];
  faults: Faults = {};
  gates: Gates = {};
  full = false;
  /** What stat() reports: raw capacity and available bytes (generous by default). */
  capacity = 16 * 2 ** 30;
  available = 16 * 2 ** 30;
  /** Writes in flight now, and the most seen at once. */
  writesInFlight = 0;
  maxWritesInFlight = 0;
  /** Writes in flight when flush was called (the sink must have waited for all of them). */
  inFlightAtFlush: number[] = [];
  /** Image reads ("offset+length"), e.g. the digest map's read-back. */
  readonly reads: string[] = [];

  constructor(...pools: string[]) {
    for (const p of pools) this.pools.set(p, { images: new Map(), objects: new Map() });
  }

  pool(name: string) {
    const p = this.pools.get(name);
    if (!p) throw new Error(`no fake pool ${name}`);
    return p;
  }

  /** An existing image, with its head `data` and snapshots of `snaps` names holding copies of it. */
  addImage(pool: string, name: string, data: Buffer, snaps: string[] = []): ImageState {
    const s: ImageState = {
      data: Buffer.from(data),
      snaps: snaps.map((n) => ({ name: n, data: Buffer.from(data) })),
      meta: new Map(),
      opens: 0,
    };
    this.pool(pool).images.set(name, s);
    return s;
  }

  async poolExists(pool: string): Promise<boolean> {
    return this.pools.has(pool);
  }

  async poolFullness(_pool: string) {
    return { full: this.full, nearfull: false, clusterFull: false };
  }

  async stat() {
    return {
      bytes: this.capacity,
      bytesUsed: this.capacity - this.available,
      bytesAvailable: this.available,
      objects: 0,
    };
  }

  async blocklistAdd(address: string, _expireSeconds: number): Promise<void> {
    this.blocklisted.push(address);
  }

  async openIoCtx(pool: string, _opts: { namespace?: string; poolFullTry?: boolean }): Promise<SinkIoCtx> {
    return new FakeIoCtx(this, pool);
  }
}

class FakeIoCtx implements SinkIoCtx {
  constructor(
    readonly ceph: FakeCeph,
    readonly poolName: string,
  ) {}

  get #pool() {
    return this.ceph.pool(this.poolName);
  }

  async imageCreate(name: string, size: number, _opts?: ImageCreateOptions): Promise<void> {
    if (this.ceph.faults.imageCreate) throw this.ceph.faults.imageCreate;
    if (this.#pool.images.has(name)) throw cephError("EEXIST", "rbd_create");
    this.#pool.images.set(name, { data: Buffer.alloc(size), snaps: [], meta: new Map(), opens: 0 });
    this.ceph.log.push(`imageCreate ${name}`);
    if (this.ceph.faults.imageCreateAfter) throw this.ceph.faults.imageCreateAfter;
  }

  async imageRemove(name: string): Promise<void> {
    const img = this.#pool.images.get(name);
    if (!img) throw cephError("ENOENT", "rbd_remove");
    if (img.opens > 0) throw cephError("EBUSY", "rbd_remove");
    if (img.snaps.length > 0) throw cephError("ENOTEMPTY", "rbd_remove");
    this.#pool.images.delete(name);
    this.ceph.log.push(`imageRemove ${name}`);
  }

  async imageOpen(name: string): Promise<SinkImage> {
    const img = this.#pool.images.get(name);
    if (!img) throw cephError("ENOENT", "rbd_open");
    return new FakeImage(this.ceph, name, img);
  }

  async objCreateExclusive(oid: string, data: Buffer): Promise<void> {
    const f = this.ceph.faults;
    if (f.objCreate && (f.objCreateOid === undefined || f.objCreateOid === oid)) throw f.objCreate;
    if (this.#pool.objects.has(oid)) throw cephError("EEXIST", "rados_write_op_operate");
    this.#pool.objects.set(oid, Buffer.from(data));
    this.ceph.log.push(`objCreate ${oid}`);
  }

  async objRemove(oid: string): Promise<void> {
    if (!this.#pool.objects.delete(oid)) throw cephError("ENOENT", "rados_remove");
    this.ceph.log.push(`objRemove ${oid}`);
  }

  async objRead(oid: string): Promise<Buffer> {
    const b = this.#pool.objects.get(oid);
    if (!b) throw cephError("ENOENT", "rados_read");
    return Buffer.from(b);
  }

  async objWriteFull(oid: string, data: Buffer): Promise<void> {
    this.#pool.objects.set(oid, Buffer.from(data));
    this.ceph.log.push(`objWriteFull ${oid}`);
  }

  async close(): Promise<void> {}
}

export class FakeImage implements SinkImage {
  #closed = false;

  /** The fake models heads only (its stat names no object map, so nothing asks for a snapshot's). */
  async openAt(snapshot: string): Promise<never> {
    throw cephError("ENOTSUP", `rbd_open at ${snapshot} (the fake opens heads only)`);
  }
  #inflight = new Set<Promise<unknown>>();

  constructor(
    readonly ceph: FakeCeph,
    readonly name: string,
    readonly s: ImageState,
  ) {
    s.opens++;
  }

  #check(): void {
    if (this.#closed) throw new Error(`image ${this.name} is closed`);
  }

  /** This agent's handles (the fake sink's clientAddr, sink-deps.ts) and the image's other watchers. */
  async watchers(): Promise<Array<{ addr: string; id: number }>> {
    this.#check();
    return [
      ...Array.from({ length: this.s.opens }, () => ({ addr: "10.0.0.1:0/1", id: 4100 })),
      ...(this.s.watchers ?? []),
    ];
  }

  #aio<T>(f: () => Promise<T>): Promise<T> {
    this.#check();
    const p = f();
    this.#inflight.add(p);
    const done = () => this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  write(buffer: Buffer, offset: number): Promise<number> {
    return this.#aio(async () => {
      const c = this.ceph;
      c.writesInFlight++;
      c.maxWritesInFlight = Math.max(c.maxWritesInFlight, c.writesInFlight);
      try {
        for (let i = (Math.imul((offset >>> 12) + 1, 0x9e3779b1) >>> 30) + 1; i > 0; i--) await turn();
        const fault = c.faults.writeAt;
        if (fault && fault.offset === offset) throw fault.error;
        buffer.copy(this.s.data, offset); // read at completion, as librbd may: the buffer must still be ours
        c.log.push(`write ${this.name} ${offset}+${buffer.length}`);
        return buffer.length;
      } finally {
        c.writesInFlight--;
      }
    });
  }

  /** Reads the head (counted in `reads`). */
  read(buffer: Buffer, offset: number): Promise<number> {
    return this.#aio(async () => {
      await turn();
      this.ceph.reads.push(`${offset}+${buffer.length}`);
      return this.s.data.copy(buffer, 0, offset, offset + buffer.length);
    });
  }

  writeZeroes(offset: number, length: number): Promise<number> {
    return this.#aio(async () => {
      await turn();
      this.s.data.fill(0, offset, offset + length);
      this.ceph.log.push(`writeZeroes ${this.name} ${offset}+${length}`);
      return 0;
    });
  }

  discard(offset: number, length: number): Promise<number> {
    return this.#aio(async () => {
      this.s.data.fill(0, offset, offset + length);
      this.ceph.log.push(`discard ${this.name} ${offset}+${length}`);
      return 0;
    });
  }

  flush(): Promise<number> {
    return this.#aio(async () => {
      this.ceph.inFlightAtFlush.push(this.ceph.writesInFlight);
      await this.ceph.gates.flush;
      if (this.ceph.faults.flush) throw this.ceph.faults.flush;
      this.ceph.log.push(`flush ${this.name}`);
      return 0;
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#inflight]);
    await this.ceph.gates.close;
    this.s.opens--;
  }

  async stat() {
    this.#check();
    const size = this.s.data.length;
    return {
      size,
      objectSize: 4 << 20,
      numObjects: 1,
      order: 22,
      features: this.s.features ?? 0n,
      flags: 0,
      stripeUnit: 0,
      stripeCount: 0,
      parentOverlap: 0,
    };
  }

  async resize(size: number): Promise<void> {
    this.#check();
    const d = Buffer.alloc(size);
    this.s.data.copy(d, 0, 0, Math.min(size, this.s.data.length));
    this.s.data = d;
    this.ceph.log.push(`resize ${this.name} ${size}`);
  }

  async snapCreate(name: string, opts: { skipQuiesce?: boolean } = {}): Promise<void> {
    this.#check();
    if (this.ceph.faults.snapCreate) throw this.ceph.faults.snapCreate;
    if (this.s.snaps.some((x) => x.name === name)) throw cephError("EEXIST", "rbd_snap_create");
    this.s.snaps.push({ name, data: Buffer.from(this.s.data), quiesced: !opts.skipQuiesce });
    this.ceph.log.push(`snapCreate ${this.name} ${name}`);
    if (this.ceph.faults.snapCreateAfter) throw this.ceph.faults.snapCreateAfter;
  }

  async snapList() {
    this.#check();
    if (this.ceph.faults.snapList) throw this.ceph.faults.snapList;
    return this.s.snaps.map((x, i) => ({
      id: i + 1,
      name: x.name,
      size: x.data.length,
      timestamp: 0,
      protected: false,
    }));
  }

  async snapRollback(name: string): Promise<void> {
    this.#check();
    const snap = this.s.snaps.find((x) => x.name === name);
    if (!snap) throw cephError("ENOENT", "rbd_snap_rollback");
    this.s.data = Buffer.from(snap.data);
    this.ceph.log.push(`snapRollback ${this.name} ${name}`);
  }

  async metaGet(key: string): Promise<string | null> {
    this.#check();
    return this.s.meta.get(key) ?? null;
  }

  /** An op on the handle, as librbd's: close() waits for it. */
  metaSet(key: string, value: string): Promise<void> {
    return this.#aio(async () => {
      await this.ceph.gates.metaSet;
      if (this.ceph.faults.metaSet) throw this.ceph.faults.metaSet;
      this.s.meta.set(key, value);
      this.ceph.log.push(`metaSet ${this.name} ${key}`);
      if (this.ceph.faults.metaSetAfter) throw this.ceph.faults.metaSetAfter;
    });
  }

  async metaRemove(key: string): Promise<void> {
    this.#check();
    await this.ceph.gates.metaRemove;
    if (this.ceph.faults.metaRemove) throw this.ceph.faults.metaRemove;
    this.s.meta.delete(key);
    this.ceph.log.push(`metaRemove ${this.name} ${key}`);
  }

  /** Changed 4 KiB blocks of the head against `fromSnapshot` (sizes are compared by the caller). */
  async *diff(opts: DiffOptions = {}): AsyncGenerator<Extent[], void, undefined> {
    this.#check();
    const base = opts.fromSnapshot
      ? this.s.snaps.find((x) => x.name === opts.fromSnapshot)?.data
      : Buffer.alloc(this.s.data.length);
    if (!base) throw cephError("ENOENT", "rbd_diff_iterate2");
    const out: Extent[] = [];
    for (let off = 0; off < this.s.data.length; off += 4096) {
      const a = this.s.data.subarray(off, off + 4096);
      const b = base.subarray(off, off + 4096);
      if (!a.equals(b)) out.push({ offset: off, length: a.length, exists: true });
    }
    if (out.length > 0) yield out;
  }
}

/** Everything in a pool except `except` (image name), as comparable text: to show nothing else changed. */
export function poolState(ceph: FakeCeph, pool: string, except = ""): string {
  const p = ceph.pool(pool);
  const images = [...p.images.entries()]
    .filter(([n]) => n !== except)
    .map(([n, s]) => ({
      n,
      data: s.data.toString("base64"),
      snaps: s.snaps.map((x) => `${x.name}:${x.data.toString("base64")}`),
      meta: [...s.meta.entries()],
    }));
  const objects = [...p.objects.entries()].map(([n, b]) => [n, b.toString("base64")]);
  return JSON.stringify({ images, objects });
}
