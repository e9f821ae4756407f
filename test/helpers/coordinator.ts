/**
 * A whole deployment for tests: a real coordinator process and real agent processes (site-a, site-b)
 * that dial it over mutual TLS, plus helpers to follow jobs through the public API.
 */
import { createServer } from "node:net";
import { BackupMode, RestoreMode } from "../../src/gen/rbdbackup/v1/agent";
import {
  type Backup,
  type BackupServiceClient,
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
