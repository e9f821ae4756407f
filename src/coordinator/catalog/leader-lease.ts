/**
 * Leadership among coordinators that share one catalog (PostgreSQL): a single lease row with a holder,
 * the holder's advertised address, an expiry and a fencing token that grows by one at every change of
 * holder. The store that keeps the row also fences its own writes: once `tryAcquire` has granted `me`
 * the lease, every write transaction of that catalog checks — in the same transaction, under a row lock —
 * that the row still names `me` with the same token, and throws FencedError otherwise, so a deposed
 * leader (paused, partitioned, slow) cannot commit anything after another coordinator took over.
 * A SQLite catalog has no leadership (one coordinator per file): `Catalog.leadership` is undefined.
 */
import { AppError, Status } from "../../common/errors";

export interface CoordinatorIdentity {
  /** Stable id of the coordinator (config ha.id). */
  id: string;
  /** host:port clients and agents should use to reach it (config ha.advertise). */
  address: string;
  /**
   * This process (random at each start): two processes with one ha.id — a copied config, a replacement
   * started while the old one still runs — are two holders, so only one can lead at a time.
   */
  instance: string;
}

export interface LeaderRecord {
  holder: string;
  /** The holder's process (CoordinatorIdentity.instance). */
  instance: string;
  address: string;
  /** Fencing token: +1 at every change of holder (a renewal keeps it). */
  token: number;
  /** Epoch ms (the database's clock) when the lease lapses unless renewed. */
  expiresAt: number;
}

export interface LeaderLease {
  /**
   * Atomically: takes the lease when nobody holds it or it has lapsed (token + 1), renews it when `me`
   * holds it — the same id AND the same process instance — (same token, new expiry), else leaves it.
   * Returns the record in force afterwards — `me` leads iff holds(record, me). From a grant on, this
   * catalog's writes are fenced with that token.
   */
  tryAcquire(me: CoordinatorIdentity, ttlMs: number): LeaderRecord;
  /** The record in force, or undefined when no coordinator ever led. */
  current(): LeaderRecord | undefined;
  /** Gives the lease up (clean stop) when `me` holds it, so a standby takes over without waiting. */
  release(me: CoordinatorIdentity): void;
}

/** A write refused because this coordinator no longer holds the lease it was granted. */
export class FencedError extends AppError {
  constructor(readonly heldToken: number) {
    super(
      Status.UNAVAILABLE,
      `this coordinator lost the leadership (fencing token ${heldToken} is no longer current); retry on the leader`,
    );
  }
}

/**
 * A call of work a leadership term left running, made after that term ended (ha/fenced-catalog.ts
 * termCatalog): refused, whatever the database would say. Not a fencing of the current term — nothing
 * steps down — and expected at every step-down with work in flight: logged at debug level.
 */
export class TermEndedError extends AppError {
  constructor(readonly token: number) {
    super(
      Status.UNAVAILABLE,
      `the leadership term (fencing token ${token}) this work started in has ended; the current leader redoes what is needed`,
    );
  }
}

/** Whether `r` names this very process (id and instance) as the holder. */
export const holds = (r: LeaderRecord | undefined, me: CoordinatorIdentity): boolean =>
  !!r && r.holder === me.id && r.instance === me.instance;
