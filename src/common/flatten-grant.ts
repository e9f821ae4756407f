/**
 * What an operation lease for AgentService.Flatten allows (scope "operation"; see ./grants.ts, where
 * this may move): this clone of this backup's snapshot, nothing else. The agent derives it from the
 * request it gets; the lab's client (src/lab/lab-leases.ts) mints it the same way.
 */
import type { FlattenRequest } from "../gen/rbdbackup/v1/agent";
import type { Fields } from "./grants";

export function flattenOperationAsks(r: FlattenRequest): Fields {
  const im = r.image;
  return {
    op: "flatten",
    backupId: r.backupId,
    backup: `${r.backupPool}/${r.backupNamespace}/${r.baseImage}`,
    target: `${im?.pool ?? ""}/${im?.namespace ?? ""}/${im?.image ?? ""}`,
  };
}
