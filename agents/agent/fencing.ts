/**
 * Fencing before a leased attempt touches a volume: the coordinator names the Ceph clients of agents
 * that died holding an earlier attempt of the job; they are blocklisted (never our own client), so the
 * exclusive lock and watches they held go now instead of when their watch times out (Nomad + Ceph
 * blocklist). A failure is only logged: it delays the attempt's locks, it does not fail the attempt.
 */
import { isClientAddr } from "../../src/common/address";
import { messageOf } from "../../src/common/errors";
import type { Logger } from "../../src/common/log";
import type { Lease } from "../../src/gen/rbdbackup/v1/session";
import type { Cluster } from "../ceph";

/** What fencing needs of the cluster connection. */
export type FencingCluster = Pick<Cluster, "addrs" | "blocklistAdd">;

/** Default blocklist time when the lease names none (seconds). */
const DEFAULT_FENCE_SECONDS = 3600;

export async function fenceEarlierHolders(
  cluster: FencingCluster,
  lease: Pick<Lease, "jobId" | "fenceClientAddrs" | "fenceSeconds">,
  log: Logger,
): Promise<void> {
  const own = cluster.addrs();
  for (const addr of lease.fenceClientAddrs) {
    if (addr === own) continue;
    if (!isClientAddr(addr)) {
      // Not one client instance (e.g. "IP:0/0", every client of a host): never blocklisted from here.
      log.warn("not fencing an address that names no single Ceph client", { job: lease.jobId, addr });
      continue;
    }
    try {
      await cluster.blocklistAdd(addr, lease.fenceSeconds || DEFAULT_FENCE_SECONDS);
      log.info("fenced the Ceph client of an agent that died holding this job", { job: lease.jobId, addr });
    } catch (e) {
      log.warn("could not fence a dead agent's Ceph client; its locks go when its watch times out", {
        job: lease.jobId,
        addr,
        error: messageOf(e),
      });
    }
  }
}
