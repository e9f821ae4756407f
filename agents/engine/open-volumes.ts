/**
 * Volumes a probe opened for the backup about to be queued (ProbeRequest.keep_open: CreateBackup probes
 * the volume, then its job's lease reaches the agent tens of milliseconds later), held for that backup:
 * it takes the handle instead of opening the volume a second time. An open is several OSD round trips —
 * 675 ms of a full backup's 12.7 s with 0–100 ms of OSD latency (bench latency row), 12–15 ms on the quiet lab.
 *
 * - A handle is read-write with its watch, as the backup's own open: librbd refreshes it when the
 *   volume changes (a snapshot, a resize), so what the backup reads through it is current.
 * - A handle is taken at most once. One not taken within `ttlMs` (1 s: the lease comes 20–40 ms after
 *   the probe on the lab; a job that waits for its volume's lock, or a CreateBackup refused after its
 *   probe — an INCREMENTAL without a parent — does not take it) is closed: while it is held the volume
 *   has a watcher, and `rbd rm` of it is refused ("image still has watchers"), as during any backup. A
 *   newer probe of the same volume replaces it; at most `max` are held.
 * - close() (the agent's stop) closes all of them.
 */
import type { Image, IoCtx } from "../ceph";

export interface OpenVolume {
  io: IoCtx;
  image: Image;
}

/** What OpenVolumes needs of a handle (the tests' fakes). */
type Closable = { close(): Promise<unknown> };

export class OpenVolumes<V extends { io: Closable; image: Closable } = OpenVolume> {
  readonly #held = new Map<string, { v: V; timer: NodeJS.Timeout }>();
  readonly #closing = new Set<Promise<void>>();

  constructor(
    readonly ttlMs = 1000,
    readonly max = 8,
  ) {}

  static key(pool: string, namespace: string, image: string): string {
    return `${pool}\u0000${namespace}\u0000${image}`;
  }

  get size(): number {
    return this.#held.size;
  }

  /** Holds `v` for the backup of `key` (closing what was held for it, and the oldest beyond `max`). */
  put(key: string, v: V): void {
    this.#drop(key);
    while (this.#held.size >= this.max) {
      const oldest = this.#held.keys().next().value as string;
      this.#drop(oldest);
    }
    const timer = setTimeout(() => this.#drop(key), this.ttlMs);
    timer.unref();
    this.#held.set(key, { v, timer });
  }

  /** The handle held for `key`, now the caller's to close; null when none is. */
  take(key: string): V | null {
    const h = this.#held.get(key);
    if (!h) return null;
    clearTimeout(h.timer);
    this.#held.delete(key);
    return h.v;
  }

  /** Closes every held handle, and waits for those being closed. */
  async close(): Promise<void> {
    for (const key of [...this.#held.keys()]) this.#drop(key);
    await Promise.all([...this.#closing]);
  }

  #drop(key: string): void {
    const h = this.take(key);
    if (!h) return;
    const p = closeVolume(h).finally(() => this.#closing.delete(p));
    this.#closing.add(p);
  }
}

/** Closes the image, then its IoCtx; errors are dropped (nothing can be done about them). */
async function closeVolume(v: { io: Closable; image: Closable }): Promise<void> {
  await v.image.close().catch(() => {});
  await v.io.close().catch(() => {});
}
