/**
 * Agents and clusters: ListAgents (catalog + live sessions; a connected agent's last_seen is its session's,
 * the catalog's copy is written only every LAST_SEEN_PERSIST_MS), ForgetAgent (a retired agent's record
 * out of the catalog), CheckCluster (asked of an agent).
 */
import type { CallContext } from "nice-grpc-common";
import { failedPrecondition, invalidArgument, notFound } from "../../common/errors";
import { AGENT_ID_RE, AGENT_ID_RULE } from "../../common/identity";
import type { ClusterCheckResponse } from "../../gen/rbdbackup/v1/agent";
import type {
  AgentStatus,
  CheckClusterRequest,
  ForgetAgentRequest,
  ForgetAgentResponse,
  ListAgentsResponse,
} from "../../gen/rbdbackup/v1/backup_service";
import { ask } from "../jobs/probes";
import type { AgentRecord } from "../model";
import * as v from "../validate";
import type { Admission } from "./admission";
import type { ApiDeps } from "./deps";

function agentStatus(deps: ApiDeps, a: AgentRecord, running: ReadonlyMap<string, number>): AgentStatus {
  const live = deps.sessions.get(a.agentId);
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
}

export function listAgents(deps: ApiDeps): ListAgentsResponse {
  const running = deps.scheduler.runningCounts(deps.catalog.activeJobs()).byAgent;
  return { agents: deps.catalog.listAgents().map((a) => agentStatus(deps, a, running)) };
}

/**
 * ForgetAgent: a retired agent's record leaves the catalog. Not while it is connected (it would write
 * itself back at its next heartbeat, and its work would lose its agent) nor while a job's lease names it
 * (the lease's expiry blocklists the agent's Ceph client by the addresses its record keeps).
 */
export function forgetAgent(deps: ApiDeps, req: ForgetAgentRequest): ForgetAgentResponse {
  v.clusterName(req.cluster, "cluster");
  // Any id an agent may register with (an insecure-mode one may hold ':' or '@'), not only a certificate's.
  if (!AGENT_ID_RE.test(req.agentId))
    throw invalidArgument(`agent_id "${req.agentId.slice(0, 80)}" must be ${AGENT_ID_RULE}`);
  const { catalog, sessions } = deps;
  const a = catalog.listAgents().find((x) => x.agentId === req.agentId);
  if (!a || a.clusterName !== req.cluster) {
    const other = a ? ` (agent ${a.agentId} is of cluster ${a.clusterName})` : "";
    throw notFound(`no agent ${req.agentId} of cluster ${req.cluster} is known${other}`);
  }
  if (sessions.get(a.agentId))
    throw failedPrecondition(`agent ${a.agentId} is connected: stop it first, then forget it`);
  const leased = catalog.activeJobs().filter((j) => j.lease?.agentId === a.agentId);
  if (leased.length > 0)
    throw failedPrecondition(
      `agent ${a.agentId} holds the lease of job ${leased.map((j) => j.id).join(", ")}: forget it once the lease has expired (its Ceph client is blocklisted then)`,
    );
  const running = deps.scheduler.runningCounts(catalog.activeJobs()).byAgent;
  const status = agentStatus(deps, a, running);
  if (!catalog.removeAgent(a.agentId)) throw notFound(`no agent ${req.agentId} of cluster ${req.cluster} is known`);
  deps.log.info("agent forgotten", { agent: a.agentId, cluster: a.clusterName });
  return { agent: status };
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
