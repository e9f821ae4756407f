/**
 * The rebuild writer: commits a plan's imports, one catalog transaction per chain (so a chain is
 * never half written). A failure — a chain's transaction refused, the call cancelled or the leadership
 * lost between chains — leaves the chains before it committed and says so: how many chains and backups
 * were written, which chain failed, and that a second run finds what was written present. An id that
 * appeared in the catalog since the plan was made is left as it is and counted present. The event loop
 * gets a turn between chains: with PostgreSQL each statement waits on the loop's thread, and 10,000
 * backups written in one go held it past the leader lease (its renewal never ran: a failover mid-rebuild).
 */
import { AppError, messageOf, Status, statusOf } from "../../common/errors";
import type { Catalog } from "../catalog/catalog";
import type { RebuildPlan } from "./plan";

export interface WriteOutcome {
  /** Ids written. */
  written: Set<string>;
  /** Ids found in the catalog at write time (another writer was faster). */
  present: Set<string>;
}

export async function writePlan(catalog: Catalog, plan: RebuildPlan, signal?: AbortSignal): Promise<WriteOutcome> {
  const out: WriteOutcome = { written: new Set(), present: new Set() };
  const n = plan.chains.length;
  /** The failure, with what is already written (a generic "nothing was changed" would be false). */
  const stopped = (i: number, status: Status, why: string, cause?: unknown) =>
    new AppError(
      status,
      `the catalog rebuild wrote ${i} of ${n} chains (${out.written.size} backups) before it stopped: ${why}; run it again — what was written counts as present`,
      cause === undefined ? undefined : { cause },
    );
  for (const [i, chain] of plan.chains.entries()) {
    if (i > 0) await new Promise((r) => setImmediate(r));
    if (signal?.aborted)
      throw stopped(i, Status.CANCELLED, "the call was cancelled (or this coordinator stepped down)");
    let written: string[];
    try {
      written = catalog.transaction(() => {
        const ids: string[] = [];
        for (const b of chain.backups) {
          if (catalog.getBackup(b.id)) {
            out.present.add(b.id);
            continue;
          }
          catalog.insertBackup(b);
          ids.push(b.id);
        }
        return ids;
      });
    } catch (e) {
      const base = chain.backups[0]?.baseImage ?? "?";
      throw stopped(i, statusOf(e), `the chain of base image ${base} could not be written (${messageOf(e)})`, e);
    }
    for (const id of written) out.written.add(id);
  }
  return out;
}
