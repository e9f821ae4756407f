/** gRPC handlers of an agent: TransferService (destination side) and AgentService (operations). */
import { type CallContext, ServerError, Status } from "nice-grpc-common";
import { invalidArgument, statusOf, toServerError } from "../../src/common/errors";
import type { Logger } from "../../src/common/log";
import type { AgentServiceImplementation } from "../../src/gen/rbdbackup/v1/agent";
import type { TransferServiceImplementation } from "../../src/gen/rbdbackup/v1/transfer";
import { libraryVersions } from "../ceph";
import { backup } from "../engine/backup";
import { clusterChecks } from "../engine/checks";
import type { EngineContext } from "../engine/context";
import { deleteBackup } from "../engine/delete";
import { readMetadata, restore } from "../engine/restore";
import { listChains, listImageBackupSnapshots } from "../engine/snapshots";
import { validName } from "../transfer/protocol";
import { runSink, type SinkDeps } from "../transfer/sink";
import { AgentMetrics } from "./metrics";

export const VERSION = "0.1.0";

/**
 * Work still running, including cleanup after a cancelled call: the daemon waits for it on shutdown
 * (a call cancelled by the server's shutdown must still remove its snapshot before the process exits).
 */
export const running = new Set<Promise<unknown>>();

/** Runs a handler; maps its failure to a status, logging the ones that are ours to fix. */
async function handle<T>(log: Logger, method: string, f: () => Promise<T>): Promise<T> {
  const work = f();
  running.add(work);
  work.then(
    () => running.delete(work),
    () => running.delete(work),
  );
  try {
    return await work;
  } catch (e) {
    const status = statusOf(e);
    if (status === Status.INTERNAL || status === Status.UNKNOWN)
      log.error(`${method} failed`, { error: e, stack: (e as Error)?.stack });
    throw toServerError(e);
  }
}

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
  ctx: EngineContext,
  info: { agentId: string; maxConcurrentTransfers: number },
  accepting: () => boolean,
  metrics?: AgentMetrics,
): AgentServiceImplementation {
  const log = ctx.log;
  /** Counts and times an operation by its result. */
  const observe = async <T>(operation: string, f: () => Promise<T>): Promise<T> => {
    const end = metrics?.operationSeconds.startTimer({ operation });
    try {
      const r = await f();
      metrics?.operations.inc({ operation, result: "ok" });
      return r;
    } catch (e) {
      metrics?.operations.inc({ operation, result: Status[statusOf(e)] ?? "UNKNOWN" });
      throw e;
    } finally {
      end?.();
    }
  };
  const gate = () => {
    if (!accepting()) throw new ServerError(Status.UNAVAILABLE, "this agent is shutting down");
  };
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
    async checkCluster(req) {
      return handle(log, "CheckCluster", async () => {
        const pool = req.backupPool || ctx.defaultBackupPool;
        validName(pool, "backup_pool");
        const checks = await clusterChecks(ctx.cluster, pool);
        return { ok: checks.every((c) => c.ok), checks, clusterFsid: ctx.fsid };
      });
    },
    async backup(req, context) {
      gate();
      return handle(log, "Backup", () =>
        observe("backup", async () => {
          const r = await backup(ctx, req, context.signal);
          if (r.forcedFullReason) metrics?.forcedFull.inc({ reason: AgentMetrics.reasonLabel(r.forcedFullReason) });
          return r;
        }),
      );
    },
    async restore(req, context) {
      gate();
      return handle(log, "Restore", () => observe("restore", () => restore(ctx, req, context.signal)));
    },
    async deleteBackup(req) {
      gate();
      return handle(log, "DeleteBackup", () => observe("delete", () => deleteBackup(ctx, req)));
    },
    async listBackupSnapshots(req) {
      return handle(log, "ListBackupSnapshots", async () => {
        const im = req.image;
        if (!im) throw invalidArgument("image is required");
        validName(im.pool, "pool");
        validName(im.namespace, "namespace", { allowEmpty: true });
        validName(im.image, "image");
        return { snapshots: await listImageBackupSnapshots(ctx.cluster, im.pool, im.namespace, im.image) };
      });
    },
    async getBackupMetadata(req) {
      return handle(log, "GetBackupMetadata", async () => {
        validName(req.pool, "pool");
        validName(req.namespace, "namespace", { allowEmpty: true });
        if (!/^[0-9a-f-]{36}$/.test(req.backupId)) throw invalidArgument("backup_id must be a lowercase UUID");
        const io = await ctx.cluster.openIoCtx(req.pool, { namespace: req.namespace });
        try {
          const m = await readMetadata(io, req.backupId);
          return m ? { found: true, json: JSON.stringify(m) } : { found: false, json: "" };
        } finally {
          await io.close();
        }
      });
    },
  };
}
