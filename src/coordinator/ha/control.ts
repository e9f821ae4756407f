/**
 * The coordinator's part in a deployment, and the switch between its terms.
 *
 * Single (SQLite catalog, no LeaderLease): one term from start() to stop(), exactly as before HA.
 * Leader/standby (a catalog with `leadership`): the Leadership loop decides; on a grant a new Term is
 * built from the catalog, attached to the SchedulerRelay and started; on a step-down — at once — the
 * term's signal is aborted (leader-only calls in flight end), the term is stopped (no more dispatch,
 * policy runs nor verifications) and every agent session is dropped from the registry and closed, so
 * its agent is told UNAVAILABLE naming the new leader (session-service.ts) and dials it.
 */
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { splitHostPort } from "../../common/address";
import type { Logger } from "../../common/log";
import { VERSION } from "../../common/version";
import { CoordinatorRole, type CoordinatorStatus } from "../../gen/rbdbackup/v1/backup_service";
import type { Catalog } from "../catalog/catalog";
import type { CoordinatorIdentity, LeaderRecord } from "../catalog/leader-lease";
import type { HaSettings } from "../config-schema";
import type { Sessions } from "../sessions";
import { fencedCatalog, termCatalog } from "./fenced-catalog";
import { Leadership } from "./leadership";
import type { SchedulerRelay } from "./scheduler-relay";
import type { LeaderRef, LeaderView } from "./standby-gate";
import type { Term } from "./term";

export interface HaControlDeps {
  /** The catalog as opened (its `leadership`, if any, decides the role). */
  catalog: Catalog;
  sessions: Sessions;
  relay: SchedulerRelay;
  log: Logger;
  leaseMs: number;
  renewMs: number;
  /** Builds a term over `catalog` (the fenced one when leadership is on). */
  newTerm(catalog: Catalog): Term;
  /** Called after each change of term (e.g. to expose the runners); null = none (standby). */
  onTerm?(term: Term | null): void;
}

/** This coordinator's id and advertised address: ha.id / ha.advertise, else <hostname>:<port> / the listen address. */
export function identity(ha: Pick<HaSettings, "id" | "advertise">, listening: string): CoordinatorIdentity {
  return {
    id: ha.id || `${hostname()}:${splitHostPort(listening)[1]}`,
    address: ha.advertise || listening,
    instance: randomUUID(),
  };
}

export class HaControl implements LeaderView {
  /** The catalog the coordinator's parts use: a fenced write makes this coordinator step down. */
  readonly catalog: Catalog;
  #leadership: Leadership | null = null;
  #me: CoordinatorIdentity = { id: "", address: "", instance: "" };
  #term: Term | null = null;
  #termAbort: AbortController | null = null;
  /** Whether the current term is live: its catalog view (termCatalog) refuses every call once not. */
  #termLive: { live: boolean } | null = null;

  constructor(private readonly deps: HaControlDeps) {
    this.catalog = deps.catalog.leadership
      ? fencedCatalog(deps.catalog, (e) => this.#leadership?.fenced(e))
      : deps.catalog;
  }

  /** The leadership loop (null for a single coordinator, and before start). */
  get leadership(): Leadership | null {
    return this.#leadership;
  }

  get me(): CoordinatorIdentity {
    return this.#me;
  }

  get term(): Term | null {
    return this.#term;
  }

  get role(): CoordinatorRole {
    if (!this.deps.catalog.leadership) return CoordinatorRole.COORDINATOR_ROLE_SINGLE;
    return this.#leadership?.role === "leader"
      ? CoordinatorRole.COORDINATOR_ROLE_LEADER
      : CoordinatorRole.COORDINATOR_ROLE_STANDBY;
  }

  /** Single: the one term starts. Otherwise the leadership loop starts as `me` (and may lead at once). */
  start(me: CoordinatorIdentity): void {
    this.#me = me;
    const lease = this.deps.catalog.leadership;
    if (!lease) {
      this.#startTerm();
      return;
    }
    this.#leadership = new Leadership({
      lease,
      me,
      leaseMs: this.deps.leaseMs,
      renewMs: this.deps.renewMs,
      log: this.deps.log,
      onLead: (r) => this.#lead(r),
      onStepDown: (reason) => this.#endTerm(reason),
    });
    this.#leadership.start();
  }

  /** Ends the term and the loop; a leader gives its lease up. */
  stop(): void {
    this.#leadership?.stop();
    this.#endTerm("coordinator stopping");
  }

  /**
   * A single coordinator always leads (as before HA: even while draining); otherwise while a term runs
   * and its lease has not lapsed by this process's clock (Leadership.lapsed: checked when asked, not only
   * by the next round's timer).
   */
  leading(): boolean {
    return !this.deps.catalog.leadership || (this.#term !== null && !this.#leadership?.lapsed());
  }

  leader(): LeaderRef | undefined {
    if (!this.deps.catalog.leadership) return this.#me;
    return this.#leadership?.leader();
  }

  /** Undefined for a single coordinator: its one term ends only when it stops, and calls end as before. */
  termSignal(): AbortSignal | undefined {
    return this.deps.catalog.leadership ? this.#termAbort?.signal : undefined;
  }

  #lead(record: LeaderRecord): void {
    this.deps.log.info("became the leader: reloading the active jobs from the catalog", { token: record.token });
    this.#startTerm(record.token);
  }

  #startTerm(token = 0): void {
    if (this.#term) return;
    // With leadership, the term's work reaches the catalog through a view that dies with the term.
    const state = { live: true };
    this.#termLive = state;
    const term = this.deps.newTerm(
      this.deps.catalog.leadership ? termCatalog(this.catalog, () => state.live, token) : this.catalog,
    );
    this.#term = term;
    this.#termAbort = new AbortController();
    this.deps.relay.attach(term.scheduler);
    term.start();
    this.deps.onTerm?.(term);
  }

  #endTerm(reason: string): void {
    const term = this.#term;
    if (!term) return;
    this.#term = null;
    if (this.#termLive) this.#termLive.live = false;
    this.#termLive = null;
    this.deps.relay.detach();
    term.stop();
    this.#termAbort?.abort(new Error(reason));
    this.#termAbort = null;
    for (const s of this.deps.sessions.all()) {
      this.deps.sessions.remove(s);
      s.close(`the coordinator stepped down (${reason})`);
    }
    this.deps.onTerm?.(null);
  }

  /** GetCoordinatorStatus. */
  status(): CoordinatorStatus {
    const me = this.#me;
    const base = {
      id: me.id,
      address: me.address,
      role: this.role,
      catalog: this.deps.catalog.kind,
      schemaVersion: this.deps.catalog.schemaVersion,
      version: VERSION,
    };
    const lease = this.deps.catalog.leadership;
    if (!lease)
      return { ...base, leaderId: me.id, leaderAddress: me.address, fencingToken: 0, leaseExpiresAt: undefined };
    let r: LeaderRecord | undefined;
    try {
      r = lease.current();
    } catch (err) {
      this.deps.log.warn("could not read the leader lease", { err });
      r = this.#leadership?.record;
    }
    const live = r && r.holder !== "" && r.expiresAt > Date.now() ? r : undefined;
    return {
      ...base,
      leaderId: live?.holder ?? "",
      leaderAddress: live?.address ?? "",
      fencingToken: r?.token ?? 0,
      leaseExpiresAt: r ? new Date(r.expiresAt) : undefined,
    };
  }
}
