/** Why a queued job does not run yet (the dispatcher's placement and what it asks, e.g. digest-maps.ts). */
export interface Waiting {
  reason: string;
  /** It waits for an agent of this cluster to connect: scheduler.placementTimeoutMs fails it in the end. */
  noAgentOf?: string;
}

export const waiting = (reason: string): Waiting => ({ reason });

export const noAgent = (
  cluster: string,
  reason = `waiting for an agent of cluster ${cluster} to connect`,
): Waiting => ({
  reason,
  noAgentOf: cluster,
});
