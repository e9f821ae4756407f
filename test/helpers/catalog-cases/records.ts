/**
 * Records for the catalog conformance cases: backups, jobs, agents, policies and protection records
 * with the fields a case varies, and `using` (opens a catalog, runs the case, always closes it).
 */
import { randomUUID } from "node:crypto";
import type { Catalog } from "../../../src/coordinator/catalog/catalog";
import type { AgentRecord, Backup, JobRecord } from "../../../src/coordinator/model";
import type { ProtectionRecord } from "../../../src/coordinator/policy/model";
import { Backup as BackupMsg, BackupStatus, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import { Policy } from "../../../src/gen/rbdbackup/v1/policy";

/** Opens a catalog (a fresh, empty one each time) for one case. */
export type OpenCatalog = () => Catalog;

export function using<T>(open: OpenCatalog, f: (c: Catalog) => T): T {
  const c = open();
  try {
    return f(c);
  } finally {
    c.close();
  }
}

export const T0 = Date.UTC(2026, 11, 1);

export const vol = (image: string, cluster = "a", pool = "rbd", namespace = ""): VolumeRef => ({
  cluster,
  pool,
  namespace,
  image,
});

export function backup(v: VolumeRef, at: number, o: Partial<Backup> = {}): Backup {
  return BackupMsg.fromPartial({
    id: randomUUID(),
    volume: v,
    volumeId: `vid-${v.image}`,
    location: { cluster: "b", pool: "backups", namespace: "" },
    locationFsid: "fsid-b",
    status: BackupStatus.BACKUP_STATUS_AVAILABLE,
    sizeBytes: 1 << 20,
    createdAt: new Date(at),
    completedAt: new Date(at + 1000),
    ...o,
  });
}

export function job(at: number, o: Partial<JobRecord> = {}): JobRecord {
  return {
    id: randomUUID(),
    kind: JobKind.JOB_KIND_BACKUP,
    state: JobState.JOB_STATE_QUEUED,
    backupId: randomUUID(),
    volume: vol("v1"),
    idempotencyKey: "",
    fingerprint: "f",
    operation: { kind: "backup", mode: 0, maxSnapshots: 3 } as JobRecord["operation"],
    attempts: 0,
    maxAttempts: 3,
    errorCode: "",
    errorMessage: "",
    agentId: "",
    waitingReason: "queued",
    createdAt: at,
    startedAt: 0,
    finishedAt: 0,
    nextAttemptAt: 0,
    lease: null,
    cancelRequested: false,
    locks: [],
    execCluster: "a",
    peerCluster: "b",
    result: null,
    warnings: [],
    fence: [],
    ...o,
  };
}

export function agent(agentId: string, cluster: string, lastSeen = 0): AgentRecord {
  return {
    agentId,
    clusterName: cluster,
    clusterFsid: `fsid-${cluster}`,
    version: "test",
    transferAddress: "127.0.0.1:7400",
    capacity: 4,
    defaultBackupPool: "backups",
    cephClientAddrs: `v2:127.0.0.1:6800/${agentId}`,
    lastSeen,
  };
}

export const policy = (name: string): Policy =>
  Policy.fromPartial({
    name,
    selector: { volumes: [vol("v1")] },
    destination: { cluster: "b" },
    schedule: { intervalSeconds: 60 },
    retention: { keepLast: 1 },
    revision: 1,
    createdAt: new Date(Date.UTC(2026, 0, 1)),
  });

export const protection = (p: string, v: VolumeRef, nextRunAt = 2): ProtectionRecord => ({
  policy: p,
  volume: v,
  source: "explicit",
  nextSlotAt: 1,
  nextRunAt,
  lastSlotAt: 0,
  lastJobId: "",
  lastError: "",
  consecutiveFailures: 0,
  missedRuns: 0,
  pausedReason: "",
  lastSeenAt: 0,
  createdAt: 0,
});
