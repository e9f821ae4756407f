/**
 * WatchJob: a stream of a job's views until it is final. A change of state is sent at once; progress
 * at most every WATCH_MIN_INTERVAL_MS; and an event every KEEPALIVE_MS in any case, so a client can
 * tell a quiet job from a dead stream. The stream ends when the job is final or the caller cancels.
 */
import type { CallContext } from "nice-grpc-common";
import { notFound } from "../../common/errors";
import type { JobEvent, WatchJobRequest } from "../../gen/rbdbackup/v1/backup_service";
import { isFinal } from "../scheduler";
import * as v from "../validate";
import type { Admission } from "./admission";
import type { ApiDeps, ApiScheduler } from "./deps";

/** WatchJob sends progress at most this often. */
const WATCH_MIN_INTERVAL_MS = 250;
/** An event at least this often, changed or not. */
const KEEPALIVE_MS = 10_000;

export async function* watchJob(
  deps: ApiDeps,
  adm: Admission,
  req: WatchJobRequest,
  ctx: CallContext,
): AsyncGenerator<JobEvent> {
  v.uuid(req.jobId, "job_id");
  let j = deps.catalog.getJob(req.jobId);
  if (!j) throw notFound(`job ${req.jobId} not found`);
  const w = new ChangeSignal(req.jobId, deps.scheduler, ctx.signal);
  try {
    for (;;) {
      if (ctx.signal.aborted) return;
      if (w.dirty) {
        w.sent();
        j = deps.catalog.getJob(req.jobId) ?? j;
        yield { job: adm.view(j) };
        if (isFinal(j.state)) return;
      }
      if (!w.dirty) await w.next();
    }
  } finally {
    w.close();
  }
}

/** Follows the scheduler's events for one job: `dirty` when there is something to send. */
class ChangeSignal {
  dirty = true;
  #lastSent = 0;
  #wake: (() => void) | null = null;

  constructor(
    private readonly jobId: string,
    private readonly scheduler: ApiScheduler,
    private readonly signal: AbortSignal,
  ) {
    scheduler.on("job", this.#onJob);
    scheduler.on("progress", this.#onProgress);
    signal.addEventListener("abort", this.#onAbort);
  }

  sent(): void {
    this.dirty = false;
    this.#lastSent = Date.now();
  }

  /** Resolves on a change, on cancellation, or after KEEPALIVE_MS (which counts as a change). */
  next(): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.dirty = true;
        resolve();
      }, KEEPALIVE_MS);
      this.#wake = () => {
        clearTimeout(t);
        resolve();
      };
    }).finally(() => {
      this.#wake = null;
    });
  }

  close(): void {
    this.scheduler.off("job", this.#onJob);
    this.scheduler.off("progress", this.#onProgress);
    this.signal.removeEventListener("abort", this.#onAbort);
  }

  readonly #onJob = (id: string): void => {
    if (id !== this.jobId) return;
    this.dirty = true;
    this.#wake?.();
  };

  /** Progress wakes the stream no sooner than WATCH_MIN_INTERVAL_MS after the last event. */
  readonly #onProgress = (id: string): void => {
    if (id !== this.jobId) return;
    this.dirty = true;
    const due = this.#lastSent + WATCH_MIN_INTERVAL_MS - Date.now();
    if (due <= 0) this.#wake?.();
    else setTimeout(() => this.#wake?.(), due);
  };

  readonly #onAbort = (): void => this.#wake?.();
}
