/**
 * A leader lease without PostgreSQL, for the HA unit tests: one in-memory "row" shared by every
 * coordinator of a test (LeaseRow), with the contract of catalog/leader-lease.ts — a lapsed or free
 * lease is taken with token + 1, the holder renews with the same token — and its fencing: once a
 * coordinator was granted the lease, `fence(me)` (called before each write of its catalog) throws
 * FencedError unless the row still names it with that token. `fencedCatalog` puts that check in
 * front of every write of a real SqliteCatalog, as the PostgreSQL store does in its transactions.
 */
import type { Catalog } from "../../../../src/coordinator/catalog/catalog";
import {
  type CoordinatorIdentity,
  FencedError,
  holds,
  type LeaderLease,
  type LeaderRecord,
} from "../../../../src/coordinator/catalog/leader-lease";

export class LeaseRow {
  record: LeaderRecord | undefined;
  /** Every tryAcquire throws while set (the database is unreachable). */
  failing = false;
  /** Runs when a failing tryAcquire is called, before it throws (a call that took a while to fail). */
  onFail: (() => void) | null = null;
  constructor(public now: () => number) {}
}

export class FakeLease implements LeaderLease {
  /** The token this coordinator was last granted (its writes are fenced with it). */
  granted = 0;
  constructor(readonly row: LeaseRow) {}

  tryAcquire(me: CoordinatorIdentity, ttlMs: number): LeaderRecord {
    if (this.row.failing) {
      this.row.onFail?.();
      throw new Error("connection refused (fake)");
    }
    const now = this.row.now();
    const r = this.row.record;
    if (!r || r.holder === "" || r.expiresAt <= now) {
      this.row.record = {
        holder: me.id,
        instance: me.instance,
        address: me.address,
        token: (r?.token ?? 0) + 1,
        expiresAt: now + ttlMs,
      };
    } else if (holds(r, me)) {
      r.expiresAt = now + ttlMs;
    }
    const out = { ...(this.row.record as LeaderRecord) };
    if (holds(out, me)) this.granted = out.token;
    return out;
  }

  current(): LeaderRecord | undefined {
    return this.row.record ? { ...this.row.record } : undefined;
  }

  release(me: CoordinatorIdentity): void {
    if (holds(this.row.record, me)) this.row.record = { ...(this.row.record as LeaderRecord), holder: "", address: "" };
  }

  /** Throws FencedError when this coordinator was granted a token that is no longer the row's. */
  fence(id: string): void {
    if (this.granted === 0) return;
    const r = this.row.record;
    if (r?.holder !== id || r.token !== this.granted) throw new FencedError(this.granted);
  }
}

const WRITES = /^(insert|update|upsert|pin|delete|save|put|set|add|remove|record|transaction)/;

/** `catalog` with `leadership` = `lease` and every write fenced for coordinator `id`. */
export function leasedCatalog(catalog: Catalog, lease: FakeLease, id: string): Catalog {
  return new Proxy(catalog, {
    get(t, key) {
      if (key === "leadership") return lease;
      if (key === "kind") return "postgresql";
      const v = Reflect.get(t, key, t);
      if (typeof v !== "function" || typeof key !== "string" || !WRITES.test(key)) {
        return typeof v === "function" ? v.bind(t) : v;
      }
      return (...args: unknown[]) => {
        lease.fence(id);
        return v.apply(t, args);
      };
    },
  });
}
