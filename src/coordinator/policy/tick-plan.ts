/**
 * Which protection records a runner tick must read. A full pass (reconcile every record of a policy
 * with its selection, settle every record's last run) is needed only when the policy's selection may
 * have changed: the first tick, a changed selector, a new listing of its pool, `changed()` from the API
 * — and, as a safety net, every FULL_PASS_MS. Otherwise the tick reads only the records whose run is
 * due (the catalog's next_run_at index) and those whose last run has not been settled yet (kept here,
 * with the run's job id: while that job is still queued or running there is nothing to settle, and the
 * tick reads neither the record nor the job's row), so 1,000 protected volumes cost a tick next to
 * nothing while nothing is due.
 */
import type { Policy } from "../../gen/rbdbackup/v1/policy";

/** A full pass of each policy at least this often, whatever else happens. */
export const FULL_PASS_MS = 60_000;

interface Seen {
  selector: string;
  images: string[] | null;
  at: number;
}

/**
 * A policy's selector as text, by Policy object: the store hands out the same object while the policy's
 * document is unchanged (and policies are read-only), and a selector of 100 explicit volumes costs more
 * to serialise each tick than the rest of an idle tick.
 */
const selectorText = new WeakMap<Policy, string>();

function selectorOf(p: Policy): string {
  let s = selectorText.get(p);
  if (s === undefined) {
    s = JSON.stringify(p.selector ?? {});
    selectorText.set(p, s);
  }
  return s;
}

/** The key of a protection record in the runner's maps: "<policy>\0<volume key>". */
export function recordKey(policy: string, volumeKey: string): string {
  return `${policy}\0${volumeKey}`;
}

/** The prefix every record key of `policy` starts with. */
export function recordKeyPrefix(policy: string): string {
  return `${policy}\0`;
}

export class TickPlan {
  readonly #seen = new Map<string, Seen>();
  /** "policy\0volume key" of records whose last run is not settled yet → that run's job id ("" unknown). */
  readonly #pending = new Map<string, string>();

  /**
   * Whether policy `p`, whose pool listing is `images` (the Discovery's array, compared by identity;
   * null when none), needs a full pass at `now`. Records the pass as done when it does.
   */
  needsFullPass(p: Policy, images: string[] | null, now: number): boolean {
    const selector = selectorOf(p);
    const s = this.#seen.get(p.name);
    if (s && s.selector === selector && s.images === images && now - s.at < FULL_PASS_MS && now >= s.at) return false;
    this.#seen.set(p.name, { selector, images, at: now });
    return true;
  }

  /** When the next full pass of a policy falls due (Infinity: no policy seen). */
  nextFullPassAt(): number {
    let at = Number.POSITIVE_INFINITY;
    for (const s of this.#seen.values()) at = Math.min(at, s.at + FULL_PASS_MS);
    return at;
  }

  /** Next tick makes a full pass of `policy` (changed through the API, or deleted). */
  forget(policy: string): void {
    this.#seen.delete(policy);
    for (const k of this.#pending.keys()) if (k.startsWith(recordKeyPrefix(policy))) this.#pending.delete(k);
  }

  /**
   * The record (policy, volume key) has a run that is not settled yet (true; `jobId` its job when known)
   * or none (false).
   */
  pending(policy: string, key: string, yes: boolean, jobId = ""): void {
    if (yes) this.#pending.set(recordKey(policy, key), jobId);
    else this.#pending.delete(recordKey(policy, key));
  }

  /** The records with a run not settled yet, of the policies `of` accepts, with the run's job id ("" unknown). */
  pendingOf(of: (policy: string) => boolean): Array<{ policy: string; key: string; jobId: string }> {
    const out: Array<{ policy: string; key: string; jobId: string }> = [];
    for (const [k, jobId] of this.#pending) {
      const i = k.indexOf("\0");
      const policy = k.slice(0, i);
      if (of(policy)) out.push({ policy, key: k.slice(i + 1), jobId });
    }
    return out;
  }
}
