/**
 * Agents and clusters: ListAgents (catalog + live sessions; a connected agent's last_seen is its session's,
 * the catalog's copy is written only every LAST_SEEN_PERSIST_MS), CheckCluster (asked of an agent).
 */
import type { CallContext } from "nice-grpc-common";
import type { ClusterCheckResponse } from "../../gen/rbdbackup/v1/agent";
import type { CheckClusterRequest, ListAgentsResponse } from "../../gen/rbdbackup/v1/backup_service";
import { ask } from "../jobs/probes";
import * as v from "../validate";
import type { Admission } from "./admission";
import type { ApiDeps } from "./deps";

export function listAgents(deps: ApiDeps): ListAgentsResponse {
  const { catalog, sessions, scheduler } = deps;
  const running = scheduler.runningCounts(catalog.activeJobs()).byAgent;
  return {
    agents: catalog.listAgents().map((a) => {
      const live = sessions.get(a.agentId);
      return {
        agentId: a.agentId,
        clusterName: a.clusterName,
        clusterFsid: a.clusterFsid,
        version: a.version,
        transferAddress: a.transferAddress,
        connected: live !== undefined,
        capacity: a.capacity,
        runningJobs: running.get(a.agentId) ?? 0,
        lastSeen: new Date(live ? Math.max(live.info.lastSeen, a.lastSeen) : a.lastSeen),
        defaultBackupPool: a.defaultBackupPool,
      };
    }),
  };
}

export async function checkCluster(
  deps: ApiDeps,
  adm: Admission,
  req: CheckClusterRequest,
  ctx: CallContext,
): Promise<ClusterCheckResponse> {
  v.clusterName(req.cluster, "cluster");
  v.rbdName(req.backupPool, "backup_pool", { allowEmpty: true });
  adm.knownCluster(req.cluster, "cluster");
  const value = { backupPool: req.backupPool };
  return ask(deps.sessions.any(req.cluster), { $case: "check", value }, "check", ctx.signal);
}
