/**
 * The leadership loop of a coordinator sharing its catalog with others (PostgreSQL): every `renewMs` it
 * calls `tryAcquire(me, leaseMs)` on the catalog's LeaderLease — a standby takes the lease once it has
 * lapsed, the leader renews it (rbd-mirror's heartbeats: with the defaults, 5 s lease and 1 s renewal,
 * a dead leader is replaced within about 6 s).
 *
 * Becoming leader calls `onLead` (the coordinator starts a term: scheduler and runners built from the
 * catalog). Stepping down calls `onStepDown` at once, synchronously, in three cases:
 *  - the lease record names another holder (or a new token: someone held it in between);
 *  - no renewal succeeded for `leaseMs - margin`, measured from the START of the last successful
 *    `tryAcquire` (the lease may have lapsed; a standby may lead already) — checked before each try, so
 *    a process resumed after a pause steps down before it asks again;
 *  - a catalog write was fenced (`fenced()`, called by fenced-catalog.ts).
 * A grant whose answer took `leaseMs - margin` or more is not counted (nor does a standby lead on it).
 * A stepped-down coordinator keeps trying: it leads again (a new term) when the lease is granted again.
 * Time comes from the deps, so a test drives the clock and calls `check()` itself.
 */
import type { Logger } from "../../common/log";
import {
  type CoordinatorIdentity,
  type FencedError,
  holds,
  type LeaderLease,
  type LeaderRecord,
} from "../catalog/leader-lease";

export type LeaderRole = "leader" | "standby";

export interface LeadershipDeps {
  lease: LeaderLease;
  me: CoordinatorIdentity;
  /** Lease time asked for at each try (ha.leaseSeconds × 1000). */
  leaseMs: number;
  /** How often to try (ha.renewMs). */
  renewMs: number;
  log: Logger;
  /** This coordinator just became leader under `record` (its token fences the writes of the term). */
  onLead(record: LeaderRecord): void;
  /** This coordinator stops leading now; `leader` is the record in force as far as known. */
  onStepDown(reason: string, leader: LeaderRecord | undefined): void;
  /** Epoch ms (default Date.now): compared with the lease record's expiry (the database's clock). */
  now?: () => number;
  /**
   * A monotonic clock, ms (default performance.now; `now` when a test gives one): the local lapse check,
   * which a wall clock stepped back would stretch past the lease — two leaders at once.
   */
  monotonic?: () => number;
}

/** How long before the lease's end (measured locally) the leader gives up when renewals fail. */
export function stepDownMargin(leaseMs: number, renewMs: number): number {
  return Math.min(renewMs, leaseMs / 5);
}

export class Leadership {
  #role: LeaderRole = "standby";
  #record: LeaderRecord | undefined;
  /** Token of the term this coordinator leads (while leader). */
  #token = 0;
  /** The token of the last term that ended here (0: none): never led under again (check). */
  #endedToken = 0;
  /** Monotonic time at the start of the last tryAcquire that granted (or renewed) the lease to me. */
  #renewedAt = 0;
  #timer: NodeJS.Timeout | null = null;
  /** The round lapsed() asked for, not run yet. */
  #checkSoon: NodeJS.Immediate | null = null;
  /** A twin (another process with this ha.id) was reported. */
  #twinWarned = false;
  readonly #now: () => number;
  readonly #mono: () => number;

  constructor(readonly deps: LeadershipDeps) {
    this.#now = deps.now ?? Date.now;
    this.#mono = deps.monotonic ?? deps.now ?? (() => performance.now());
    if (deps.renewMs * 3 > deps.leaseMs)
      throw new Error(
        `ha.renewMs (${deps.renewMs} ms) must be at most a third of ha.leaseSeconds (${deps.leaseMs} ms): two renewals may be missed before the lease lapses`,
      );
  }

  get role(): LeaderRole {
    return this.#role;
  }

  /** The fencing token of the current term (0 while standby). */
  get token(): number {
    return this.#role === "leader" ? this.#token : 0;
  }

  /** The last lease record read (from tryAcquire, or current() after a fenced write). */
  get record(): LeaderRecord | undefined {
    return this.#record;
  }

  /** The leader to send clients to: the record's holder while its lease runs, unless it is me as a standby. */
  leader(): { id: string; address: string } | undefined {
    // While its lease may have lapsed (before the round that steps down), it names no one — not itself.
    if (this.#role === "leader")
      return this.lapsed() ? undefined : { id: this.deps.me.id, address: this.deps.me.address };
    const r = this.#record;
    if (!r || r.holder === "" || holds(r, this.deps.me) || r.expiresAt <= this.#now()) return undefined;
    return { id: r.holder, address: r.address };
  }

  /** Tries at once, then every renewMs until stop(). */
  start(): void {
    this.check();
    this.#timer ??= setInterval(() => this.check(), this.deps.renewMs);
  }

  /** One round: the lapse check, then tryAcquire, then lead / renew / step down. */
  check(): void {
    const { lease, me, leaseMs, log } = this.deps;
    const startedAt = this.#mono();
    this.#stepDownIfLapsed(startedAt);
    let record: LeaderRecord;
    try {
      record = lease.tryAcquire(me, leaseMs);
    } catch (err) {
      log.warn("could not renew or take the leader lease", { err, role: this.#role });
      // A try that failed after a while (a database that did not answer within its statement timeout):
      // the lease may have lapsed meanwhile, and a standby may lead already — not after one more round.
      this.#stepDownIfLapsed(this.#mono());
      return;
    }
    this.#record = record;
    if (!holds(record, me)) {
      if (record.holder === me.id && record.expiresAt > this.#now() && !this.#twinWarned) {
        // Another process runs with this ha.id: it leads, this one waits (and says so once).
        this.#twinWarned = true;
        log.warn("another coordinator process holds the leader lease with this same ha.id; give each its own", {
          id: me.id,
          address: record.address,
        });
      }
      if (this.#role === "leader") {
        const who = record.holder === me.id ? "another process with this ha.id" : record.holder;
        this.stepDown(`the leader lease is held by ${who} (${record.address})`);
      }
      return;
    }
    if (this.#role === "leader" && record.token !== this.#token) {
      this.stepDown(`the leader lease changed hands (token ${this.#token} → ${record.token})`);
    }
    if (this.#role !== "leader" && record.token === this.#endedToken) {
      // Granted the lease of a term that ended here (it stepped down without giving it up: the renewals
      // failed): no new term under that token — what the old one still had in flight would pass the
      // fence. Given up now; the next round takes it with a new token.
      log.info("giving up the lease of the term that ended, to lead under a new token", { token: record.token });
      this.#release();
      return;
    }
    // A grant answered late (a slow database or network) may have lapsed before its answer came — the
    // lease runs from when the database granted it, at or after startedAt: not counted, a standby may
    // lead already. The next round asks again.
    const took = this.#mono() - startedAt;
    if (this.#mayHaveLapsed(took)) {
      log.warn("the leader lease was granted, but its answer came too late to count", { ms: took });
      // Given up, not kept: renewed at the next round, it would start a term under the same token.
      this.#stepDownAndRelease(`the renewal of the leader lease answered after ${took} ms: it may have lapsed`);
      return;
    }
    this.#renewedAt = startedAt;
    if (this.#role === "leader") return;
    this.#role = "leader";
    this.#token = record.token;
    log.info("leading", { id: me.id, address: me.address, token: record.token });
    try {
      this.deps.onLead(record);
    } catch (err) {
      // Starting the term reads and writes the catalog (recovery): a database that fails now — often why
      // the leadership moved — must not end the process (this runs from a timer). Step down, give the
      // lease up, and try again on the next round.
      log.error("could not start the term; stepping down", { err });
      this.#stepDownAndRelease(`starting the term failed: ${(err as Error).message}`);
    }
  }

  /** A catalog write of this coordinator was refused by fencing: step down, learn who leads. */
  fenced(err: FencedError): void {
    if (this.#role !== "leader") return;
    this.deps.log.error("a catalog write was fenced: another coordinator leads; stepping down", { err });
    try {
      this.#record = this.deps.lease.current();
    } catch (e) {
      this.deps.log.warn("could not read the leader lease", { err: e });
    }
    this.stepDown(`a catalog write was fenced (token ${err.heldToken} is no longer current)`);
  }

  /** Stops leading now (idempotent). */
  stepDown(reason: string): void {
    if (this.#role !== "leader") return;
    this.#role = "standby";
    this.#endedToken = this.#token;
    this.#token = 0;
    this.deps.log.warn("stepping down: no longer the leader", { reason, leader: this.leader() });
    this.deps.onStepDown(reason, this.#record);
  }

  /** Stops the loop; a leader steps down and gives the lease up so a standby takes over at once. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    if (this.#checkSoon) clearImmediate(this.#checkSoon);
    this.#checkSoon = null;
    if (this.#role === "leader") this.#stepDownAndRelease("stopping");
    // Stepped down, the lease of the ended term perhaps still ours in the database (its renewals
    // failed): given up too, so that a standby need not wait for it to lapse.
    else if (this.#endedToken && holds(this.#record, this.deps.me) && this.#record?.token === this.#endedToken)
      this.#release();
  }

  /**
   * Whether this leader's lease may have lapsed by now (its own monotonic clock), checked at the moment
   * of asking: after a pause (SIGSTOP, a long GC, slow calls) the event loop runs buffered I/O before the
   * timer of check(), and work that sends agents commands without a fenced write first (a snapshot
   * sweep's prune) must not go out of a deposed term meanwhile. A lapse schedules a round at once,
   * which steps down (not here: the caller may be the term's own code).
   */
  lapsed(): boolean {
    if (this.#role !== "leader" || !this.#mayHaveLapsed(this.#mono() - this.#renewedAt)) return false;
    if (!this.#checkSoon) {
      this.#checkSoon = setImmediate(() => {
        this.#checkSoon = null;
        if (this.#timer) this.check();
      });
    }
    return true;
  }

  /** Whether a lease granted `ms` ago (or answered `ms` after it was asked for) may have lapsed. */
  #mayHaveLapsed(ms: number): boolean {
    const { leaseMs, renewMs } = this.deps;
    return ms >= leaseMs - stepDownMargin(leaseMs, renewMs);
  }

  #stepDownIfLapsed(at: number): void {
    if (this.#role === "leader" && this.#mayHaveLapsed(at - this.#renewedAt)) {
      // Not released here: the database is what failed, and a release would block on it once more. A
      // lease still valid there is given up when a round is next granted it (#endedToken).
      this.stepDown(`no renewal of the leader lease for ${at - this.#renewedAt} ms: it may have lapsed`);
    }
  }

  /** Steps down and gives the lease up, so a standby need not wait for it to lapse. */
  #stepDownAndRelease(reason: string): void {
    this.stepDown(reason);
    this.#release();
  }

  #release(): void {
    try {
      this.deps.lease.release(this.deps.me);
    } catch (err) {
      this.deps.log.warn("could not release the leader lease (a standby takes over when it lapses)", { err });
    }
  }
}
