/**
 * The rebuild writer: commits a plan's imports, one catalog transaction per chain (so a chain is
 * never half written: a failure leaves the chains before it committed and reports which failed). An
 * id that appeared in the catalog since the plan was made is left as it is and counted present. The event
 * loop gets a turn between chains: with PostgreSQL each statement waits on the loop's thread, and 10,000
 * backups written in one go held it past the leader lease (its renewal never ran: a failover mid-rebuild).
 */
import type { Catalog } from "../catalog/catalog";
import type { RebuildPlan } from "./plan";

export interface WriteOutcome {
  /** Ids written. */
  written: Set<string>;
  /** Ids found in the catalog at write time (another writer was faster). */
  present: Set<string>;
}

export async function writePlan(catalog: Catalog, plan: RebuildPlan): Promise<WriteOutcome> {
  const out: WriteOutcome = { written: new Set(), present: new Set() };
  for (const [i, chain] of plan.chains.entries()) {
    if (i > 0) await new Promise((r) => setImmediate(r));
    const written = catalog.transaction(() => {
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
    for (const id of written) out.written.add(id);
  }
  return out;
}
