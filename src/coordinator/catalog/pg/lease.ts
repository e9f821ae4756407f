/**
 * The coordinators' leader lease in PostgreSQL (see ../leader-lease.ts): one row of
 * `coordinator_leader`, taken, renewed or left by ONE statement on the database's clock (now()), so two
 * coordinators never both believe they were granted it. The holder is an id and a process instance: a
 * second process with the same ha.id is another holder. The token grows by one at every change of
 * holder, and when a holder takes its own lease back after it lapsed (the fake in the unit tests does
 * the same). The catalog fences its writes with the token this lease last granted (`fence`): each write
 * transaction first reads the row FOR SHARE and is refused unless it still names us with that token; a
 * takeover's UPDATE waits for that lock, so a write either commits before the takeover or is refused.
 */

import { AppError, Status } from "../../../common/errors";
import { type CoordinatorIdentity, holds, type LeaderLease, type LeaderRecord } from "../leader-lease";
import type { SyncBridge } from "./bridge";
import type { Fence } from "./protocol";
import { SCHEMA_VERSION } from "./schema";

/**
 * Takes (nobody / lapsed: token + 1 — ours too: a lapsed lease retaken is a new term), renews (ours,
 * still running: same token) or leaves the lease, and returns the row written (granted), else (someone
 * else holds it) the row as the statement's snapshot saw it, not granted. That snapshot may predate a
 * takeover the statement waited for (READ COMMITTED: the conflict's WHERE reads the newest row, the
 * SELECT the snapshot): it can show our own old grant, so only `granted` says we lead.
 *
 * Never granted while the database's schema is newer than this code's (`$5`, SCHEMA_VERSION): in a rolling
 * upgrade a newer coordinator migrates the schema at its start, and an older one still running must not
 * lead on it — it would read the new rows with the old rules (schema 3's shared backup locks taken for
 * other resources: a DELETE beside a restore). The row also says the database's version (`schema`).
 */
const ACQUIRE = `
WITH s AS (SELECT coalesce(max(version), 0) AS v FROM schema_migrations),
up AS (
INSERT INTO coordinator_leader AS l (id, holder, instance, address, token, expires_at)
SELECT 1, $1, $4, $2, 1, now() + $3 * interval '1 millisecond' FROM s WHERE s.v <= $5
ON CONFLICT (id) DO UPDATE SET
  token = CASE WHEN l.holder = excluded.holder AND l.instance = excluded.instance AND l.expires_at > now() THEN l.token ELSE l.token + 1 END,
  holder = excluded.holder,
  instance = excluded.instance,
  address = excluded.address,
  expires_at = excluded.expires_at
WHERE (l.holder = excluded.holder AND l.instance = excluded.instance) OR l.expires_at <= now()
RETURNING holder, instance, address, token, (extract(epoch FROM expires_at) * 1000)::bigint AS expires_at
)
SELECT *, true AS granted, (SELECT v FROM s) AS schema FROM up
UNION ALL
SELECT holder, instance, address, token, (extract(epoch FROM expires_at) * 1000)::bigint, false, (SELECT v FROM s)
FROM coordinator_leader
WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM up)
UNION ALL
SELECT '', '', '', 0, 0, false, (SELECT v FROM s)
WHERE NOT EXISTS (SELECT 1 FROM up) AND NOT EXISTS (SELECT 1 FROM coordinator_leader WHERE id = 1)`;

const CURRENT =
  "SELECT holder, instance, address, token, (extract(epoch FROM expires_at) * 1000)::bigint AS expires_at FROM coordinator_leader WHERE id = 1";

interface Row {
  holder: string;
  instance: string;
  address: string;
  token: number;
  expires_at: number;
}

const record = (r: Row): LeaderRecord => ({
  holder: r.holder,
  instance: r.instance,
  address: r.address,
  token: Number(r.token),
  expiresAt: Number(r.expires_at),
});

export class PgLeaderLease implements LeaderLease {
  /** The lease this catalog was last granted (fences its writes); undefined = never granted. */
  #granted: Fence | undefined;
  /**
   * Until when (this process's monotonic clock, performance.now ms) we surely lead: the lease was granted after we sent the
   * request, so it lasts at least until send time + ttl. 0 = not leading (never, released, or fenced).
   */
  #leadingUntil = 0;
  /** Whether this catalog ever asked for the lease (a standby has; a tool or a test has not). */
  #contender = false;
  /** The database's schema was found newer than this code's (said once). */
  #newerSchema = false;

  constructor(private readonly db: SyncBridge) {}

  tryAcquire(me: CoordinatorIdentity, ttlMs: number): LeaderRecord {
    this.#contender = true;
    const sent = performance.now(); // local durations only: a wall clock stepped back would stretch them
    // Not fenced: this is the statement that moves the lease. Returns no row when someone else holds it.
    const [got] = this.db.query<Row & { granted: boolean; schema: number }>(ACQUIRE, [
      me.id,
      me.address,
      Math.max(1, Math.round(ttlMs)),
      me.instance,
      SCHEMA_VERSION,
    ]);
    if (!got) throw new Error("the leader lease row is missing after tryAcquire");
    if (Number(got.schema) > SCHEMA_VERSION) {
      this.#leadingUntil = 0;
      // Said once (as an error, which the leadership loop logs); then a standby that never leads.
      if (!this.#newerSchema) {
        this.#newerSchema = true;
        throw new AppError(
          Status.FAILED_PRECONDITION,
          `the catalog database has schema version ${got.schema}, newer than this coordinator's ${SCHEMA_VERSION}: it will not lead (a newer coordinator migrated it); upgrade this one`,
        );
      }
    }
    const r = record(got);
    if (got.granted && holds(r, me)) {
      this.#granted = { holder: r.holder, token: r.token };
      this.#leadingUntil = sent + ttlMs;
      return r;
    }
    this.#leadingUntil = 0;
    if (!holds(r, me)) return r;
    // Not granted, yet our own row: the snapshot from before a takeover this statement waited for. The
    // row as it is now says who leads; should it still name us, it is not ours to lead on (not granted).
    const now = this.current();
    return now && !holds(now, me) ? now : { ...r, instance: "", expiresAt: 0 };
  }

  current(): LeaderRecord | undefined {
    const [r] = this.db.query<Row>(CURRENT);
    return r ? record(r) : undefined;
  }

  release(me: CoordinatorIdentity): void {
    this.#leadingUntil = 0;
    // Lapses it now (same token: the next holder's grant adds one).
    this.db.query(
      "UPDATE coordinator_leader SET expires_at = now() - interval '1 millisecond' WHERE id = 1 AND holder = $1 AND instance = $2",
      [me.id, me.instance],
    );
  }

  /** What this catalog's write transactions must find in the lease row; undefined = unfenced. */
  get fence(): Fence | undefined {
    return this.#granted;
  }

  /** A write was fenced: another coordinator leads now. */
  deposed(): void {
    this.#leadingUntil = 0;
  }

  /** The token of the lease while this catalog surely leads; undefined otherwise (or never asked). */
  get leadingToken(): number | undefined {
    return performance.now() < this.#leadingUntil ? this.#granted?.token : undefined;
  }

  get contender(): boolean {
    return this.#contender;
  }
}
