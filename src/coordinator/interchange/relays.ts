/**
 * The relays of running EXPORT and IMPORT jobs, by job id: the API handler opens one before its job is
 * queued, the agent holding the job's lease claims it once (ExportData / ImportData, ./agent-data.ts),
 * and the API handler closes it when its call ends. A relay not open (the API caller went away) or
 * already claimed is never handed out again.
 */
import type { BytePipe } from "./pipe";

export type Direction = "export" | "import";

export interface Relay {
  jobId: string;
  direction: Direction;
  pipe: BytePipe;
  /** The agent that claimed it ("" = not yet). */
  claimedBy: string;
  /** Called once, when the agent claims it. */
  onClaim: () => void;
}

export type Claim = { relay: Relay } | { refused: "not_open" | "claimed"; claimedBy?: string };

export class Relays {
  readonly #open = new Map<string, Relay>();

  open(jobId: string, direction: Direction, pipe: BytePipe, onClaim: () => void = () => {}): Relay {
    const r: Relay = { jobId, direction, pipe, claimedBy: "", onClaim };
    this.#open.set(jobId, r);
    return r;
  }

  /** The relay of `jobId` for `agentId`, once. */
  claim(jobId: string, direction: Direction, agentId: string): Claim {
    const r = this.#open.get(jobId);
    if (!r || r.direction !== direction) return { refused: "not_open" };
    if (r.claimedBy) return { refused: "claimed", claimedBy: r.claimedBy };
    r.claimedBy = agentId || "(insecure)";
    r.onClaim();
    return { relay: r };
  }

  close(jobId: string): void {
    this.#open.delete(jobId);
  }

  get size(): number {
    return this.#open.size;
  }
}
