/**
 * Gives memory back when the data plane goes quiet. An agent's resident size grows during a transfer —
 * chunk buffers in the pools, and glibc's arenas holding what librados and librbd freed — and without
 * this a restore starts from what the previous backup left (measured: 134–184 MiB at rest after a
 * 4 GiB backup, the restore then peaking at 210–260 MiB). Once no pool has been used for a whole check
 * period (`quietMs`, 250 ms: the pools' use counts did not move between two checks), the pools' idle
 * buffers are dropped, `collectGarbage` frees them when they were many (a dropped Buffer's memory goes
 * back to glibc only when V8 collects it, and a quiet agent allocates nothing that would make it), and after
 * `settleMs` — V8 frees the memory of dead ArrayBuffers on a background thread after the collection —
 * `releaseNative` (glibc malloc_trim) runs: once per quiet spell, between one and two periods after
 * the last use.
 *
 * Cost while busy: a counter per buffer taken or given (buffer-pool.ts; no clock read) and one check per `quietMs`.
 */
import type { BufferPool } from "./buffer-pool";

export interface QuietReleaseOptions {
  pools: BufferPool[];
  /** Gives the C libraries' free memory back (releaseFreeMemory); its errors and collectGarbage's are logged, never thrown. */
  releaseNative: () => Promise<unknown>;
  /**
   * A full garbage collection (agents/agent/gc.ts), run after the pools dropped their idle buffers —
   * when they dropped at least `collectFromBytes` (default 8 MiB, four 2 MiB chunks): a small
   * incremental's few small buffers are not worth a full collection (with one after each, the
   * destination spent +0.035 CPU-s per 20 MiB incremental, 0.245 → 0.28).
   */
  collectGarbage?: () => void;
  collectFromBytes?: number;
  /** Wait between the collection and releaseNative (default 250 ms; without it the trim ran before V8 had freed the buffers, and 54 MiB stayed resident). */
  settleMs?: number;
  /**
   * The check period: quiet for a whole one releases. Default 250 ms: a restore started right after a
   * backup peaked at 197 MiB with 5 s, 135 with 1 s (4 GiB), and with 1 s still at 147–199 MiB (1 GiB,
   * memory rows, 2026-12-04: the restore began before the backup's memory was back), 134–163 with 250 ms.
   */
  quietMs?: number;
  log?: { debug(msg: string, fields?: Record<string, unknown>): void };
}

export class QuietRelease {
  #timer: NodeJS.Timeout | null = null;
  /** The pools' uses when memory was last released: none since, nothing to do. */
  #releasedUses = -1;
  /** The pools' uses at the previous check: unchanged since, the pools were quiet for a whole period. */
  #seenUses = -1;
  #running: Promise<void> | null = null;
  /** Each pool's uses at the previous check, and whether they had not moved in the period before it. */
  #poolSeen = new Map<BufferPool, { uses: number; still: boolean }>();
  releases = 0;

  constructor(readonly opts: QuietReleaseOptions) {
    for (const pool of opts.pools) pool.onAllocate = () => this.#allocating(pool);
  }

  get quietMs(): number {
    return this.opts.quietMs ?? 250;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.check(), this.quietMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /**
   * One check (the timer's, every quietMs): releases when no pool was used since the previous check
   * and something was used since the last release.
   */
  async check(): Promise<boolean> {
    for (const p of this.opts.pools) {
      const seen = this.#poolSeen.get(p);
      this.#poolSeen.set(p, { uses: p.uses, still: seen?.uses === p.uses });
    }
    if (this.#running) return false;
    const uses = this.opts.pools.reduce((n, p) => n + p.uses, 0);
    const quiet = uses === this.#seenUses;
    this.#seenUses = uses;
    if (!quiet || uses === this.#releasedUses) return false;
    this.#releasedUses = uses;
    await this.#release(this.opts.pools, "data plane quiet");
    return true;
  }

  /**
   * A pool had to allocate — a transfer is starting or growing. When the other pools still hold
   * `collectFromBytes` or more idle (the agent's previous role, e.g. a restore's source right after it
   * received a backup), they are released now instead of on the timer: a restore begun 250–750 ms
   * after a backup started from the backup's 151 MiB and peaked at 201 (README table, 2026-12-04). The
   * new role then reuses that memory. Nothing when a release is running.
   *
   * Only pools no transfer is using are released: every buffer given back (`out` 0), or no take or give
   * for a whole check period and since (a buffer a failed transfer never gave back keeps `out` above 0).
   * An agent that is source and destination at once would otherwise drop the busy role's idle buffers
   * whenever the other allocated — each time a full collection, and that role reallocating them.
   */
  #allocating(pool: BufferPool): void {
    if (this.#running) return;
    const others = this.opts.pools.filter((p) => p !== pool && this.#unused(p));
    const idle = others.reduce((n, p) => n + p.idleBytes, 0);
    if (idle === 0 || idle < this.#collectFromBytes) return;
    void this.#release(others, "another role starting");
  }

  #unused(p: BufferPool): boolean {
    if (p.out === 0) return true;
    const seen = this.#poolSeen.get(p);
    return seen?.still === true && seen.uses === p.uses;
  }

  /** Drops `pools`' idle buffers, collects them, then the C libraries' free memory goes back. */
  #release(pools: BufferPool[], why: string): Promise<void> {
    const bytes = pools.reduce((n, p) => n + p.trim(), 0);
    this.#running = this.#collect(bytes, why)
      .then(() => this.opts.releaseNative())
      .then(
        (released) =>
          this.opts.log?.debug(`${why}: memory released`, {
            poolBytes: bytes,
            released,
            buffersOut: pools.map((p) => p.out),
          }),
        (e) => this.opts.log?.debug(`${why}: memory release failed`, { error: String(e) }),
      )
      .finally(() => {
        this.#running = null;
        this.releases++;
      });
    return this.#running;
  }

  get #collectFromBytes(): number {
    return this.opts.collectFromBytes ?? 8 << 20;
  }

  /** The collection, then the settle wait; nothing when the pools dropped little. */
  async #collect(droppedBytes: number, why: string): Promise<void> {
    const { collectGarbage, settleMs = 250 } = this.opts;
    if (!collectGarbage || droppedBytes < this.#collectFromBytes) return;
    try {
      collectGarbage();
    } catch (e) {
      this.opts.log?.debug(`${why}: garbage collection failed`, { error: String(e) });
    }
    if (settleMs <= 0) return;
    await new Promise<void>((resolve) => setTimeout(resolve, settleMs));
  }
}
