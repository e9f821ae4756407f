/**
 * Handlers of an agent: AgentService (operations, on the grpc-js server; direct mutating calls only
 * under the coordinator's lease, authz.ts) and TransferService.ListChains (on the data-plane server,
 * agents/transfer/data-plane-server.ts).
 */

import type { CapabilityVerifier } from "../../src/common/capability";
import { toServerError } from "../../src/common/errors";
import {
  backupOperationAsks,
  deleteOperationAsks,
  type Fields,
  flattenOperationAsks,
  restoreOperationAsks,
} from "../../src/common/grants";
import type { Logger } from "../../src/common/log";
import type { AgentServiceImplementation } from "../../src/gen/rbdbackup/v1/agent";
import type { ListChainsRequest, ListChainsResponse } from "../../src/gen/rbdbackup/v1/transfer";
import { type Cluster, libraryVersions } from "../ceph";
import { listChains } from "../engine/snapshots";
import { type AuthzAudit, messageOf, resultOf } from "../transfer/authz-audit";
import { validName } from "../transfer/protocol";
import { chainsSettled, EARLIER_TRANSFER_WAIT_MS } from "../transfer/sink";
import { authorizeListChains, type Here, type TransferCaller } from "../transfer/transfer-authz";
import { describeAsks, LeaseCheck } from "./authz";
import { type AgentOperations, handle } from "./operations";

export { VERSION } from "../../src/common/version";

import { VERSION } from "../../src/common/version";

/**
 * TransferService.ListChains as the data-plane server calls it: the backup chains of one volume in a
 * pool of this cluster (validated names; the same listing the same-cluster shortcut uses), for a caller
 * whose capability is a backup's of that volume into that pool (transfer-authz.ts authorizeListChains).
 */
export function listChainsService(
  cluster: Cluster,
  here: Here,
  log: Logger,
  authz: { verifier: CapabilityVerifier | null; audit?: AuthzAudit },
): (req: ListChainsRequest, signal: AbortSignal, caller: TransferCaller) => Promise<ListChainsResponse> {
  return (req, signal, caller) =>
    handle(log, "ListChains", async () => {
      // The capability first: a caller without the right one learns nothing, not even which names are valid.
      // It sees only the chains its capability names (those it may extend): another volume of the same
      // image name backed up into this pool (another cluster's, another pool's) stays unseen.
      const visible = authorizeListChains(authz.verifier, req, caller, here, authz.audit);
      validName(req.pool, "pool");
      validName(req.namespace, "namespace", { allowEmpty: true });
      validName(req.volumeImage, "volume_image");
      // A transfer of this volume still writing here (its commit, its cleanup) ends first (bounded, inside
      // the caller's 30 s deadline): a source stopped while it waited for the answer asks whether its
      // backup committed, and must not be told "no" by a commit still under way.
      await chainsSettled(req.pool, req.namespace, req.volumeImage, EARLIER_TRANSFER_WAIT_MS, signal);
      const chains = await listChains(cluster, req.pool, req.namespace, req.volumeImage);
      return {
        chains: visible ? chains.filter((c) => visible.has(c.baseImage)) : chains,
        clusterFsid: here.fsid,
      };
    });
}

/**
 * A direct mutating call runs only under its lease (authz.ts); refused before anything is touched.
 * Once it ends, an audit line with its result (OK or the status name).
 */
async function leased<T>(
  leases: LeaseCheck,
  method: string,
  md: { get(key: string): unknown },
  asks: Fields,
  run: () => Promise<T>,
): Promise<T> {
  const caller = LeaseCheck.callerOf(md);
  try {
    leases.check(method, LeaseCheck.leaseOf(md), asks, caller);
  } catch (e) {
    throw toServerError(e);
  }
  const entry = { identity: caller, method: `/rbdbackup.v1.AgentService/${method}`, target: describeAsks(asks) };
  try {
    const out = await run();
    leases.audit?.record({ ...entry, result: "OK" });
    return out;
  } catch (e) {
    leases.audit?.record({ ...entry, result: resultOf(e), message: messageOf(e) });
    throw e;
  }
}

export function agentService(
  ops: AgentOperations,
  info: { agentId: string; maxConcurrentTransfers: number },
  accepting: () => boolean,
  leases: LeaseCheck,
): AgentServiceImplementation {
  const ctx = ops.ctx;
  return {
    async getInfo() {
      return {
        agentId: info.agentId,
        clusterName: ctx.clusterName,
        clusterFsid: ctx.fsid,
        version: VERSION,
        librbdVersion: libraryVersions().librbd,
        health: accepting() ? "ok" : "draining",
        maxConcurrentTransfers: info.maxConcurrentTransfers,
      };
    },
    checkCluster: (req) => ops.checkCluster(req),
    backup: (req, context) =>
      leased(leases, "Backup", context.metadata, backupOperationAsks(req), () => ops.backup(req, context.signal)),
    restore: (req, context) =>
      leased(leases, "Restore", context.metadata, restoreOperationAsks(req), () => ops.restore(req, context.signal)),
    deleteBackup: (req, context) =>
      leased(leases, "DeleteBackup", context.metadata, deleteOperationAsks(req), () => ops.deleteBackup(req)),
    flatten: (req, context) =>
      leased(leases, "Flatten", context.metadata, flattenOperationAsks(req), () => ops.flatten(req, context.signal)),
    listBackupSnapshots: (req) => ops.listBackupSnapshots(req),
    getBackupMetadata: (req) => ops.getBackupMetadata(req),
  };
}
