/**
 * Questions to a connected agent of a cluster, asked while a request is admitted: do these pools,
 * namespaces and this image exist? What is missing fails the request at once as NOT_FOUND naming the
 * field, so a bad request never reaches the queue. Every question has a deadline and follows the
 * caller's cancellation.
 */
import { notFound } from "../../common/errors";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import type { ProbeResponse } from "../../gen/rbdbackup/v1/session";
import type { AgentSession, CallAnswer, CallCase, CallRequest, Sessions } from "../sessions";

/** How long a synchronous question to an agent may take (less when the caller cancels sooner). */
export const CALL_TIMEOUT_MS = 15_000;

/** Asks `agent` one question with the standard deadline. */
export function ask<C extends CallCase>(
  agent: AgentSession,
  request: CallRequest,
  expect: C,
  signal: AbortSignal,
): Promise<CallAnswer<C>> {
  return agent.call(request, expect, CALL_TIMEOUT_MS, signal);
}

export interface ProbeQuestion {
  pools: string[];
  namespaces?: Array<{ pool: string; namespace: string }>;
  image?: VolumeRef;
  /** The backup about to be queued will open the image: the agent keeps it open for that (ProbeRequest.keep_open). */
  keepOpen?: boolean;
  /** A missing image: whether one of its name is in the trash (ProbeRequest.check_trash). */
  checkTrash?: boolean;
}

/** The session call asking `q`. */
export function probeRequest(q: ProbeQuestion): CallRequest {
  const image = q.image ? { pool: q.image.pool, namespace: q.image.namespace, image: q.image.image } : undefined;
  const namespaces = (q.namespaces ?? []).filter((n) => n.namespace).map((n) => ({ ...n, image: "" }));
  return {
    $case: "probe",
    value: {
      pools: q.pools,
      image,
      namespaces,
      keepOpen: q.keepOpen === true && !!image,
      checkTrash: q.checkTrash === true && !!image,
    },
  };
}

/** Asks an agent of the cluster whether pools, namespaces and an image exist; NOT_FOUND for what is missing. */
export async function probe(
  sessions: Sessions,
  cluster: string,
  q: ProbeQuestion,
  signal: AbortSignal,
  field: string,
): Promise<ProbeResponse> {
  const r = await ask(sessions.any(cluster), probeRequest(q), "probe", signal);
  if (r.missingPools.length)
    throw notFound(`${field}.pool: pool ${r.missingPools.join(", ")} not found on cluster ${cluster}`);
  if (r.missingNamespaces.length) {
    throw notFound(
      `${field}.namespace: RBD namespace ${r.missingNamespaces.join(", ")} not found on cluster ${cluster} (create it with "rbd namespace create")`,
    );
  }
  return r;
}
