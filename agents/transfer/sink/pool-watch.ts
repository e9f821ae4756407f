/**
 * The pool-full watchdog. A write to a full pool does not fail on its own: it waits (or, with
 * FULL_TRY, fails with ENOSPC, which a slow op may only show as a timeout). So the destination checks
 * the pool before it starts (NOT_FOUND, RESOURCE_EXHAUSTED), then polls the OSD map's full flags while
 * the transfer runs and aborts it with RESOURCE_EXHAUSTED as soon as the pool fills up.
 */
import { notFound, resourceExhausted } from "../../../src/common/errors";
import type { SinkCluster } from "./ports";

export interface PoolWatch {
  /** The pool (or the cluster) is full now; false when that cannot be told. */
  isFull(): Promise<boolean>;
  stop(): void;
}

/** Refuses a pool that does not exist or is full. */
export async function checkPool(cluster: SinkCluster, pool: string, clusterName: string): Promise<void> {
  if (!(await cluster.poolExists(pool))) throw notFound(`pool ${pool} does not exist on cluster ${clusterName}`);
  if (await isPoolFull(cluster, pool)) {
    throw resourceExhausted(`pool ${pool} on cluster ${clusterName} is full (no space left)`);
  }
}

async function isPoolFull(cluster: SinkCluster, pool: string): Promise<boolean> {
  const f = await cluster.poolFullness(pool);
  return f.full || f.clusterFull;
}

/** Polls every `intervalMs` and aborts `ac` with RESOURCE_EXHAUSTED once the pool is full. */
export function watchPool(
  cluster: SinkCluster,
  pool: string,
  clusterName: string,
  intervalMs: number,
  ac: AbortController,
): PoolWatch {
  const timer = setInterval(() => {
    isPoolFull(cluster, pool).then(
      (full) => {
        if (full) ac.abort(resourceExhausted(`pool ${pool} on cluster ${clusterName} became full (no space left)`));
      },
      () => {}, // the next poll tries again; the writes themselves fail if the cluster is gone
    );
  }, intervalMs);
  return {
    isFull: () => isPoolFull(cluster, pool).catch(() => false),
    stop: () => clearInterval(timer),
  };
}
