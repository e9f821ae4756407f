/**
 * Job → request: what the agent runs for one attempt, built from the catalog when the lease is issued
 * (so a retry sees the catalog as it is then). Chain policy lives here: a backup must not prune the
 * source snapshots that other chains of the same volume start their next incremental from. A backup or
 * restore carries the transfer capability minted for the agent that runs it (./capabilities.ts).
 */

import type { CapabilitySigner } from "../../common/capability";
import {
  BackupMode,
  type BackupRequest,
  type DeleteBackupDataRequest,
  type FlattenRequest,
  type RestoreRequest,
} from "../../gen/rbdbackup/v1/agent";
import { BackupStatus } from "../../gen/rbdbackup/v1/backup_service";
import type { Lease as LeaseMsg } from "../../gen/rbdbackup/v1/session";
import type { Catalog } from "../catalog/catalog";
import type { JobRecord } from "../model";
import type { AgentSession } from "../sessions";
import { knownChains, type Located, transferCapability } from "./capabilities";
import { exportRequest, importRequest } from "./interchange";
import { attemptBudget } from "./retry-policy";
import { corruptChainReason, grownChainReason, verifyRequest } from "./verify";

type Operation = NonNullable<LeaseMsg["operation"]>;
type PeerRef = BackupRequest["destination"];

/** Who runs the attempt (the lease's agent) and who signs its capability (none in insecure mode). */
export interface Runner {
  agent: AgentSession;
  /** The number of the attempt being leased. */
  attempt: number;
  signer?: CapabilitySigner;
  /** SOURCE verification: the backup's digest map, fetched for this attempt (./digest-maps.ts). */
  digestMap?: Uint8Array;
}

/** The request the agent runs for this attempt; throws when the job's backup is not in the catalog. */
export function leaseOperation(catalog: Catalog, j: JobRecord, peer: AgentSession | null, runner: Runner): Operation {
  const b = catalog.getBackup(j.backupId);
  if (!b?.location || !b.volume) throw new Error(`backup ${j.backupId} is not in the catalog`);
  const located = b as Located;
  const holder = { cluster: runner.agent.cluster, agentId: runner.agent.agentId };
  // The stream's destination: the peer's cluster, or the runner's own when it writes there itself.
  const to = {
    fsid: (peer ?? runner.agent).info.clusterFsid,
    agentId: (peer ?? runner.agent).agentId,
    chains: j.operation.kind === "backup" && runner.signer ? knownChains(catalog, located) : [],
  };
  const capability = transferCapability(runner.signer, located, j, runner.attempt, holder, to);
  const peerRef: PeerRef = peer
    ? { address: peer.info.transferAddress, clusterFsid: peer.info.clusterFsid }
    : { address: "", clusterFsid: "" };
  const op = j.operation;
  // Not the last attempt: a transfer cut short keeps what it did, for the next attempt to resume.
  const resumable = runner.attempt < attemptBudget(j);
  if (op.kind === "backup") {
    const keep = keepSnapshots(catalog, located);
    forceFullAfterCorrupt(catalog, located, op);
    return {
      $case: "backup",
      value: { ...backupRequest(located, j, op, peerRef, keep), transferCapability: capability, resumable },
    };
  }
  if (op.kind === "verify") return { $case: "verify", value: verifyRequest(located, j, op, runner.digestMap) };
  if (op.kind === "restore")
    return {
      $case: "restore",
      value: { ...restoreRequest(located, j, op, peerRef), transferCapability: capability, resumable },
    };
  if (op.kind === "flatten") return { $case: "flatten", value: flattenRequest(located, j, op) };
  if (op.kind === "export") return { $case: "export", value: exportRequest(catalog, located, j, op) };
  if (op.kind === "import") return { $case: "import", value: importRequest(located, j, op) };
  return { $case: "delete", value: deleteRequest(located, j) };
}

/**
 * A backup whose chain holds a CORRUPT backup, or whose volume outgrew the chain's digest map, is leased
 * as FULL: the reason goes on the job (saved when the lease is issued) and becomes the backup's
 * forced_full_reason. A FULL asked for needs no reason.
 */
function forceFullAfterCorrupt(
  catalog: Catalog,
  b: Located,
  op: Extract<JobRecord["operation"], { kind: "backup" }>,
): void {
  if (op.mode === BackupMode.BACKUP_MODE_FULL) return;
  const why = corruptChainReason(catalog, b) || grownChainReason(catalog, b);
  if (why) op.forcedFull = why;
  else delete op.forcedFull;
}

function flattenRequest(
  b: Located,
  j: JobRecord,
  op: Extract<JobRecord["operation"], { kind: "flatten" }>,
): FlattenRequest {
  return {
    image: { pool: op.target.pool, namespace: op.target.namespace, image: op.target.image },
    backupId: b.id,
    backupPool: b.location.pool,
    backupNamespace: b.location.namespace,
    baseImage: b.baseImage,
    jobId: j.id,
  };
}

function backupRequest(
  b: Located,
  j: JobRecord,
  op: Extract<JobRecord["operation"], { kind: "backup" }>,
  destination: PeerRef,
  keep: string[],
): BackupRequest {
  const v = b.volume;
  return {
    backupId: b.id,
    source: { $case: "volume", value: { pool: v.pool, namespace: v.namespace, image: v.image } },
    sourceName: "",
    destination,
    destinationPool: b.location.pool,
    destinationNamespace: b.location.namespace,
    mode: op.forcedFull ? BackupMode.BACKUP_MODE_FULL : op.mode,
    volumeId: b.volumeId,
    volumeMetadata: b.volumeMetadata,
    maxSnapshots: op.maxSnapshots,
    keepSnapshots: keep,
    jobId: j.id,
    transferCapability: "",
    resumable: false,
    transferOptions: op.transfer,
    // Removals are snapshot-hygiene.ts's, once the job has ended: the job does not wait for them.
    skipSourcePrune: true,
  };
}

function restoreRequest(
  b: Located,
  j: JobRecord,
  op: Extract<JobRecord["operation"], { kind: "restore" }>,
  targetAgent: PeerRef,
): RestoreRequest {
  return {
    backupId: b.id,
    backupPool: b.location.pool,
    backupNamespace: b.location.namespace,
    baseImage: b.baseImage,
    snapshot: b.snapshot,
    targetAgent,
    target: { pool: op.target.pool, namespace: op.target.namespace, image: op.target.image },
    mode: op.mode,
    jobId: j.id,
    transferCapability: "",
    source: op.source ? { pool: op.source.pool, namespace: op.source.namespace, image: op.source.image } : undefined,
    resumable: false,
    transferOptions: op.transfer,
    allowOpen: op.allowOpen === true,
    skipImageMeta: op.skipImageMeta === true,
  };
}

function deleteRequest(b: Located, j: JobRecord): DeleteBackupDataRequest {
  return {
    backupId: b.id,
    pool: b.location.pool,
    namespace: b.location.namespace,
    baseImage: b.baseImage,
    jobId: j.id,
  };
}

/**
 * Source snapshots the backup must not prune: the newest snapshot of every other chain of the volume
 * (backups of it kept in other pools or clusters), which their next incremental starts from.
 */
export function keepSnapshots(catalog: Catalog, b: Located): string[] {
  const v = b.volume;
  const here = `${b.location.cluster}/${b.location.pool}/${b.location.namespace}`;
  const newest = new Map<string, string>();
  for (const o of catalog.backupsOfVolume(
    v.cluster,
    v.pool,
    v.namespace,
    v.image,
    BackupStatus.BACKUP_STATUS_AVAILABLE,
  )) {
    if (o.status !== BackupStatus.BACKUP_STATUS_AVAILABLE || !o.location || !o.snapshot) continue;
    const loc = `${o.location.cluster}/${o.location.pool}/${o.location.namespace}`;
    if (loc !== here) newest.set(loc, o.snapshot);
  }
  return [...newest.values()];
}
