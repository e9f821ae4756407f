/**
 * EXPORT and IMPORT jobs' lease requests (rbd-diff interchange). Their bytes do not go agent to agent:
 * the agent that holds the lease streams them to the coordinator (ExportData) or pulls them from it
 * (ImportData), which relays them to and from the API caller (../interchange/). Both run on an agent of
 * the backup's own cluster; neither carries a transfer capability (the data never leaves the agent
 * except through its own session's coordinator). One attempt each: a consumed stream cannot be replayed.
 */
import type { ExportRequest, ImportRequest } from "../../gen/rbdbackup/v1/agent";
import type { Catalog } from "../catalog/catalog";
import type { JobRecord } from "../model";
import type { Located } from "./capabilities";

type Op<K extends JobRecord["operation"]["kind"]> = Extract<JobRecord["operation"], { kind: K }>;

/** An EXPORT attempt: the backup's snapshot on its base image, and the from-backup's snapshot to diff from. */
export function exportRequest(catalog: Catalog, b: Located, j: JobRecord, op: Op<"export">): ExportRequest {
  let fromSnapshot = "";
  if (op.fromBackupId) {
    const from = catalog.getBackup(op.fromBackupId);
    if (!from?.snapshot || from.baseImage !== b.baseImage) {
      throw new Error(`backup ${op.fromBackupId} (the export's from-backup) is no longer in backup ${b.id}'s chain`);
    }
    fromSnapshot = from.snapshot;
  }
  return {
    backupId: b.id,
    backupPool: b.location.pool,
    backupNamespace: b.location.namespace,
    baseImage: b.baseImage,
    snapshot: b.snapshot,
    fromSnapshot,
    format: op.format,
    jobId: j.id,
  };
}

/** An IMPORT attempt: where to write the caller's stream, as the API chose it when the job was made. */
export function importRequest(b: Located, j: JobRecord, op: Op<"import">): ImportRequest {
  return {
    backupId: b.id,
    pool: b.location.pool,
    namespace: b.location.namespace,
    baseImage: op.baseImage,
    fromSnapshot: op.fromSnapshot,
    toSnapshot: op.toSnapshot,
    metadataJson: Buffer.from(op.metadataJson),
    jobId: j.id,
    format: op.format,
    parentImported: op.parentImported === true,
  };
}
