/**
 * Pages a backup cluster's meta objects through one of its agents (session call scan_backups) until
 * the agent says the scan is complete. Each page has its own deadline and follows the caller's
 * cancellation; a cursor that does not move is an agent fault (INTERNAL), never an endless loop.
 */
import { AppError, Status } from "../../common/errors";
import type { ScannedBackup } from "../../gen/rbdbackup/v1/session";
import type { AgentSession } from "../sessions";

/** A page lists the pools again and reads up to a few hundred objects: allow it more than a probe. */
export const SCAN_PAGE_TIMEOUT_MS = 120_000;
export const SCAN_PAGE_ITEMS = 256;

export interface ClusterScan {
  fsid: string;
  backups: ScannedBackup[];
}

export async function scanCluster(agent: AgentSession, pools: string[], signal: AbortSignal): Promise<ClusterScan> {
  const scan: ClusterScan = { fsid: "", backups: [] };
  let cursor = "";
  for (;;) {
    const value = { pools, cursor, maxItems: SCAN_PAGE_ITEMS };
    const page = await agent.call({ $case: "scanBackups", value }, "scanBackups", SCAN_PAGE_TIMEOUT_MS, signal);
    scan.fsid = page.clusterFsid;
    scan.backups.push(...page.backups);
    if (!page.nextCursor) return scan;
    if (page.nextCursor === cursor)
      throw new AppError(Status.INTERNAL, `agent ${agent.agentId} returned the same scan cursor twice`);
    cursor = page.nextCursor;
  }
}
