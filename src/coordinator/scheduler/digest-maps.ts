/**
 * SOURCE verification runs on an agent of the volume's cluster, which has no access to the backup's
 * digest map: before each attempt is leased the scheduler fetches the map (`digest_map` Call) from an
 * agent of the backup's cluster and hands it over in the lease. The map is kept in memory only, for
 * the attempt about to start (never in the catalog): a retry fetches it again.
 *
 * Level-triggered like the rest of the scheduler: `ready` answers the map when it is here, else why
 * not yet (the job's waiting reason) and starts the fetch; the answer kicks a dispatch. A map the
 * backup's cluster does not have fails the job (FAILED_PRECONDITION): nothing to compare against.
 */
import { Status } from "nice-grpc-common";
import { messageOf, statusOf } from "../../common/errors";
import { JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { JobRecord } from "../model";
import type { Located } from "./capabilities";
import type { SchedulerContext } from "./context";
import { finish } from "./transitions";
import { noAgent, type Waiting, waiting } from "./waiting";

/** How long one digest_map question may take, ms. */
export const DIGEST_MAP_CALL_TIMEOUT_MS = 60_000;

type Fetched = { kind: "map"; map: Uint8Array } | { kind: "failed"; why: string; at: number };

export class DigestMaps {
  readonly #fetched = new Map<string, Fetched>();
  readonly #inFlight = new Map<string, Promise<void>>();

  constructor(private readonly ctx: SchedulerContext) {}

  /** The map for job j's next attempt, or why it is not here yet (a fetch starts when none runs). */
  ready(j: JobRecord, b: Located): Uint8Array | Waiting {
    const got = this.#fetched.get(j.id);
    if (got?.kind === "map") return got.map;
    const from = `the digest map of backup ${b.id} from cluster ${b.location.cluster}`;
    if (this.#inFlight.has(j.id)) return waiting(`fetching ${from}`);
    if (got?.kind === "failed" && this.ctx.now() < got.at + this.ctx.cfg.backoffBaseMs) {
      return waiting(`could not fetch ${from} (${got.why}); trying again`);
    }
    const agent = this.ctx.sessions.ofCluster(b.location.cluster).sort((x, y) => x.jobs.size - y.jobs.size)[0];
    // Counted like any wait for an agent (the placement timeout fails it in the end): a SOURCE verify
    // queued for ever would hold its backup's lock, and a DELETE of the backup would wait behind it.
    if (!agent)
      return noAgent(
        b.location.cluster,
        `waiting for an agent of cluster ${b.location.cluster} (it keeps the digest map) to connect`,
      );
    const request = { backupId: b.id, pool: b.location.pool, namespace: b.location.namespace };
    const p = agent
      .call({ $case: "digestMap", value: request }, "digestMap", DIGEST_MAP_CALL_TIMEOUT_MS)
      .then((r) => {
        if (r.found) this.#fetched.set(j.id, { kind: "map", map: r.map });
        else this.#missing(j.id, b);
      })
      .catch((err) => {
        if (statusOf(err) === Status.UNIMPLEMENTED) return this.#missing(j.id, b, messageOf(err));
        this.ctx.log.warn("could not fetch a digest map", { job: j.id, backup: b.id, err });
        this.#fetched.set(j.id, { kind: "failed", why: messageOf(err), at: this.ctx.now() });
      })
      .finally(() => {
        this.#inFlight.delete(j.id);
        this.ctx.kick();
      });
    this.#inFlight.set(j.id, p);
    return waiting(`fetching ${from}`);
  }

  /** The attempt was leased (or the job ended): its map goes. */
  drop(jobId: string): void {
    this.#fetched.delete(jobId);
  }

  /** Forgets maps of jobs that are no longer active. */
  prune(active: Set<string>): void {
    for (const id of this.#fetched.keys()) if (!active.has(id)) this.#fetched.delete(id);
  }

  /** Resolves when no fetch is in flight (tests). */
  async settle(): Promise<void> {
    while (this.#inFlight.size) await Promise.all(this.#inFlight.values());
  }

  /** The backup's cluster has no map for it: the job fails, if it is still waiting. */
  #missing(jobId: string, b: Located, detail = ""): void {
    const j = this.ctx.catalog.getJob(jobId);
    if (j?.state !== JobState.JOB_STATE_QUEUED) return;
    const why =
      `backup ${b.id} has no digest map (backup.${b.id}.digests) in ${b.location.cluster}/${b.location.pool}` +
      `${detail ? ` (${detail})` : ""}: a SOURCE verification needs it; a METADATA verification checks what is stored`;
    finish(this.ctx, j, JobState.JOB_STATE_FAILED, Status.FAILED_PRECONDITION, why);
  }
}
