/**
 * A whole deployment for tests: a real coordinator process and real agent processes (site-a, site-b)
 * that dial it over mutual TLS, plus helpers to follow jobs through the public API.
 */
import { createServer } from "node:net";
import { BackupMode, RestoreMode } from "../../src/gen/rbdbackup/v1/agent";
import {
  type Backup,
  type BackupServiceClient,
  BackupStatus,
  type CreateBackupRequest,
  type Job,
  JobState,
} from "../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../src/gen/rbdbackup/v1/common";
import {
  type CoordinatorProcess,
  type CoordinatorProcessOptions,
  startCoordinatorProcess,
} from "../../src/lab/coordinator-process";
import { type RunningAgent, startAgent } from "./agents";
import { uniqueName } from "./lab";
import { sha, spec, type Volumes } from "./volumes";
import { waitFor } from "./wait";

export interface Deployment {
  coord: CoordinatorProcess;
  agents: RunningAgent[];
  client: BackupServiceClient;
  stop(): Promise<void>;
}

export const FINAL = new Set([JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED]);

export function startCoordinator(opts: CoordinatorProcessOptions = {}): Promise<CoordinatorProcess> {
  return startCoordinatorProcess({ verbose: !!process.env.RBDBACKUP_TEST_VERBOSE, ...opts });
}

/** Waits until `n` agents are connected to the coordinator (bounded). */
export async function waitAgents(client: BackupServiceClient, n: number, timeoutMs = 30_000): Promise<void> {
  let seen = "";
  await waitFor(
    async () => {
      const r = await client.listAgents({});
      seen = JSON.stringify(r.agents.map((a) => ({ agentId: a.agentId, connected: a.connected })));
      return r.agents.filter((a) => a.connected).length >= n;
    },
    { what: () => `${n} connected agents (seen: ${seen})`, timeoutMs },
  );
}

export async function deploy(
  opts: CoordinatorProcessOptions & { clusters?: string[]; agentLimits?: Record<string, number> } = {},
): Promise<Deployment> {
  const coord = await startCoordinator(opts);
  const clusters = opts.clusters ?? ["site-a", "site-b"];
  const started = await Promise.allSettled(
    clusters.map((c) =>
      startAgent(c, { coordinator: coord.address, ...(opts.agentLimits ? { limits: opts.agentLimits } : {}) }),
    ),
  );
  const agents = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const stop = async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await coord.stop();
  };
  try {
    for (const r of started) if (r.status === "rejected") throw r.reason;
    await waitAgents(coord.client, agents.length);
  } catch (e) {
    // The caller never gets a deployment to stop: stop what did start.
    await stop().catch(() => {});
    throw e;
  }
  return { coord, agents, client: coord.client, stop };
}

/** Polls a job until it is final (bounded). */
export async function waitJob(client: BackupServiceClient, jobId: string, timeoutMs = 120_000): Promise<Job> {
  let last: Job | undefined;
  return waitFor(
    async () => {
      last = await client.getJob({ jobId });
      return FINAL.has(last.state) && last;
    },
    { what: () => `job ${jobId} to end (last: ${JSON.stringify(last)})`, timeoutMs },
  );
}

/**
 * Deletes, through the API, every backup this deployment's catalog holds that can be deleted (AVAILABLE,
 * CORRUPT or FAILED: a failed attempt may have left its data), newest first, waiting for the jobs — so a
 * test file's base images, snapshots and metadata objects leave the lab with it. Best effort: a backup that
 * cannot go (clones depend on it, a job still uses it) is named on stdout, not failed on.
 */
export async function removeBackups(client: BackupServiceClient, timeoutMs = 120_000): Promise<void> {
  const removable = new Set([
    BackupStatus.BACKUP_STATUS_AVAILABLE,
    BackupStatus.BACKUP_STATUS_CORRUPT,
    BackupStatus.BACKUP_STATUS_FAILED,
  ]);
  const backups: Backup[] = [];
  let pageToken = "";
  do {
    const page = await client.listBackups({ pageSize: 1000, pageToken });
    backups.push(...page.backups.filter((b) => removable.has(b.status)));
    pageToken = page.nextPageToken;
  } while (pageToken);
  // Only where an agent of the backup's cluster is connected: a delete queued for a cluster without one
  // would wait for it (the file may have stopped its agents).
  const up = new Set((await client.listAgents({})).agents.filter((a) => a.connected).map((a) => a.clusterName));
  const jobs: string[] = [];
  for (const b of backups) {
    if (!up.has(b.location?.cluster ?? "")) {
      console.log(`# cleanup: backup ${b.id} left: no agent of ${b.location?.cluster} connected`);
      continue;
    }
    try {
      jobs.push((await client.deleteBackup({ backupId: b.id, idempotencyKey: "" })).id);
    } catch (e) {
      console.log(`# cleanup: backup ${b.id} not deleted: ${(e as Error).message}`);
    }
  }
  await Promise.all(
    jobs.map(async (id) => {
      const j = await waitJob(client, id, timeoutMs).catch((e: Error) => ({ state: -1, errorMessage: e.message }));
      if (j.state !== JobState.JOB_STATE_SUCCEEDED)
        console.log(`# cleanup: delete job ${id} did not end well: ${j.errorMessage}`);
    }),
  );
}

/** Waits for a job and asserts it succeeded (the message carries its error otherwise). */
export async function succeeded(client: BackupServiceClient, jobId: string, timeoutMs?: number): Promise<Job> {
  const j = await waitJob(client, jobId, timeoutMs);
  if (j.state !== JobState.JOB_STATE_SUCCEEDED) {
    throw new Error(`job ${jobId} ended ${JobState[j.state]}: ${j.errorCode}: ${j.errorMessage}`);
  }
  return j;
}

/** A CreateBackup request with every field: AUTO into site-b/backups unless `extra` says otherwise. */
export function backupRequest(volume: VolumeRef, extra: Partial<CreateBackupRequest> = {}): CreateBackupRequest {
  return {
    volume,
    location: { cluster: "site-b", pool: "backups", namespace: "" },
    mode: BackupMode.BACKUP_MODE_AUTO,
    volumeId: "",
    volumeMetadata: {},
    idempotencyKey: "",
    maxSnapshots: 0,
    transfer: undefined,
    ...extra,
  };
}

/** A free loopback TCP port (for a daemon that must keep its port across restarts). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

/** The text of a /metrics endpoint. */
export async function scrape(address: string): Promise<string> {
  const r = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(10_000) });
  if (r.status !== 200) throw new Error(`GET http://${address}/metrics: ${r.status}`);
  return r.text();
}

/**
 * A full backup of `volume` through the API (into site-b/backups), its base image tracked in `vols` for
 * removal: the backup, and the sha256 of `rbd export` of its source snapshot.
 */
export async function backedUp(
  client: BackupServiceClient,
  vols: Volumes,
  volume: VolumeRef,
): Promise<{ backup: Backup; source: string }> {
  const backup = (await succeeded(client, (await client.createBackup(backupRequest(volume))).id)).backup;
  if (!backup) throw new Error(`the backup job of ${volume.image} names no backup`);
  vols.track("site-b", "backups", backup.baseImage);
  return { backup, source: await sha(volume.cluster, spec(volume, backup.snapshot)) };
}

/** A CLONE restore of `backupId` to a new volume in site-b's rbd pool (name from `prefix`), tracked in `vols`. */
export async function cloneRestored(
  client: BackupServiceClient,
  vols: Volumes,
  backupId: string,
  prefix: string,
  timeoutMs?: number,
): Promise<VolumeRef> {
  const target: VolumeRef = { cluster: "site-b", pool: "rbd", namespace: "", image: uniqueName(prefix) };
  vols.track("site-b", "rbd", target.image); // before the job: removed whatever it ends with
  await succeeded(
    client,
    (await client.restoreBackup({ backupId, target, mode: RestoreMode.RESTORE_MODE_CLONE })).id,
    timeoutMs,
  );
  return target;
}
