/**
 * The lab's AgentService client acts as the coordinator: it talks with the coordinator's certificate and
 * mints, for every mutating call (Backup, Restore, DeleteBackup, Flatten), the operation lease the callee agent
 * checks (metadata `rbdbackup-lease`) and — for Backup and Restore — the transfer capability the callee
 * presents to the destination (request field transfer_capability), signed with the lab coordinator's
 * key and derived the way the coordinator derives them (src/common/grants.ts). A request that already
 * carries a transfer capability, or a call that already carries a lease, is left as it is (attack
 * tests set their own).
 */
import { readFileSync } from "node:fs";
import { createChannel, createClientFactory } from "nice-grpc";
import { type ClientMiddleware, Metadata } from "nice-grpc-common";
import { CapabilitySigner, LEASE_METADATA_KEY } from "../common/capability";
import { flattenOperationAsks } from "../common/flatten-grant";
import {
  backupOperationAsks,
  backupTransferAllows,
  deleteOperationAsks,
  type Fields,
  restoreOperationAsks,
  restoreTransferAllows,
} from "../common/grants";
import { channelCredentials, type TlsConfig, tlsChannelOptions } from "../common/tls";
import {
  type AgentServiceClient,
  AgentServiceDefinition,
  BackupRequest,
  DeleteBackupDataRequest,
  FlattenRequest,
  RestoreMode,
  RestoreRequest,
} from "../gen/rbdbackup/v1/agent";

/** Lab leases live this long (the tests' longest operations take minutes). */
const LAB_TTL_MS = 60 * 60_000;

export interface LabHolder {
  cluster: string;
  agentId: string;
  /** The callee's default backup pool (what it writes into when a request names none). */
  backupPool: string;
}

/** A transfer capability for a backup's stream, as the coordinator mints it. */
export function backupTransferFields(req: BackupRequest, defaultPool: string): Fields {
  const src = req.source;
  return backupTransferAllows({
    backupId: req.backupId,
    pool: req.destinationPool || defaultPool,
    namespace: req.destinationNamespace,
    volumeImage: src?.$case === "volume" ? src.value.image : req.sourceName,
  });
}

/** A transfer capability for a restore's stream, as the coordinator mints it. */
export function restoreTransferFields(req: RestoreRequest): Fields {
  return restoreTransferAllows({
    backupId: req.backupId,
    pool: req.target?.pool ?? "",
    namespace: req.target?.namespace ?? "",
    image: req.target?.image ?? "",
    mode: req.mode === RestoreMode.RESTORE_MODE_ORIGINAL ? "original" : "new",
  });
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

  mint(scope: "operation" | "transfer", allows: Fields, holder: { cluster: string; agentId: string } = this.holder) {
    return this.signer.sign(
      { scope, job: "lab", attempt: 1, holder: { cluster: holder.cluster, agentId: holder.agentId }, allows },
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
    if (!call.requestStream && !md.has(LEASE_METADATA_KEY)) {
      let asks: Fields | null = null;
      if (method === "Backup") {
        const r = BackupRequest.fromPartial(request as BackupRequest);
        r.transferCapability ||= minter.mint("transfer", backupTransferFields(r, minter.holder.backupPool));
        asks = backupOperationAsks(r);
        request = r;
      } else if (method === "Restore") {
        const r = RestoreRequest.fromPartial(request as RestoreRequest);
        r.transferCapability ||= minter.mint("transfer", restoreTransferFields(r));
        asks = restoreOperationAsks(r);
        request = r;
      } else if (method === "DeleteBackup") {
        asks = deleteOperationAsks(DeleteBackupDataRequest.fromPartial(request as DeleteBackupDataRequest));
      } else if (method === "Flatten") {
        asks = flattenOperationAsks(FlattenRequest.fromPartial(request as FlattenRequest));
      }
      if (asks) md.set(LEASE_METADATA_KEY, minter.mint("operation", asks));
    }
    return yield* call.next(request as typeof call.request, { ...options, metadata: md });
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
