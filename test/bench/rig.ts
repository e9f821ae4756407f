/**
 * What a Ceph scenario of the suite stands on: a coordinator and one agent per lab cluster (site-a, site-b;
 * mutual TLS, the `--limits` given), the coordinator's API, I/O contexts on both clusters, and the moves
 * every scenario makes — fill an image with random data, back it up or restore it through the API and wait
 * for the job, remove what a round created. `stop()` releases all of it.
 */
import { randomBytes } from "node:crypto";
import type { Cluster, IoCtx } from "../../agents/ceph";
import { BackupMode, RestoreMode, type RestoreResult } from "../../src/gen/rbdbackup/v1/agent";
import { type Backup, type BackupServiceClient, type Job, JobState } from "../../src/gen/rbdbackup/v1/backup_service";
import { type RunningAgent, startAgent } from "../helpers/agents";
import { backupRequest, startCoordinator, waitAgents } from "../helpers/coordinator";
import { connectLab, rbd } from "../helpers/lab";
import type { ScenarioContext } from "./scenarios/types";

const MiB = 1 << 20;

export type Site = "site-a" | "site-b";

export interface Rig {
  api: BackupServiceClient;
  /** The agent on each cluster (its pid is what the suite reads CPU and peak RSS of). */
  agents: Record<Site, RunningAgent>;
  /** Pool "rbd" on site-a (volumes), "backups" on site-b (the CLI's copies). */
  volumes: IoCtx;
  backups: IoCtx;
  /** A full or incremental backup of rbd/<image> on site-a through the API; resolves when it succeeded. */
  backup(image: string, mode?: BackupMode): Promise<Backup>;
  /** Restore of a backup to a new volume rbd/<image> on site-a through the API. */
  restoreNew(backupId: string, image: string): Promise<RestoreResult>;
  /** Forgets a backup through the API (waits for the job). */
  deleteBackup(id: string): Promise<void>;
  /** Removes images (with their snapshots), ignoring the ones already gone. */
  removeImages(images: Array<[Site, string]>): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Follows a job to its end, within `timeoutMs`; throws unless it succeeded. A failed attempt the
 * coordinator would retry (backoff and all) is no measurement: it throws at once with that attempt's
 * status and message, not after the watch's deadline (a full lab pool once looked like a hang that way).
 */
export async function follow(api: BackupServiceClient, job: Job, timeoutMs = 900_000): Promise<Job> {
  let last = job;
  for await (const e of api.watchJob({ jobId: job.id }, { signal: AbortSignal.timeout(timeoutMs) })) {
    if (!e.job) continue;
    last = e.job;
    if (last.errorCode && last.state !== JobState.JOB_STATE_SUCCEEDED)
      throw new Error(`job ${last.id}: attempt ${last.attempts} failed: ${last.errorCode}: ${last.errorMessage}`);
  }
  if (last.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`job ${last.id}: ${last.errorMessage}`);
  return last;
}

/** After a failure: the last `lines` of each daemon's log, since its logs go with it otherwise. */
export function logTails(
  log: (line: string) => void,
  scenario: string,
  daemons: Array<readonly [string, { logs(): string }]>,
  lines = 60,
): void {
  for (const [who, d] of daemons)
    log(`${scenario}: the last of the ${who}'s log:\n${d.logs().split("\n").slice(-lines).join("\n")}`);
}

/** Writes `bytes` from offset 0 (random data unless `data` makes it), 16 writes of 4 MiB in flight. */
export async function fill(
  io: IoCtx,
  image: string,
  bytes: number,
  data: (n: number) => Buffer = randomBytes,
): Promise<void> {
  const img = await io.imageOpen(image);
  try {
    for (let off = 0; off < bytes; off += 64 * MiB) {
      await Promise.all(
        Array.from({ length: 16 }, (_, i) => {
          const at = off + i * 4 * MiB;
          return at < bytes ? img.write(data(Math.min(4 * MiB, bytes - at)), at) : 0;
        }),
      );
    }
    await img.flush();
  } finally {
    await img.close();
  }
}

export async function startRig(ctx: ScenarioContext): Promise<Rig> {
  const coord = await startCoordinator();
  const started: RunningAgent[] = [];
  const clusters: Cluster[] = [];
  const ioctxs: IoCtx[] = [];
  const stop = async () => {
    for (const io of ioctxs) await io.close();
    for (const c of clusters) await c.close();
    await Promise.all(started.map((a) => a.stop()));
    await coord.stop();
  };
  try {
    for (const site of ["site-a", "site-b"] as const)
      started.push(await startAgent(site, { coordinator: coord.address, limits: ctx.limits }));
    const api = coord.client;
    await waitAgents(api, 2);
    clusters.push(await connectLab("site-a"), await connectLab("site-b"));
    const volumes = await (clusters[0] as Cluster).openIoCtx("rbd");
    ioctxs.push(volumes);
    const backups = await (clusters[1] as Cluster).openIoCtx("backups");
    ioctxs.push(backups);
    return {
      api,
      agents: { "site-a": started[0] as RunningAgent, "site-b": started[1] as RunningAgent },
      volumes,
      backups,
      async backup(image, mode = BackupMode.BACKUP_MODE_FULL) {
        const volume = { cluster: "site-a", pool: "rbd", namespace: "", image };
        const job = await follow(api, await api.createBackup(backupRequest(volume, { mode })));
        return job.backup as Backup;
      },
      async restoreNew(backupId, image) {
        const job = await follow(
          api,
          await api.restoreBackup({
            backupId,
            target: { cluster: "site-a", pool: "rbd", namespace: "", image },
            mode: RestoreMode.RESTORE_MODE_NEW,
            idempotencyKey: "",
          }),
        );
        return job.restore as RestoreResult;
      },
      async deleteBackup(id) {
        await follow(api, await api.deleteBackup({ backupId: id, idempotencyKey: "" }));
      },
      async removeImages(images) {
        for (const [site, spec] of images) {
          await rbd(site, ["snap", "purge", "--no-progress", spec]).catch(() => {});
          await rbd(site, ["rm", "--no-progress", spec]).catch(() => {});
        }
      },
      stop,
    };
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }
}
