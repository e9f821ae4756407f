/**
 * The rebuild writer: commits a plan's imports, one catalog transaction per chain (so a chain is
 * never half written: a failure leaves the chains before it committed and reports which failed). An
 * id that appeared in the catalog since the plan was made is left as it is and counted present.
 */
import type { Catalog } from "../catalog/catalog";
import type { RebuildPlan } from "./plan";

export interface WriteOutcome {
  /** Ids written. */
  written: Set<string>;
  /** Ids found in the catalog at write time (another writer was faster). */
  present: Set<string>;
}

export function writePlan(catalog: Catalog, plan: RebuildPlan): WriteOutcome {
  const out: WriteOutcome = { written: new Set(), present: new Set() };
  for (const chain of plan.chains) {
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
