/**
 * Simulated agents for the policy scale bench (policy-scale.ts): the agent's real session stack
 * (agents/agent/session.ts — register, heartbeats, leases, progress, outcomes kept until acknowledged,
 * calls) over gRPC with mutual TLS, in front of simulated clusters instead of librbd. A source cluster
 * holds named images; a backup "runs" for `backupMs` (progress reported half way), records its snapshot
 * and metadata object in the destination cluster's simulated backup pool and reports a BackupResult, so
 * the coordinator's confirmation (scheduler/confirmation.ts: the `snapshots` and `metadata` calls to an
 * agent of the destination) finds them. DELETE jobs remove them. Discovery's `images` call lists the
 * source pool. A backup leaves its snapshot on the source volume too (the parent of the next
 * incremental), so the coordinator's source snapshot hygiene finds the previous one to prune, as with a
 * real cluster. Every session message is counted by kind (`SimWorld.messages`, the session's tap).
 * Nothing here touches Ceph: this is for measuring the coordinator, not the data plane.
 */
import { randomUUID } from "node:crypto";
import { Status } from "nice-grpc-common";
import type { SessionOperations } from "../../agents/agent/operations";
import { CoordinatorSession } from "../../agents/agent/session";
import type { Progress } from "../../agents/engine/progress";
import { newStats } from "../../agents/transfer/source";
import { AppError } from "../../src/common/errors";
import type { Logger } from "../../src/common/log";
import { delay } from "../../src/common/retry";
import type { TlsConfig } from "../../src/common/tls";
import type {
  BackupRequest,
  BackupResult,
  DeleteBackupDataRequest,
  DeleteBackupDataResult,
} from "../../src/gen/rbdbackup/v1/agent";
import type { BackupSnapshot } from "../../src/gen/rbdbackup/v1/transfer";

const GiB = 1024 ** 3;

/** What the simulated clusters hold; shared by every simulated agent of the bench. */
export class SimWorld {
  /** cluster → fsid. */
  readonly fsids = new Map<string, string>();
  /** "cluster/pool/namespace" → image names (sorted). */
  readonly images = new Map<string, string[]>();
  /** Destination side: "cluster/pool/namespace/baseImage" → backup snapshots on it, oldest first. */
  readonly snaps = new Map<string, BackupSnapshot[]>();
  /** Destination side: "cluster/pool/namespace/backupId" → metadata object JSON. */
  readonly metas = new Map<string, string>();
  /** Source side: "cluster/pool/namespace/image" → the base image of its chain at the destination. */
  readonly chains = new Map<string, string>();
  counts = { backups: 0, deletes: 0, calls: 0, warnings: 0 };
  /** Session messages by "sent:<kind>" (agents to the coordinator) and "received:<kind>" (calls by case). */
  readonly messages = new Map<string, number>();

  tap(way: string, what: string): void {
    const k = `${way}:${what}`;
    this.messages.set(k, (this.messages.get(k) ?? 0) + 1);
  }

  fsidOf(cluster: string): string {
    let f = this.fsids.get(cluster);
    if (!f) {
      f = randomUUID();
      this.fsids.set(cluster, f);
    }
    return f;
  }
}

const key = (...parts: string[]) => parts.join("/");

/** A logger that drops info/debug and counts (and prints the first few) warnings and errors. */
function quietLogger(world: SimWorld, name: string): Logger {
  const loud = (msg: string, fields?: Record<string, unknown>) => {
    if (++world.counts.warnings <= 5) console.error(`[${name}] ${msg} ${JSON.stringify(fields ?? {})}`);
  };
  const l: Logger = { debug: () => {}, info: () => {}, warn: loud, error: loud, child: () => l };
  return l;
}

/** RBD snapshot ids (one counter for the simulated world: only their order matters). */
let snapIds = 0;

/** The operations of one simulated agent of `cluster`. */
function simOperations(world: SimWorld, cluster: string, backupMs: number): SessionOperations {
  const unimplemented = async (): Promise<never> => {
    throw new AppError(Status.UNIMPLEMENTED, "the simulated agent only backs up and deletes");
  };
  // A Ceph client address as librados reports one (the coordinator refuses any other): a nonzero nonce
  // of this simulated agent's own.
  const nonce = 1 + Math.floor(Math.random() * 2 ** 31);
  return {
    ctx: { cluster: { addrs: () => `v2:127.0.0.1:0/${nonce}`, blocklistAdd: async () => {} } },
    async backup(req: BackupRequest, signal: AbortSignal, progress?: Progress): Promise<BackupResult> {
      if (req.source?.$case !== "volume") throw new AppError(Status.INVALID_ARGUMENT, "volume sources only");
      const vol = req.source.value;
      const destCluster = [...world.fsids].find(([, f]) => f === req.destination?.clusterFsid)?.[0] ?? "";
      if (progress) {
        progress.phase = "transfer";
        progress.bytesTotal = 10 * GiB;
        progress.stats = newStats();
      }
      await delay(backupMs / 2, signal);
      if (progress?.stats) progress.stats.position = 5 * GiB;
      await delay(backupMs / 2, signal);
      const volKey = key(cluster, vol.pool, vol.namespace, vol.image);
      const parent = world.chains.get(volKey);
      const baseImage = parent ?? `${vol.image}.backup.${req.backupId}`;
      world.chains.set(volKey, baseImage);
      const at = Date.now() / 1000;
      const snapshot = `backup.${req.backupId}.snap.${Math.floor(at)}`;
      const ns = req.destinationNamespace;
      const chainKey = key(destCluster, req.destinationPool, ns, baseImage);
      const list = world.snaps.get(chainKey) ?? [];
      const prev = list.at(-1)?.name ?? "";
      const snap = { name: snapshot, backupId: req.backupId, timestamp: at, snapId: ++snapIds, size: 10 * GiB };
      list.push(snap);
      world.snaps.set(chainKey, list);
      // The source keeps its snapshot too (the next incremental's parent); hygiene prunes older ones.
      world.snaps.set(volKey, [...(world.snaps.get(volKey) ?? []), snap]);
      world.metas.set(
        key(destCluster, req.destinationPool, ns, req.backupId),
        JSON.stringify({
          backup_id: req.backupId,
          source: { kind: "rbd", pool: vol.pool, namespace: vol.namespace, image: vol.image },
          chain: { base_image: baseImage, snapshot },
        }),
      );
      world.counts.backups++;
      return {
        backupId: req.backupId,
        baseImage,
        snapshot,
        incremental: parent !== undefined && prev !== "",
        parentSnapshot: parent !== undefined ? prev : "",
        forcedFullReason: "",
        imageSize: 10 * GiB,
        bytesRead: 64 << 20,
        dataBytesSent: 64 << 20,
        zeroBytes: 0,
        dataChunks: 16,
        zeroRanges: 0,
        extents: 16,
        seconds: backupMs / 1000,
        sourceSnapshotsRemoved: [],
        warnings: [],
        destinationPool: req.destinationPool,
        destinationNamespace: ns,
        destinationFsid: req.destination?.clusterFsid ?? "",
        imageDigest: "",
        digestBlockSize: 0,
        resumedFrom: 0,
        resumeFallbackReason: "",
      };
    },
    async deleteBackup(req: DeleteBackupDataRequest): Promise<DeleteBackupDataResult> {
      await delay(Math.min(200, backupMs / 4));
      const chainKey = key(cluster, req.pool, req.namespace, req.baseImage);
      const list = world.snaps.get(chainKey) ?? [];
      const gone = list.find((s) => s.backupId === req.backupId);
      world.snaps.set(
        chainKey,
        list.filter((s) => s.backupId !== req.backupId),
      );
      world.metas.delete(key(cluster, req.pool, req.namespace, req.backupId));
      world.counts.deletes++;
      return { removedSnapshot: gone?.name ?? "", removedBaseImage: false, removedMetadata: true, warnings: [] };
    },
    restore: unimplemented,
    flatten: unimplemented,
    verify: unimplemented,
    digestMap: unimplemented,
    scanBackups: unimplemented,
    async checkCluster() {
      world.counts.calls++;
      return { ok: true, checks: [], clusterFsid: world.fsidOf(cluster) };
    },
    async listBackupSnapshots(req) {
      world.counts.calls++;
      const im = req.image;
      const list = im ? world.snaps.get(key(cluster, im.pool, im.namespace, im.image)) : undefined;
      if (!list) throw new AppError(Status.NOT_FOUND, `image ${im?.pool}/${im?.image} not found`);
      return { snapshots: list };
    },
    async getBackupMetadata(req) {
      world.counts.calls++;
      const json = world.metas.get(key(cluster, req.pool, req.namespace, req.backupId));
      return { found: json !== undefined, json: json ?? "" };
    },
    async probe(req) {
      world.counts.calls++;
      const im = req.image;
      const exists = im ? (world.images.get(key(cluster, im.pool, im.namespace)) ?? []).includes(im.image) : false;
      return {
        missingPools: [],
        missingNamespaces: [],
        imageExists: exists,
        imageSize: exists ? 10 * GiB : 0,
        imageSnapshots: [],
      };
    },
    async listImages(req) {
      world.counts.calls++;
      return { images: world.images.get(key(cluster, req.pool, req.namespace)) ?? [] };
    },
    async pruneBackupSnapshots(req) {
      world.counts.calls++;
      const im = req.image;
      const k = key(cluster, im?.pool ?? "", im?.namespace ?? "", im?.image ?? "");
      const ids = new Set(req.backupIds);
      const list = world.snaps.get(k) ?? [];
      world.snaps.set(
        k,
        list.filter((s) => !ids.has(s.backupId)),
      );
      return { removed: list.filter((s) => ids.has(s.backupId)).map((s) => s.name), warnings: [] };
    },
  };
}

export interface SimAgent {
  agentId: string;
  cluster: string;
  session: CoordinatorSession;
}

/** Starts one simulated agent (its session dials `coordinator` with `tls`, which must name it). */
export function startSimAgent(
  world: SimWorld,
  o: {
    agentId: string;
    cluster: string;
    coordinator: string;
    tls: TlsConfig;
    capacity: number;
    backupMs: number;
    /** Register.features (undefined: the agent's own; [] plays an agent of before them). */
    features?: string[];
  },
): SimAgent {
  const session = new CoordinatorSession(
    [o.coordinator],
    o.tls,
    {
      agentId: o.agentId,
      clusterName: o.cluster,
      clusterFsid: world.fsidOf(o.cluster),
      version: "sim",
      librbdVersion: "sim",
      transferAddress: "127.0.0.1:9",
      capacity: o.capacity,
      defaultBackupPool: "backups",
      ...(o.features ? { features: o.features } : {}),
    },
    simOperations(world, o.cluster, o.backupMs),
    quietLogger(world, o.agentId),
    {},
    { tap: (way, what) => world.tap(way, what) },
  );
  session.start();
  return { agentId: o.agentId, cluster: o.cluster, session };
}
