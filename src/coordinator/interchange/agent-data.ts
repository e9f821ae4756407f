/**
 * CoordinatorAgentService.ExportData and ImportData: the data of an EXPORT or IMPORT job, between the
 * agent holding its lease and the relay the API handler opened (./relays.ts).
 *
 * Who may call: only the agent whose certificate's agent id holds the job's live lease, naming its
 * token (insecure mode, tests only: whoever names the job's current token). Anyone else is refused
 * PERMISSION_DENIED (audited and counted, reason no_lease) before a byte is relayed. A relay is claimed
 * once: a second call for the same lease is ALREADY_EXISTS; a relay whose API caller has gone is
 * CANCELLED. ExportData's first message must arrive within FIRST_MESSAGE_TIMEOUT_MS.
 */
import { Status } from "nice-grpc-common";
import { AppError, toServerError } from "../../common/errors";
import type { Logger } from "../../common/log";
import { JobKind, JobState } from "../../gen/rbdbackup/v1/backup_service";
import type {
  CoordinatorAgentServiceImplementation,
  ExportDataAck,
  ExportDataMessage,
  ImportDataChunk,
  ImportDataRequest,
} from "../../gen/rbdbackup/v1/session";
import type { Audit } from "../audit";
import { type Caller, callerName, callerOf, SESSION_SERVICE } from "../authz";
import type { Catalog } from "../catalog/catalog";
import { sameToken } from "../model";
import type { Direction, Relay, Relays } from "./relays";

export const FIRST_MESSAGE_TIMEOUT_MS = 10_000;

export interface AgentDataDeps {
  catalog: Catalog;
  relays: Relays;
  audit: Audit;
  log: Logger;
}

type Handlers = Pick<CoordinatorAgentServiceImplementation, "exportData" | "importData">;

const KIND: Record<Direction, JobKind> = { export: JobKind.JOB_KIND_EXPORT, import: JobKind.JOB_KIND_IMPORT };
const METHOD: Record<Direction, string> = {
  export: `/${SESSION_SERVICE}/ExportData`,
  import: `/${SESSION_SERVICE}/ImportData`,
};

/** Why `caller` may not have the data of job `jobId` with `token`, or null when it may. */
export function leaseRefusal(
  catalog: Catalog,
  caller: Caller | null,
  direction: Direction,
  jobId: string,
  token: string,
): string | null {
  const who =
    caller?.via === "certificate" && caller.identity?.kind === "agent" ? `agent ${caller.identity.agentId}` : null;
  if (!caller || (caller.via !== "insecure" && !who)) return "only an agent's certificate may carry a job's data";
  const j = jobId ? catalog.getJob(jobId) : undefined;
  const what = `${direction.toUpperCase()} job ${jobId || "(none)"}`;
  if (!j || j.kind !== KIND[direction]) return `there is no ${what}`;
  const lease = j.lease;
  if (j.state !== JobState.JOB_STATE_RUNNING || !lease || !token || !sameToken(lease.token, token)) {
    return `${who ?? "the caller"} holds no live lease of ${what} with that token`;
  }
  if (who && caller.via === "certificate" && caller.identity?.kind === "agent") {
    if (caller.identity.agentId !== lease.agentId)
      return `the lease of ${what} is agent ${lease.agentId}'s, not ${who}'s`;
    // The certificate's cluster too: an id is unique in the catalog, not across what the CA may sign.
    if (j.execCluster && caller.identity.cluster !== j.execCluster)
      return `${what} runs on cluster ${j.execCluster}, and ${who}'s certificate is of cluster ${caller.identity.cluster}`;
  }
  return null;
}

export function agentDataService(deps: AgentDataDeps): Handlers {
  const { catalog, relays, audit, log } = deps;

  /** The relay of the lease named, for this caller; audited either way. Throws a ServerError when refused. */
  function admit(direction: Direction, md: Parameters<typeof callerOf>[0], jobId: string, token: string): Relay {
    const caller = callerOf(md);
    const entry = { identity: callerName(caller), method: METHOD[direction], target: `job=${jobId}` };
    const why = leaseRefusal(catalog, caller, direction, jobId, token);
    if (why) {
      const message = `${why}; only the agent holding the job's live lease may carry its data`;
      audit.refused(SESSION_SERVICE, { ...entry, result: "PERMISSION_DENIED", reason: "no_lease", message });
      throw toServerError(new AppError(Status.PERMISSION_DENIED, message));
    }
    const agentId = caller?.via === "certificate" && caller.identity?.kind === "agent" ? caller.identity.agentId : "";
    const c = relays.claim(jobId, direction, agentId);
    if ("refused" in c) {
      const e =
        c.refused === "claimed"
          ? new AppError(Status.ALREADY_EXISTS, `the data of job ${jobId} is already carried by ${c.claimedBy}`)
          : new AppError(Status.CANCELLED, `job ${jobId}: the API caller is gone; nothing to relay`);
      audit.record({ ...entry, result: Status[e.status] ?? String(e.status), message: e.message });
      throw toServerError(e);
    }
    audit.record({ ...entry, result: "OK" });
    log.info(`${direction} data connected`, { job: jobId, agent: c.relay.claimedBy });
    return c.relay;
  }

  return {
    async exportData(requests: AsyncIterable<ExportDataMessage>, context): Promise<ExportDataAck> {
      const it = requests[Symbol.asyncIterator]();
      const first = await firstMessage(it);
      if (!first) throw toServerError(new AppError(Status.INVALID_ARGUMENT, "ExportData: no first message"));
      const relay = admit("export", context.metadata, first.jobId, first.token);
      const pipe = relay.pipe;
      // The agent's call cancelled wakes a write waiting for room; the relay failed on the API side (the
      // caller gone, the idle watch) ends the wait for the agent's next message.
      const onAbort = () =>
        pipe.fail(new AppError(Status.UNAVAILABLE, `the agent's export stream of job ${relay.jobId} broke`));
      context.signal.addEventListener("abort", onAbort);
      try {
        if (first.data.length) await pipe.write(first.data);
        for (;;) {
          const n = await pipe.orFailure(it.next());
          if (n.done) break;
          await pipe.write(n.value.data);
        }
        pipe.end();
        return { bytesReceived: pipe.written };
      } catch (e) {
        // The agent's stream broke (or the API side failed the pipe first: its error wins).
        pipe.fail(
          new AppError(Status.UNAVAILABLE, `the agent's export stream of job ${relay.jobId} broke`, { cause: e }),
        );
        throw toServerError(e);
      } finally {
        context.signal.removeEventListener("abort", onAbort);
      }
    },

    async *importData(req: ImportDataRequest, context): AsyncGenerator<ImportDataChunk> {
      const relay = admit("import", context.metadata, req.jobId, req.token);
      const pipe = relay.pipe;
      const onAbort = () =>
        pipe.fail(new AppError(Status.UNAVAILABLE, `the agent's import stream of job ${relay.jobId} broke`));
      context.signal.addEventListener("abort", onAbort);
      try {
        for await (const data of pipe.read()) yield { data };
      } catch (e) {
        throw toServerError(e);
      } finally {
        context.signal.removeEventListener("abort", onAbort);
      }
    },
  };
}

/** The stream's first message within FIRST_MESSAGE_TIMEOUT_MS; undefined when the stream ended. */
async function firstMessage(it: AsyncIterator<ExportDataMessage>): Promise<ExportDataMessage | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(toServerError(new AppError(Status.DEADLINE_EXCEEDED, "ExportData: no first message within 10 s"))),
      FIRST_MESSAGE_TIMEOUT_MS,
    );
  });
  try {
    const n = await Promise.race([it.next(), timeout]);
    return n.done ? undefined : n.value;
  } finally {
    clearTimeout(timer);
  }
}
