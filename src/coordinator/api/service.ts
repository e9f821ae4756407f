/**
 * BackupService: the public API. It validates every request, answers reads from the catalog (and from
 * agents, for live cluster state), and turns mutations into jobs for the scheduler. Checks that need a
 * cluster (does the volume exist? the pool?) are asked of a connected agent before a job is queued, so
 * a bad request fails at once with its own status and never reaches the queue.
 *
 * This file only routes each method to the file of its concern. Handlers throw AppError; the server
 * adds them behind errorStatus (error-status.ts), which turns every failure into a status.
 */
import { VERSION } from "../../common/version";
import {
  type BackupServiceImplementation,
  CoordinatorRole,
  type CoordinatorStatus,
} from "../../gen/rbdbackup/v1/backup_service";
import { Admission } from "./admission";
import { getBackup, listBackupSnapshots, listBackups } from "./backups";
import { checkCluster, forgetAgent, listAgents } from "./clusters";
import { createBackup } from "./create-backup";
import type { ApiDeps } from "./deps";
import { exportBackup } from "./export-backup";
import { failbackVolume } from "./failback";
import { failoverVolume } from "./failover";
import { flattenVolume } from "./flatten";
import { importBackup } from "./import-backup";
import { cancelJob, getJob, listJobs } from "./jobs";
import { policyMethods } from "./policies";
import { rebuildCatalog } from "./rebuild";
import { exportBackupRecord, importBackupRecord } from "./records";
import { deleteBackup, restoreBackup } from "./restore-delete";
import { verifyBackup } from "./verify";
import { watchJob } from "./watch";

export type { ApiDeps } from "./deps";
export { errorStatus } from "./error-status";
export { withDecodeFailures } from "./undecodable";

/** GetCoordinatorStatus of a coordinator built without HA wiring (tests): the only one, always leading. */
function soleCoordinator(deps: ApiDeps): CoordinatorStatus {
  const c = deps.catalog;
  return {
    ...{ id: "", address: "", leaderId: "", leaderAddress: "", fencingToken: 0, leaseExpiresAt: undefined },
    role: CoordinatorRole.COORDINATOR_ROLE_SINGLE,
    catalog: c.kind,
    schemaVersion: c.schemaVersion,
    version: VERSION,
  };
}

export function backupService(deps: ApiDeps): BackupServiceImplementation {
  const adm = new Admission(deps);
  return {
    // Backups and their data.
    createBackup: (req, ctx) => createBackup(deps, adm, req, ctx),
    restoreBackup: (req, ctx) => restoreBackup(deps, adm, req, ctx),
    deleteBackup: (req, ctx) => deleteBackup(deps, adm, req, ctx.signal),
    getBackup: async (req) => getBackup(deps, req),
    listBackups: async (req) => listBackups(deps, req),
    listBackupSnapshots: (req, ctx) => listBackupSnapshots(deps, adm, req, ctx),
    verifyBackup: (req, ctx) => verifyBackup(deps, adm, req, ctx),
    // Jobs.
    getJob: async (req) => getJob(deps, adm, req),
    listJobs: async (req) => listJobs(deps, adm, req),
    watchJob: (req, ctx) => watchJob(deps, adm, req, ctx),
    cancelJob: async (req) => cancelJob(deps, adm, req),
    // Agents and clusters.
    listAgents: async () => listAgents(deps),
    forgetAgent: async (req) => forgetAgent(deps, req),
    checkCluster: (req, ctx) => checkCluster(deps, adm, req, ctx),
    // Records.
    exportBackupRecord: async (req) => exportBackupRecord(deps, req),
    importBackupRecord: (req, ctx) => importBackupRecord(deps, adm, req, ctx),
    // Failover drill.
    failoverVolume: (req, ctx) => failoverVolume(deps, adm, req, ctx),
    failbackVolume: (req, ctx) => failbackVolume(deps, adm, req, ctx),
    flattenVolume: (req) => flattenVolume(deps, adm, req),
    // Protection policies.
    ...policyMethods(deps),
    // Interchange with Ceph's rbd-diff format.
    exportBackup: (req, ctx) => exportBackup(deps, adm, req, ctx),
    importBackup: (req, ctx) => importBackup(deps, adm, req, ctx),
    // High availability and disaster recovery of the control plane (issue 15): owners replace these.
    rebuildCatalog: (req, ctx) => rebuildCatalog(deps, adm, req, ctx),
    getCoordinatorStatus: async () => deps.coordinatorStatus?.() ?? soleCoordinator(deps),
  };
}
