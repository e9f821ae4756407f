/**
 * Discovery: the images of the pools that policies select by regex, listed through a connected agent of
 * the cluster (session Call "images") at most every discoveryIntervalMs per (cluster, pool, namespace).
 * The last good list is kept: an agent missing or failing leaves the list (and the volumes' records) as
 * they were until a later listing succeeds. Lists are asked in the background; `images()` never waits.
 */
import type { Logger } from "../../common/log";
import type { PolicySelector } from "../../gen/rbdbackup/v1/policy";
import type { Sessions } from "../sessions";
import { regexMatches } from "./validate";

/** How long one listing may take. */
const LIST_TIMEOUT_MS = 15_000;

interface PoolImages {
  sel: Pick<PolicySelector, "cluster" | "pool" | "namespace">;
  images: string[] | null;
  listedAt: number;
  askedAt: number;
  /** When it was first asked for (the age of a pool never listed counts from then). */
  since: number;
  inflight: boolean;
}

/** A discovered pool's listing age (rbdbackup_policy_discovery_age_seconds). */
export interface DiscoveryAge {
  cluster: string;
  pool: string;
  namespace: string;
  ageSeconds: number;
}

export const poolKey = (s: Pick<PolicySelector, "cluster" | "pool" | "namespace">): string =>
  `${s.cluster}/${s.pool}/${s.namespace}`;

export class Discovery {
  readonly #pools = new Map<string, PoolImages>();

  constructor(
    private readonly sessions: Pick<Sessions, "any">,
    private readonly intervalMs: number,
    private readonly log: Logger,
    private readonly onListed: () => void = () => {},
  ) {}

  /** The pool's images as last listed (null: never listed yet); asks again in the background when due. */
  images(sel: PolicySelector, nowMs: number): string[] | null {
    const key = poolKey(sel);
    let p = this.#pools.get(key);
    if (!p) {
      p = {
        sel: { cluster: sel.cluster, pool: sel.pool, namespace: sel.namespace },
        images: null,
        listedAt: 0,
        askedAt: 0,
        since: nowMs,
        inflight: false,
      };
      this.#pools.set(key, p);
    }
    // A clock stepped back (nowMs < askedAt) lists again at once rather than after the step plus the interval.
    const due = p.askedAt === 0 || nowMs - p.askedAt >= this.intervalMs || nowMs < p.askedAt;
    if (!p.inflight && due) void this.#list(sel, p, nowMs);
    return p.images;
  }

  /** When the next listing falls due (Infinity: no pool; a listing in flight reports through onListed). */
  nextListingAt(): number {
    let at = Number.POSITIVE_INFINITY;
    for (const p of this.#pools.values()) if (!p.inflight) at = Math.min(at, p.askedAt + this.intervalMs);
    return at;
  }

  /**
   * How long ago each discovered pool was last listed (since it was first asked for, when never): a
   * listing that keeps failing leaves images made since without protection, and nothing else says so.
   */
  ages(nowMs: number): DiscoveryAge[] {
    return [...this.#pools.values()].map((p) => ({
      cluster: p.sel.cluster,
      pool: p.sel.pool,
      namespace: p.sel.namespace,
      ageSeconds: Math.max(0, (nowMs - (p.listedAt || p.since)) / 1000),
    }));
  }

  /** The pool's listing is due at the next `images()` call. */
  expire(sel: PolicySelector): void {
    const p = this.#pools.get(poolKey(sel));
    if (p) p.askedAt = 0;
  }

  async #list(sel: PolicySelector, p: PoolImages, nowMs: number): Promise<void> {
    p.inflight = true;
    p.askedAt = nowMs;
    try {
      const agent = this.sessions.any(sel.cluster);
      const r = await agent.call(
        { $case: "images", value: { pool: sel.pool, namespace: sel.namespace } },
        "images",
        LIST_TIMEOUT_MS,
      );
      // An unchanged listing keeps its array: the tick plan compares listings by identity, and a
      // listing that changed nothing needs no full pass of its policies.
      if (!sameList(p.images, r.images)) p.images = r.images;
      p.listedAt = nowMs;
      this.onListed();
    } catch (err) {
      this.log.warn("policy discovery: cannot list the pool's images; its volumes keep their records", {
        pool: poolKey(sel),
        err,
      });
    } finally {
      p.inflight = false;
    }
  }

  /** Pools no selector names any more are forgotten. */
  retain(keys: Set<string>): void {
    for (const k of this.#pools.keys()) if (!keys.has(k)) this.#pools.delete(k);
  }
}

function sameList(a: string[] | null, b: string[]): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The images of `images` the selector's regex matches (anchored; empty regex = all). */
export function matching(sel: PolicySelector, images: string[]): string[] {
  if (!sel.imageRegex) return images;
  return images.filter((n) => regexMatches(sel.imageRegex, n));
}
