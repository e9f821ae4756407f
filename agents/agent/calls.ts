/**
 * The coordinator's request/response calls over the session (Call → CallReply): cluster checks,
 * backup snapshots, backup metadata, probes, image lists (policy discovery), digest maps (SOURCE
 * verification), source snapshot hygiene (prune_snapshots) and the catalog rebuild's scan (scan_backups), answered by the agent's operations. A failure is a
 * reply with its gRPC status, never an error of the session.
 */
import { Status } from "nice-grpc-common";
import { AppError, messageOf, statusOf } from "../../src/common/errors";
import type { Call, CallReply } from "../../src/gen/rbdbackup/v1/session";
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
    default:
      throw new AppError(Status.UNIMPLEMENTED, "a call this agent does not know");
  }
}

/** The reply to `call`: its result with OK, or its failure's status and message. */
export async function answerCall(ops: SessionOperations, call: Call): Promise<CallReply> {
  try {
    const result = await run(ops, call.request);
    return { callId: call.callId, code: Status.OK, message: "", result };
  } catch (e) {
    return { callId: call.callId, code: statusOf(e), message: messageOf(e), result: undefined };
  }
}
