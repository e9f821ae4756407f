/**
 * CoordinatorAgentService: the coordinator's end of the agent session (protocol in session.proto).
 * It validates registration, keeps the session registry (sessions.ts) and hands every report to the
 * scheduler.
 */
import { ServerError, Status } from "nice-grpc-common";
import { isUuid } from "../common/ids";
import type { Logger } from "../common/log";
import type {
  AgentMessage,
  CoordinatorAgentServiceImplementation,
  CoordinatorMessage,
  Register,
} from "../gen/rbdbackup/v1/session";
import type { Catalog } from "./catalog/catalog";
import type { AgentRecord } from "./model";
import type { Scheduler } from "./scheduler";
import { AgentSession, type Sessions } from "./sessions";
import { NAME_RE } from "./validate";

const REGISTER_TIMEOUT_MS = 10_000;

function validateRegister(r: Register, catalog: Catalog): void {
  const bad = (m: string) => new ServerError(Status.INVALID_ARGUMENT, `Register: ${m}`);
  if (!/^[A-Za-z0-9._:@-]{1,128}$/.test(r.agentId)) throw bad("agent_id must be 1-128 characters of [A-Za-z0-9._:@-]");
  if (!NAME_RE.test(r.clusterName)) throw bad("cluster_name must be 1-64 characters of [A-Za-z0-9._-]");
  if (!isUuid(r.clusterFsid)) throw bad("cluster_fsid must be a lowercase UUID");
  if (!/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(r.transferAddress))
    throw bad("transfer_address must be host:port");
  if (r.capacity < 1 || r.capacity > 1024) throw bad("capacity must be in [1, 1024]");
  const other = catalog.listAgents().find((a) => a.clusterName === r.clusterName && a.clusterFsid !== r.clusterFsid);
  if (other) {
    throw new ServerError(
      Status.FAILED_PRECONDITION,
      `cluster ${r.clusterName} is known with fsid ${other.clusterFsid} (agent ${other.agentId}), but this agent's cluster has fsid ${r.clusterFsid}: give each cluster its own name`,
    );
  }
}

export function sessionService(deps: {
  catalog: Catalog;
  sessions: Sessions;
  scheduler: Scheduler;
  log: Logger;
  accepting: () => boolean;
}): CoordinatorAgentServiceImplementation {
  const { catalog, sessions, scheduler, log } = deps;
  return {
    async *session(requests: AsyncIterable<AgentMessage>, context): AsyncGenerator<CoordinatorMessage> {
      if (!deps.accepting()) throw new ServerError(Status.UNAVAILABLE, "the coordinator is shutting down");
      const it = requests[Symbol.asyncIterator]();
      let timer: NodeJS.Timeout | undefined;
      const first = await Promise.race([
        it.next(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new ServerError(Status.DEADLINE_EXCEEDED, "no Register within 10 s")),
            REGISTER_TIMEOUT_MS,
          );
        }),
      ]).finally(() => clearTimeout(timer));
      if (first.done || first.value.msg?.$case !== "register") {
        throw new ServerError(Status.INVALID_ARGUMENT, "the first message of a session must be Register");
      }
      const reg = first.value.msg.value;
      validateRegister(reg, catalog);
      const previous = catalog.listAgents().find((a) => a.agentId === reg.agentId);
      const record: AgentRecord = {
        agentId: reg.agentId,
        clusterName: reg.clusterName,
        clusterFsid: reg.clusterFsid,
        version: reg.version,
        transferAddress: reg.transferAddress,
        capacity: reg.capacity,
        defaultBackupPool: reg.defaultBackupPool,
        cephClientAddrs: reg.cephClientAddrs,
        lastSeen: Date.now(),
      };
      catalog.upsertAgent(record);
      const session = new AgentSession(record);
      sessions.add(session)?.close("replaced by a new session of the same agent");
      log.info("agent registered", {
        agent: reg.agentId,
        cluster: reg.clusterName,
        address: reg.transferAddress,
        leases: reg.leases.length,
      });
      const revoked = scheduler.onRegister(session, reg.leases, previous?.cephClientAddrs ?? "");
      session.send({
        $case: "registered",
        value: {
          heartbeatIntervalMs: scheduler.cfg.heartbeatIntervalMs,
          leaseTtlMs: scheduler.cfg.leaseTtlMs,
          revokedTokens: revoked,
        },
      });
      const onAbort = () => session.close("stream cancelled");
      context.signal.addEventListener("abort", onAbort);
      const reader = (async () => {
        for (;;) {
          const n = await it.next();
          if (n.done) break;
          const m = n.value.msg;
          if (!m) continue;
          switch (m.$case) {
            case "heartbeat": {
              record.lastSeen = Date.now();
              catalog.upsertAgent(record);
              const r = scheduler.onHeartbeat(session, m.value.leases);
              session.send({ $case: "heartbeatAck", value: { revokedTokens: r, outcomesReceived: [] } });
              break;
            }
            case "progress":
              scheduler.onProgress(session, m.value);
              break;
            case "outcome":
              scheduler.onOutcome(session, m.value);
              session.send({ $case: "heartbeatAck", value: { revokedTokens: [], outcomesReceived: [m.value.token] } });
              break;
            case "callReply":
              session.onCallReply(m.value);
              break;
            case "register":
              throw new ServerError(Status.INVALID_ARGUMENT, "Register may only be the first message of a session");
          }
        }
      })();
      reader.then(
        () => session.close("the agent ended the session"),
        (e) => {
          log.info("agent session ended", { agent: reg.agentId, reason: (e as Error).message });
          session.close((e as Error).message);
        },
      );
      try {
        for await (const m of session.out) yield m;
      } finally {
        context.signal.removeEventListener("abort", onAbort);
        session.close("session ended");
        if (sessions.remove(session)) scheduler.onDisconnect(session);
      }
    },
  };
}
