/**
 * CoordinatorAgentService: the coordinator's end of the agent session (protocol in session.proto).
 * It validates registration, keeps the session registry (sessions.ts) and hands every report to the
 * scheduler.
 *
 * Who may register (the interceptor already admitted only agent certificates): the agent id and
 * cluster of the Register must be the certificate's; the cluster's fsid is pinned by its first
 * registration (catalog) and another fsid under that name is refused; a second live session for one
 * agent id is refused (ALREADY_EXISTS) — the first keeps its leases; the agent retries with backoff once
 * the old session ended. Every registration, accepted or refused, is audited.
 */
import { type CallContext, ServerError, Status } from "nice-grpc-common";
import { isClientAddr } from "../common/address";
import { toServerError } from "../common/errors";
import { AGENT_ID_RE, AGENT_ID_RULE } from "../common/identity";
import { isUuid } from "../common/ids";
import type { Logger } from "../common/log";
import type {
  AgentMessage,
  CoordinatorAgentServiceImplementation,
  CoordinatorMessage,
  Register,
} from "../gen/rbdbackup/v1/session";
import type { Audit } from "./audit";
import { type Caller, callerName, callerOf, checkRegistration, type Refusal, SESSION_SERVICE } from "./authz";
import type { Catalog } from "./catalog/catalog";
import { type LeaderView, standbyError } from "./ha/standby-gate";
import { agentDataService } from "./interchange/agent-data";
import type { Relays } from "./interchange/relays";
import type { AgentRecord } from "./model";
import type { Scheduler } from "./scheduler";
import { AgentSession, type Sessions } from "./sessions";
import { NAME_RE } from "./validate";

const REGISTER_TIMEOUT_MS = 10_000;

const REGISTER_METHOD = `/${SESSION_SERVICE}/Session`;

function validateRegister(r: Register): void {
  const bad = (m: string) => new ServerError(Status.INVALID_ARGUMENT, `Register: ${m}`);
  if (!AGENT_ID_RE.test(r.agentId)) throw bad(`agent_id must be ${AGENT_ID_RULE}`);
  if (!NAME_RE.test(r.clusterName)) throw bad("cluster_name must be 1-64 characters of [A-Za-z0-9._-]");
  if (!isUuid(r.clusterFsid)) throw bad("cluster_fsid must be a lowercase UUID");
  if (!/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(r.transferAddress))
    throw bad("transfer_address must be host:port");
  if (r.capacity < 1 || r.capacity > 1024) throw bad("capacity must be in [1, 1024]");
  // Another agent blocklists these when this one dies holding a lease: never a whole host ("IP:0/0").
  if (r.cephClientAddrs && !isClientAddr(r.cephClientAddrs))
    throw bad(
      "ceph_client_addrs must be this agent's Ceph client address as librados reports it (IP:PORT/NONCE, a nonzero nonce)",
    );
  if (r.features.length > 64 || r.features.some((f) => !/^[a-z0-9_]{1,64}$/.test(f)))
    throw bad("features must be at most 64 names of 1-64 characters of [a-z0-9_]");
}

/** Whether this registration may proceed: its identity, its cluster's fsid, no other live session. */
function admitRegister(
  r: Register,
  caller: Caller,
  catalog: Catalog,
  sessions: Sessions,
  /** The catalog's record of this agent id, if any. */
  known: AgentRecord | undefined,
): Refusal | null {
  const mismatch = checkRegistration(caller, r.agentId, r.clusterName);
  if (mismatch) return mismatch;
  const fsidMismatch = (pin: { fsid: string; pinnedBy?: string }): Refusal => ({
    code: Status.FAILED_PRECONDITION,
    reason: "fsid_mismatch",
    message: `cluster ${r.clusterName} is pinned to fsid ${pin.fsid}${pin.pinnedBy ? ` (first registered by agent ${pin.pinnedBy})` : ""}, but agent ${r.agentId}'s cluster has fsid ${r.clusterFsid}: give each cluster its own name`,
  });
  // The pin as it is (read only: a registration refused below must not pin a new cluster name).
  const pinned = catalog.clusterPins().find((p) => p.name === r.clusterName);
  if (pinned && pinned.fsid !== r.clusterFsid) return fsidMismatch(pinned);
  // Agent ids are the catalog's key (jobs, leases, sessions): one id serves one cluster. An agent of
  // another cluster registering under a known id would take over its record — its running jobs failed,
  // its Ceph client queued for blocklisting, the real agent locked out while the impostor's session lives.
  if (known && known.clusterName !== r.clusterName)
    return {
      code: Status.FAILED_PRECONDITION,
      reason: "agent_id_taken",
      message: `agent id ${r.agentId} belongs to cluster ${known.clusterName}; the agent of cluster ${r.clusterName} needs an id of its own (agent.id in its configuration)`,
    };
  if (sessions.get(r.agentId))
    return {
      code: Status.ALREADY_EXISTS,
      reason: "duplicate_session",
      message: `agent ${r.agentId} already has a live session; retry after it ends`,
    };
  // Last: pinning is the one step that writes (a new cluster name's first fsid), so a registration
  // refused for any other reason pins nothing.
  const pin = catalog.pinClusterFsid(r.clusterName, r.clusterFsid, r.agentId);
  if (pin.fsid !== r.clusterFsid) return fsidMismatch(pin);
  return null;
}

/** Writes the agent's last heartbeat time when the catalog's copy is older (a closed catalog is only logged). */
function saveLastSeen(catalog: Catalog, session: AgentSession, log: Logger): void {
  if (!session.unsaved()) return;
  try {
    catalog.upsertAgent(session.info);
  } catch (err) {
    log.warn("could not record the agent's last heartbeat", { agent: session.agentId, err });
  }
}

/** The part of the scheduler the sessions report to (the Scheduler, or the coordinator's ha/SchedulerRelay). */
export type SessionScheduler = Pick<
  Scheduler,
  "cfg" | "onRegister" | "onHeartbeat" | "onProgress" | "onOutcome" | "onDisconnect"
>;

export function sessionService(deps: {
  catalog: Catalog;
  sessions: Sessions;
  scheduler: SessionScheduler;
  /** Several coordinators: sessions only on the leader (absent = always leading). */
  leadership?: LeaderView;
  log: Logger;
  audit: Audit;
  accepting: () => boolean;
  /** The relays ExportBackup/ImportBackup opened (shared with the API). */
  relays: Relays;
}): CoordinatorAgentServiceImplementation {
  const { catalog, sessions, scheduler, log, audit } = deps;
  return {
    // EXPORT/IMPORT data: only the agent holding the job's live lease (interchange/agent-data.ts).
    ...agentDataService({ catalog, relays: deps.relays, audit, log }),
    // Every failure reaches the agent as a status (a catalog error as UNAVAILABLE, not UNKNOWN).
    async *session(requests: AsyncIterable<AgentMessage>, context): AsyncGenerator<CoordinatorMessage> {
      try {
        yield* session(requests, context);
      } catch (e) {
        throw toServerError(e);
      }
    },
  };

  async function* session(
    requests: AsyncIterable<AgentMessage>,
    context: CallContext,
  ): AsyncGenerator<CoordinatorMessage> {
    if (!deps.accepting()) throw new ServerError(Status.UNAVAILABLE, "the coordinator is shutting down");
    const ha = deps.leadership;
    if (ha && !ha.leading()) throw standbyError(ha, context.trailer);
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
    const caller = callerOf(context.metadata);
    const entry = {
      identity: callerName(caller),
      method: REGISTER_METHOD,
      target: `agent ${reg.agentId} of cluster ${reg.clusterName}`,
    };
    try {
      validateRegister(reg);
    } catch (e) {
      audit.record({ ...entry, result: Status[(e as ServerError).code], message: (e as ServerError).details });
      throw e;
    }
    // Again after the wait for Register (up to 10 s): admission writes (the cluster's fsid pinned), and
    // a coordinator that stepped down meanwhile would answer the agent with a fenced write's UNAVAILABLE
    // instead of sending it to the leader.
    if (ha && !ha.leading()) throw standbyError(ha, context.trailer);
    // The catalog's record of this agent id: judged here, and what the registration replaces.
    const previous = catalog.listAgents().find((a) => a.agentId === reg.agentId);
    const refusal = caller
      ? admitRegister(reg, caller, catalog, sessions, previous)
      : ({ code: Status.UNAUTHENTICATED, reason: "no_credential", message: "no caller" } as Refusal);
    if (refusal) {
      audit.refused(SESSION_SERVICE, {
        ...entry,
        result: Status[refusal.code],
        reason: refusal.reason,
        message: refusal.message,
      });
      throw new ServerError(refusal.code, refusal.message);
    }
    if (ha && !ha.leading()) throw standbyError(ha, context.trailer);
    /** Aborted when this coordinator steps down: the session then ends UNAVAILABLE naming the new leader. */
    const term = ha?.termSignal();
    audit.record({ ...entry, result: "OK" });
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
    const session = new AgentSession(record, reg.features);
    if (caller?.via === "certificate") {
      session.certFingerprint = caller.fingerprint ?? "";
      session.certFingerprints = caller.fingerprints ?? (caller.fingerprint ? [caller.fingerprint] : []);
    }
    sessions.add(session);
    log.info("agent registered", {
      agent: reg.agentId,
      cluster: reg.clusterName,
      address: reg.transferAddress,
      leases: reg.leases.length,
      features: reg.features,
    });
    const revoked = scheduler.onRegister(session, reg.leases, previous?.cephClientAddrs ?? "");
    session.send({
      $case: "registered",
      value: {
        heartbeatIntervalMs: scheduler.cfg.heartbeatIntervalMs,
        // An agent holding nothing beats this rarely: its beats would renew nothing (session.proto).
        idleHeartbeatIntervalMs: Math.max(scheduler.cfg.idleHeartbeatIntervalMs, scheduler.cfg.heartbeatIntervalMs),
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
            // last_seen: in memory on each beat, written at most every LAST_SEEN_PERSIST_MS (and at disconnect).
            if (session.seen(Date.now())) catalog.upsertAgent(record);
            session.draining = m.value.draining;
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
    /** Why the reader stopped, when it failed (a catalog error, a second Register): the call's status. */
    let failed: unknown;
    reader.then(
      () => session.close("the agent ended the session"),
      (e) => {
        failed = e;
        log.info("agent session ended", { agent: reg.agentId, reason: (e as Error).message });
        session.close((e as Error).message);
      },
    );
    try {
      for await (const m of session.out) yield m;
      if (ha && term?.aborted) throw standbyError(ha, context.trailer, "this coordinator stepped down");
      if (failed !== undefined && !context.signal.aborted) throw failed; // a status by the wrapper above
    } finally {
      context.signal.removeEventListener("abort", onAbort);
      session.close("session ended");
      if (sessions.remove(session)) {
        saveLastSeen(catalog, session, log);
        scheduler.onDisconnect(session);
      }
    }
  }
}
