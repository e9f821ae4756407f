/**
 * An open RBD image. Data I/O is librbd aio straight from/into the caller's Buffers (no copies; many
 * may be in flight); the Buffer must not be touched until its promise settles. close() waits for the
 * I/O still in flight, then closes. A diff walk (diff()) runs librbd's iteration on a thread of its own
 * through this handle, also while its consumer is elsewhere: a move (snapSet) or close() first ends the
 * walks still open (their next pull rejects), so no walk reads across a move or outlives the handle.
 */
import { constants } from "node:os";
import { CephError, ClosedError, nativeCall, nativeIo } from "./errors";
import type { ChildImage, ImageStat, ImageWatcher, NativeDiffIterator, NativeImage, SnapInfo } from "./native";
import * as v from "./validate";

/** How often a flatten's progress is read while it runs (Image.flatten's onProgress). */
export const FLATTEN_POLL_MS = 250;

export interface Extent {
  offset: number;
  length: number;
  /** false: the range reads as zeros at the end point (discarded, or beyond a shrink). */
  exists: boolean;
}

export interface DiffOptions {
  /** Diff from this snapshot; absent = from image creation. */
  fromSnapshot?: string;
  offset?: number;
  /** Default: the image size (at the snapshot it is open at) minus offset. */
  length?: number;
  /** Report whole objects (fast, coarse) instead of exact extents. Default false. */
  wholeObject?: boolean;
  /** For a clone, include the parent's data. Default true. */
  includeParent?: boolean;
  /** Extents per batch, 1..65536. Default 1024. */
  batchSize?: number;
}

export class Image {
  #h: NativeImage;
  #closed = false;
  #inflight = 0;
  /** Waiting for the I/O in flight to drain (close, snapSet). */
  #idle: Array<() => void> = [];
  /**
   * Set while snapSet moves the handle: every call started meanwhile waits for the move to end, so none
   * runs beside rbd_snap_set — a write let through then (the handle still at the head for readOnly)
   * would reach librbd at a snapshot and never complete.
   */
  #moving: Promise<void> | null = null;
  /** The diff walks open on this handle: ended (their native iterators closed) before a move or close. */
  readonly #walks = new Set<NativeDiffIterator>();
  /** pool[/namespace]/name, without the snapshot. */
  readonly #name: string;
  readonly #openedReadOnly: boolean;
  /** The snapshot this handle is at (null: the head). */
  #snapshot: string | null;

  /** @internal use IoCtx.imageOpen() */
  constructor(
    handle: NativeImage,
    /** pool[/namespace]/name, for messages. */
    name: string,
    /** Opened read-only. */
    readOnly: boolean,
    /** Opened at this snapshot. */
    snapshot: string | null = null,
    /** Opens another handle on the same image, read-only at a snapshot (openAt). */
    reopen: ((snapshot: string) => Promise<Image>) | null = null,
  ) {
    this.#h = handle;
    this.#name = name;
    this.#openedReadOnly = readOnly;
    this.#snapshot = snapshot;
    this.#reopen = reopen;
  }

  readonly #reopen: ((snapshot: string) => Promise<Image>) | null;

  /**
   * Another handle on this image, read-only at `snapshot` (its own open: this handle does not move, so
   * what else reads through it is never at another snapshot). The caller closes it.
   */
  openAt(snapshot: string): Promise<Image> {
    v.name(snapshot, "snapshot");
    this.#check();
    if (!this.#reopen) return Promise.reject(new Error(`${this.label}: opened without its pool; cannot open it again`));
    return this.#reopen(snapshot);
  }

  /** pool[/namespace]/name[@snapshot], for messages. */
  get label(): string {
    return this.#snapshot === null ? this.#name : `${this.#name}@${this.#snapshot}`;
  }

  /** No writes: opened read-only, or at a snapshot. */
  get readOnly(): boolean {
    return this.#openedReadOnly || this.#snapshot !== null;
  }

  /** The snapshot this handle is at (null: the head). */
  get snapshot(): string | null {
    return this.#snapshot;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Number of native calls (aio operations, a flatten, metadata calls) in flight. */
  get inflight(): number {
    return this.#inflight;
  }

  #check(): void {
    if (this.#closed) throw new ClosedError(`image ${this.label} is closed`);
  }

  /** A native call other than I/O, counted in `inflight` (close() waits for it); after a move in progress. */
  #call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.#moving) return this.#moving.then(() => this.#call(what, fn));
    return this.#native(what, fn);
  }

  async #native<T>(what: string, fn: () => Promise<T>): Promise<T> {
    this.#check();
    this.#inflight++;
    try {
      return await nativeCall(`${what} ${this.label}`, fn);
    } finally {
      this.#settled();
    }
  }

  /**
   * A write to an image open read-only or at a snapshot is refused here with EROFS: with the settings
   * connect() gives librbd (rbd_cache=false, zero-copy writes), Ceph 16.2's `rbd_aio_write2` on such an
   * image never completes — reproduced with the C API alone; write zeroes and discard do fail with
   * EROFS — and a wait that never ends is worse than any error.
   */
  #refuseReadOnly(what: () => string, op: string): Promise<number> | null {
    if (!this.readOnly) return null;
    return Promise.reject(
      new CephError(constants.errno.EROFS, op, `${what()} ${this.label}`, "the image is open read-only"),
    );
  }

  /**
   * An I/O call; `what` names it only if it fails (nativeIo). `writeOp`: a write, refused (EROFS) when
   * the handle is read-only once any move in progress ended.
   */
  #aio(what: () => string, fn: () => Promise<number>, writeOp?: string): Promise<number> {
    if (this.#moving) return this.#moving.then(() => this.#aio(what, fn, writeOp));
    if (writeOp) {
      const refused = this.#refuseReadOnly(what, writeOp);
      if (refused) return refused;
    }
    return this.#io(what, fn);
  }

  async #io(what: () => string, fn: () => Promise<number>): Promise<number> {
    this.#check();
    this.#inflight++;
    try {
      return await nativeIo(() => `${what()} ${this.label}`, fn);
    } finally {
      this.#settled();
    }
  }

  /** One operation counted in `inflight` ended. */
  #settled(): void {
    if (--this.#inflight === 0 && this.#idle.length > 0) for (const resolve of this.#idle.splice(0)) resolve();
  }

  stat(): Promise<ImageStat> {
    return this.#call("stat", () => this.#h.stat());
  }

  resize(size: number): Promise<void> {
    v.uint(size, "size");
    return this.#call("resize", () => this.#h.resize(size));
  }

  /**
   * Creates a snapshot. Other clients watching the image are asked to quiesce first (their hooks, e.g.
   * rbd-nbd's fsfreeze, run; the client's rbd_default_snapshot_quiesce_mode applies) unless
   * `skipQuiesce`, which is for images no other client maps — it saves two watch-notify round trips.
   */
  snapCreate(name: string, opts: { skipQuiesce?: boolean } = {}): Promise<void> {
    v.name(name, "snapshot");
    v.object(opts, "options");
    const skip = v.bool(opts.skipQuiesce ?? false, "skipQuiesce");
    return this.#call(`create snapshot ${name} of`, () => this.#h.snapCreate(name, skip));
  }

  snapRemove(name: string): Promise<void> {
    v.name(name, "snapshot");
    return this.#call(`remove snapshot ${name} of`, () => this.#h.snapRemove(name));
  }

  /** The clients watching the image (this handle too, when it is open read-write). */
  watchers(): Promise<ImageWatcher[]> {
    return this.#call("list the watchers of", () => this.#h.watchers());
  }

  /** User snapshots, oldest first, with id, size, creation timestamp and protection. */
  snapList(): Promise<SnapInfo[]> {
    return this.#call("list snapshots of", () => this.#h.snapList());
  }

  snapProtect(name: string): Promise<void> {
    v.name(name, "snapshot");
    return this.#call(`protect snapshot ${name} of`, () => this.#h.snapProtect(name));
  }

  snapUnprotect(name: string): Promise<void> {
    v.name(name, "snapshot");
    return this.#call(`unprotect snapshot ${name} of`, () => this.#h.snapUnprotect(name));
  }

  snapRollback(name: string): Promise<void> {
    v.name(name, "snapshot");
    return this.#call(`roll back to snapshot ${name}`, () => this.#h.snapRollback(name));
  }

  /**
   * Moves this handle to `name` (reads and diffs see the snapshot; writes are refused), or back to the
   * head with null — cheaper than opening the image again (no second open, no second watch). Waits for
   * the I/O in flight first.
   */
  snapSet(name: string | null): Promise<void> {
    if (name !== null) v.name(name, "snapshot");
    this.#check();
    return this.#moveTo(name);
  }

  async #moveTo(name: string | null): Promise<void> {
    while (this.#moving) await this.#moving;
    let moved = () => {};
    this.#moving = new Promise<void>((resolve) => {
      moved = resolve;
    });
    try {
      await this.#endWalks();
      await this.#drained();
      await this.#native(name === null ? "move to the head:" : `move to snapshot ${name}:`, () =>
        this.#h.snapSet(name),
      );
      this.#snapshot = name;
    } finally {
      this.#moving = null;
      moved();
    }
  }

  /**
   * Copies the parent's data into this clone, which then no longer depends on it (rbd_flatten).
   * `signal`: once it aborts, librbd starts no further object copy (the few in flight finish) and the
   * call rejects with ECANCELED; the image stays a clone whose copied objects are its own, and a later
   * flatten copies the rest. `onProgress(done, total)`: the objects started so far and their total,
   * polled every `FLATTEN_POLL_MS` and once at the end (what it throws is ignored: an observer's failure is
   * not the flatten's). A flatten librbd hands to another client that holds the image's exclusive lock (a
   * VM using the clone) runs there, to its end, whatever the signal. Counted in `inflight`: close() and
   * snapSet() wait for it.
   */
  async flatten(o: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {}): Promise<void> {
    if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
      throw new TypeError("flatten: signal must be an AbortSignal");
    if (o.onProgress !== undefined && typeof o.onProgress !== "function")
      throw new TypeError("flatten: onProgress must be a function");
    while (this.#moving) await this.#moving;
    this.#check();
    if (o.signal?.aborted) {
      const what = `flatten ${this.label}`;
      throw new CephError(constants.errno.ECANCELED, "rbd_flatten_with_progress", what, "cancelled before it began");
    }
    // [0] cancel (set here), [1] objects started, [2] their total (set by librbd's thread): image.cc.
    // Shared memory: it cannot be detached or moved while librbd's thread uses it.
    const ctl = new BigInt64Array(new SharedArrayBuffer(3 * 8));
    const cancel = () => Atomics.store(ctl, 0, 1n);
    const report = () => {
      try {
        o.onProgress?.(Number(Atomics.load(ctl, 1)), Number(Atomics.load(ctl, 2)));
      } catch {
        // the observer's own failure
      }
    };
    o.signal?.addEventListener("abort", cancel, { once: true });
    const poll = o.onProgress ? setInterval(report, FLATTEN_POLL_MS).unref() : null;
    this.#inflight++;
    try {
      await nativeCall(`flatten ${this.label}`, () => this.#h.flatten(ctl));
    } finally {
      this.#settled();
      o.signal?.removeEventListener("abort", cancel);
      if (poll) clearInterval(poll);
      report();
    }
  }

  /** Clones of the snapshot this image is open at (any pool of the cluster; v1 and v2 clones). */
  listChildren(): Promise<ChildImage[]> {
    return this.#call("list children of", () => this.#h.listChildren());
  }

  /** image-meta value of `key`, or null when unset. */
  metaGet(key: string): Promise<string | null> {
    v.name(key, "key");
    return this.#call(`get image-meta ${key} of`, () => this.#h.metaGet(key));
  }

  metaSet(key: string, value: string): Promise<void> {
    v.name(key, "key");
    v.text(value, "value");
    return this.#call(`set image-meta ${key} of`, () => this.#h.metaSet(key, value));
  }

  metaRemove(key: string): Promise<void> {
    v.name(key, "key");
    return this.#call(`remove image-meta ${key} of`, () => this.#h.metaRemove(key));
  }

  metaList(): Promise<Record<string, string>> {
    return this.#call("list image-meta of", () => this.#h.metaList());
  }

  /** Reads buffer.length bytes at offset into buffer; resolves with the bytes read. */
  read(buffer: Buffer, offset: number): Promise<number> {
    v.buffer(buffer, "buffer");
    v.range(offset, buffer.length, "offset", "buffer.length");
    return this.#aio(
      () => `read ${buffer.length} bytes at ${offset} from`,
      () => this.#h.read(buffer, offset),
    );
  }

  /** Writes buffer at offset; resolves with the bytes written. */
  write(buffer: Buffer, offset: number): Promise<number> {
    v.buffer(buffer, "buffer");
    v.range(offset, buffer.length, "offset", "buffer.length");
    const what = () => `write ${buffer.length} bytes at ${offset} to`;
    // librbd reports 0 for a successful write.
    return this.#aio(
      what,
      async () => {
        await this.#h.write(buffer, offset);
        return buffer.length;
      },
      "rbd_aio_write2",
    );
  }

  /** Makes the range read as zeros, deallocating whole objects where it can. */
  writeZeroes(offset: number, length: number): Promise<number> {
    v.range(offset, length);
    return this.#aio(
      () => `write zeroes ${offset}+${length} to`,
      () => this.#h.writeZeroes(offset, length),
    );
  }

  discard(offset: number, length: number): Promise<number> {
    v.range(offset, length);
    return this.#aio(
      () => `discard ${offset}+${length} of`,
      () => this.#h.discard(offset, length),
    );
  }

  flush(): Promise<number> {
    return this.#aio(
      () => "flush",
      () => this.#h.flush(),
    );
  }

  /**
   * Changed extents between `fromSnapshot` (or creation) and the point this image is open at, in
   * ascending order, as batches produced only when the consumer pulls. Breaking out of the loop
   * cancels librbd's iteration; so does a move of this handle or its close, after which the next pull
   * rejects (ClosedError, or ECANCELED for a pull in progress).
   */
  async *diff(opts: DiffOptions = {}): AsyncGenerator<Extent[], void, undefined> {
    v.object(opts, "options");
    const fromSnapshot = v.optionalName(opts.fromSnapshot, "fromSnapshot");
    const offset = v.uint(opts.offset ?? 0, "offset");
    const length = opts.length === undefined ? undefined : v.uint(opts.length, "length");
    if (length !== undefined) v.range(offset, length);
    const wholeObject = v.bool(opts.wholeObject ?? false, "wholeObject");
    const includeParent = v.bool(opts.includeParent ?? true, "includeParent");
    const batchSize = v.positiveInt(opts.batchSize ?? 1024, "batchSize", 65536);
    while (this.#moving) await this.#moving;
    this.#check();
    const it = this.#h.diffIterate({
      ...(fromSnapshot ? { fromSnapshot } : {}),
      offset,
      ...(length !== undefined ? { length } : {}),
      wholeObject,
      includeParent,
      batchSize,
    });
    this.#walks.add(it);
    const label = `diff ${fromSnapshot ? `from ${fromSnapshot} ` : ""}of`;
    try {
      for (;;) {
        const { extents, done } = await this.#call(label, () => it.next());
        if (extents.length > 0) {
          const batch: Extent[] = new Array(extents.length / 3);
          for (let i = 0, j = 0; i < extents.length; i += 3, j++) {
            batch[j] = { offset: extents[i] as number, length: extents[i + 1] as number, exists: extents[i + 2] === 1 };
          }
          yield batch;
        }
        if (done) return;
      }
    } finally {
      // A walk ended by a move or close() is being closed there (which waits for it).
      if (this.#walks.delete(it)) await it.close();
    }
  }

  /** Closes the diff walks still open (each waits for librbd's thread to unwind). */
  async #endWalks(): Promise<void> {
    const open = [...this.#walks];
    this.#walks.clear();
    await Promise.all(open.map((it) => it.close().catch(() => {})));
  }

  /** Resolves once no I/O is in flight. */
  async #drained(): Promise<void> {
    while (this.#inflight > 0) await new Promise<void>((resolve) => this.#idle.push(resolve));
  }

  /** Ends the open diff walks, waits for the native calls in flight (I/O, metadata, a move), then closes. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#endWalks();
    await this.#drained();
    await nativeCall(`close image ${this.label}`, () => this.#h.close());
  }
}
