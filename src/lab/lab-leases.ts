/**
 * The lab's AgentService client acts as the coordinator: it talks with the coordinator's certificate and
 * mints, for every mutating call (Backup, Restore, DeleteBackup, Flatten), the operation lease the callee agent
 * checks (metadata `rbdbackup-lease`) and — for Backup and Restore — the transfer capability the callee
 * presents to the destination (request field transfer_capability), signed with the lab coordinator's
 * key and derived the way the coordinator derives them (src/common/grants.ts). A request that already
 * carries a transfer capability, or a call that already carries a lease, is left as it is (attack
 * tests set their own).
 *
 * Like the coordinator, it names the destination cluster's fsid and agent (from the agents the lab started
 * in this process: registerLabAgent) and the chains a backup may write: the base images of the backups it made
 * before of that volume at that place (this process's memory, its "catalog"), and the backup's own.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { createChannel, createClientFactory } from "nice-grpc";
import { type ClientMiddleware, Metadata } from "nice-grpc-common";
import { CapabilitySigner, LEASE_METADATA_KEY } from "../common/capability";
import {
  backupOperationAsks,
  backupTransferAllows,
  deleteOperationAsks,
  type Fields,
  flattenOperationAsks,
  ownChain,
  restoreJobTransferAllows,
  restoreOperationAsks,
} from "../common/grants";
import { channelCredentials, type TlsConfig, tlsChannelOptions } from "../common/tls";
import {
  type AgentServiceClient,
  AgentServiceDefinition,
  BackupRequest,
  type BackupResult,
  DeleteBackupDataRequest,
  FlattenRequest,
  RestoreRequest,
} from "../gen/rbdbackup/v1/agent";

/** Lab leases live this long (the tests' longest operations take minutes). */
const LAB_TTL_MS = 60 * 60_000;

export interface LabHolder {
  cluster: string;
  agentId: string;
  /** The callee's default backup pool (what it writes into when a request names none). */
  backupPool: string;
  /** The callee's cluster fsid (the destination when a request names no peer); "" when unknown. */
  fsid?: string;
}

/** Transfer address → cluster fsid and agent id of the agents started in this process (agent-process.ts). */
const agentOfAddress = new Map<string, { fsid: string; agentId: string }>();
/** "<fsid>/<pool>/<namespace>/<volume image>" → base images of the backups made there (this process). */
const chainsOf = new Map<string, Set<string>>();

/** An agent the lab started: its transfer address serves the cluster with `fsid`, as agent `agentId`. */
export function registerLabAgent(transferAddress: string, fsid: string, agentId: string): void {
  agentOfAddress.set(transferAddress, { fsid, agentId });
}

/** A chain the lab's "coordinator" knows from now on (a backup it made, or a test planted on purpose). */
export function recordLabChain(
  at: { fsid: string; pool: string; namespace: string; volumeImage: string },
  base: string,
) {
  const key = `${at.fsid}/${at.pool}/${at.namespace}/${at.volumeImage}`;
  chainsOf.set(key, (chainsOf.get(key) ?? new Set()).add(base));
}

type PeerRef = { address: string; clusterFsid: string } | undefined;

/** The fsid of the cluster a peer reference points at (`self` for an empty address). */
function fsidOfPeer(peer: PeerRef, self: string): string {
  if (!peer?.address) return self;
  return peer.clusterFsid || agentOfAddress.get(peer.address)?.fsid || "";
}

/** The agent a peer reference points at (the holder itself for an empty address; "" when unknown). */
function agentOfPeer(peer: PeerRef, holder: LabHolder): string {
  if (!peer?.address) return holder.agentId;
  return agentOfAddress.get(peer.address)?.agentId ?? "";
}

/** Where a backup request writes: fsid, pool, namespace, volume image. */
function backupPlace(req: BackupRequest, holder: LabHolder) {
  const src = req.source;
  return {
    fsid: fsidOfPeer(req.destination, holder.fsid ?? ""),
    pool: req.destinationPool || holder.backupPool,
    namespace: req.destinationNamespace,
    volumeImage: src?.$case === "volume" ? src.value.image : req.sourceName,
  };
}

/** A transfer capability for a backup's stream, as the coordinator mints it. */
export function backupTransferFields(req: BackupRequest, holder: LabHolder): Fields {
  const at = backupPlace(req, holder);
  const known = chainsOf.get(`${at.fsid}/${at.pool}/${at.namespace}/${at.volumeImage}`) ?? new Set<string>();
  return {
    ...backupTransferAllows({
      backupId: req.backupId,
      ...at,
      chains: [...known, ownChain(at.volumeImage, req.backupId)],
    }),
    toAgent: agentOfPeer(req.destination, holder),
  };
}

/** A transfer capability for a restore's stream, as the coordinator mints it. */
export function restoreTransferFields(req: RestoreRequest, holder: LabHolder): Fields {
  return {
    ...restoreJobTransferAllows(
      req.backupId,
      { pool: req.target?.pool ?? "", namespace: req.target?.namespace ?? "", image: req.target?.image ?? "" },
      req.mode,
      fsidOfPeer(req.targetAgent, holder.fsid ?? ""),
      req.allowOpen,
    ),
    toAgent: agentOfPeer(req.targetAgent, holder),
  };
}

/** Mints the lab coordinator's capabilities for one holder agent. */
export class LabMinter {
  constructor(
    readonly signer: CapabilitySigner,
    readonly holder: LabHolder,
  ) {}

  static fromTls(tls: TlsConfig, holder: LabHolder): LabMinter {
    return new LabMinter(
      new CapabilitySigner(readFileSync(tls.cert as string), readFileSync(tls.key as string)),
      holder,
    );
  }

  /** Each its own job, as the coordinator's are per attempt (an agent voids a job's others once one commits). */
  mint(scope: "operation" | "transfer", allows: Fields, holder: { cluster: string; agentId: string } = this.holder) {
    return this.signer.sign(
      {
        scope,
        job: `lab-${randomUUID()}`,
        attempt: 1,
        holder: { cluster: holder.cluster, agentId: holder.agentId },
        allows,
      },
      LAB_TTL_MS,
    );
  }
}

/** The client middleware: leases and transfer capabilities for mutating calls. */
export function leaseMiddleware(minter: LabMinter): ClientMiddleware {
  return async function* (call, options) {
    const method = call.method.path.slice(call.method.path.lastIndexOf("/") + 1);
    const md = Metadata(options.metadata);
    let request = call.request as unknown;
    let backupAt: ReturnType<typeof backupPlace> | null = null;
    if (!call.requestStream && !md.has(LEASE_METADATA_KEY)) {
      let asks: Fields | null = null;
      if (method === "Backup") {
        const r = BackupRequest.fromPartial(request as BackupRequest);
        r.transferCapability ||= minter.mint("transfer", backupTransferFields(r, minter.holder));
        backupAt = backupPlace(r, minter.holder);
        asks = backupOperationAsks(r);
        request = r;
      } else if (method === "Restore") {
        const r = RestoreRequest.fromPartial(request as RestoreRequest);
        r.transferCapability ||= minter.mint("transfer", restoreTransferFields(r, minter.holder));
        asks = restoreOperationAsks(r);
        request = r;
      } else if (method === "DeleteBackup") {
        asks = deleteOperationAsks(DeleteBackupDataRequest.fromPartial(request as DeleteBackupDataRequest));
      } else if (method === "Flatten") {
        asks = flattenOperationAsks(FlattenRequest.fromPartial(request as FlattenRequest));
      }
      if (asks) md.set(LEASE_METADATA_KEY, minter.mint("operation", asks));
    }
    const response = yield* call.next(request as typeof call.request, { ...options, metadata: md });
    const base = (response as BackupResult | undefined)?.baseImage;
    if (backupAt && base) recordLabChain(backupAt, base);
    return response;
  };
}

/**
 * An AgentService client of `address` with the TLS files `tls`; with `minter`, it acts as the
 * coordinator (leases and transfer capabilities minted per call).
 */
export function labAgentClient(
  address: string,
  tls: TlsConfig,
  minter?: LabMinter,
): { client: AgentServiceClient; close: () => void } {
  const channel = createChannel(address, channelCredentials(tls), tlsChannelOptions(address, tls));
  const factory = minter ? createClientFactory().use(leaseMiddleware(minter)) : createClientFactory();
  return { client: factory.create(AgentServiceDefinition, channel), close: () => channel.close() };
}
