/** gRPC handlers of an agent: TransferService (destination side) and AgentService (operations). */
import { type CallContext, ServerError, Status } from "nice-grpc-common";
import type { AgentServiceImplementation } from "../../src/gen/rbdbackup/v1/agent";
import type { TransferServiceImplementation } from "../../src/gen/rbdbackup/v1/transfer";
import { libraryVersions } from "../ceph";
import { listChains } from "../engine/snapshots";
import { validName } from "../transfer/protocol";
import { runSink, type SinkDeps } from "../transfer/sink";
import { type AgentOperations, handle } from "./operations";

export { VERSION } from "../../src/common/version";

import { VERSION } from "../../src/common/version";

export function transferService(
  sink: SinkDeps,
  maxConcurrent: number,
  accepting: () => boolean,
): TransferServiceImplementation {
  let active = 0;
  return {
    async transfer(request, context: CallContext) {
      if (!accepting()) throw new ServerError(Status.UNAVAILABLE, "this agent is shutting down");
      if (active >= maxConcurrent) {
        throw new ServerError(
          Status.RESOURCE_EXHAUSTED,
          `this agent already serves ${active} transfers (limit ${maxConcurrent}); retry later`,
        );
      }
      active++;
      try {
        return await handle(sink.log, "Transfer", () => runSink(sink, request, context.signal));
      } finally {
        active--;
      }
    },
    async listChains(req) {
      return handle(sink.log, "ListChains", async () => {
        validName(req.pool, "pool");
        validName(req.namespace, "namespace", { allowEmpty: true });
        validName(req.volumeImage, "volume_image");
        return {
          chains: await listChains(sink.cluster, req.pool, req.namespace, req.volumeImage),
          clusterFsid: sink.fsid,
        };
      });
    },
  };
}

export function agentService(
  ops: AgentOperations,
  info: { agentId: string; maxConcurrentTransfers: number },
  accepting: () => boolean,
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
    backup: (req, context) => ops.backup(req, context.signal),
    restore: (req, context) => ops.restore(req, context.signal),
    deleteBackup: (req) => ops.deleteBackup(req),
    listBackupSnapshots: (req) => ops.listBackupSnapshots(req),
    getBackupMetadata: (req) => ops.getBackupMetadata(req),
  };
}
