/**
 * The coordinator's request/response calls over the session (Call → CallReply): cluster checks,
 * backup snapshots, backup metadata, probes, image lists (policy discovery), digest maps (SOURCE
 * verification), source snapshot hygiene (prune_snapshots), the catalog rebuild's scan (scan_backups), a backup's
 * confirmation (confirm_backup: snapshots + metadata in one reply) and a cancelled job's held transfer
 * undone (discard_held) and a job that succeeded after a retry (end_job), answered by the agent's operations. A failure is a
 * reply with its gRPC status, never an error of the session.
 */
import { Status } from "nice-grpc-common";
import { AppError, invalidArgument, messageOf, statusOf } from "../../src/common/errors";
import { isUuid } from "../../src/common/ids";
import type { Call, CallReply, ConfirmBackupRequest, ConfirmBackupResponse } from "../../src/gen/rbdbackup/v1/session";
import type { SessionOperations } from "./operations";

async function run(ops: SessionOperations, req: Call["request"]): Promise<CallReply["result"]> {
  switch (req?.$case) {
    case "check":
      return { $case: "check", value: await ops.checkCluster(req.value) };
    case "snapshots":
      return { $case: "snapshots", value: await ops.listBackupSnapshots(req.value) };
    case "metadata":
      return { $case: "metadata", value: await ops.getBackupMetadata(req.value) };
    case "probe":
      return { $case: "probe", value: await ops.probe(req.value) };
    case "images":
      return { $case: "images", value: await ops.listImages(req.value) };
    case "digestMap":
      return { $case: "digestMap", value: await ops.digestMap(req.value) };
    case "pruneSnapshots":
      return { $case: "pruneSnapshots", value: await ops.pruneBackupSnapshots(req.value) };
    case "scanBackups":
      return { $case: "scanBackups", value: await ops.scanBackups(req.value) };
    case "confirmBackup":
      return { $case: "confirmBackup", value: await confirmBackup(ops, req.value) };
    case "discardHeld":
      if (!ops.discardHeld) throw new AppError(Status.UNIMPLEMENTED, "discard_held is not served here");
      return { $case: "discardHeld", value: await ops.discardHeld(req.value) };
    case "endJob":
      if (!ops.endJob) throw new AppError(Status.UNIMPLEMENTED, "end_job is not served here");
      return { $case: "endJob", value: await ops.endJob(req.value) };
    default:
      throw new AppError(Status.UNIMPLEMENTED, "a call this agent does not know");
  }
}

/**
 * confirm_backup: what `snapshots` (of the base image) and `metadata` answer, in one reply. Both are
 * asked at once; the listing's failure (NOT_FOUND: no such image or pool) is the reply's; with no such
 * snapshot the metadata is not reported; else the metadata's failure is the reply's. Each checks its
 * own arguments as the call it replaces does. A backup this agent's sink committed moments ago on
 * exactly that image and snapshot is answered from its commit (transfer/sink/recent-commits.ts) without
 * reading Ceph.
 */
async function confirmBackup(ops: SessionOperations, req: ConfirmBackupRequest): Promise<ConfirmBackupResponse> {
  const image = req.image;
  if (!image) throw invalidArgument("confirm_backup: image is required");
  if (!isUuid(req.backupId)) throw invalidArgument("confirm_backup: backup_id must be a lowercase UUID");
  if (!req.snapshot || req.snapshot.length > 256)
    throw invalidArgument("confirm_backup: snapshot must be 1-256 characters");
  // A backup this agent committed moments ago: the snapshot and the metadata as they were made.
  const committed = await ops.recentCommit?.(req.backupId, image, req.snapshot);
  if (committed) return committed;
  const [listed, meta] = await Promise.allSettled([
    ops.listBackupSnapshots({ image }),
    ops.getBackupMetadata({ backupId: req.backupId, pool: image.pool, namespace: image.namespace }),
  ]);
  if (listed.status === "rejected") throw listed.reason;
  const snapshot = listed.value.snapshots.find((s) => s.name === req.snapshot);
  // No such snapshot is the answer, whatever the metadata's read did (as the coordinator judges it).
  if (!snapshot) return { snapshot, metadata: { found: false, json: "" } };
  if (meta.status === "rejected") throw meta.reason;
  return { snapshot, metadata: meta.value };
}

/** Optional abilities this agent names in Register.features (session.proto, "Versions"). */
export const AGENT_FEATURES: readonly string[] = ["confirm_backup", "discard_held", "end_job"];

/** The reply to `call`: its result with OK, or its failure's status and message. */
export async function answerCall(ops: SessionOperations, call: Call): Promise<CallReply> {
  try {
    const result = await run(ops, call.request);
    return { callId: call.callId, code: Status.OK, message: "", result };
  } catch (e) {
    return { callId: call.callId, code: statusOf(e), message: messageOf(e), result: undefined };
  }
}
