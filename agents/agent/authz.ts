/**
 * Who may call an agent's AgentService, and what a direct call may do (issue 12, least privilege):
 *
 * - Who: a grpc-js server interceptor (it sees the TLS peer, which nice-grpc handlers do not) reads the
 *   identity in the caller's verified certificate (src/common/identity.ts). Only the coordinator may
 *   call AgentService; anyone else gets PERMISSION_DENIED before a handler runs, and a certificate in
 *   the agent's auth.revokedCertificatesFile UNAUTHENTICATED (a leaked coordinator key is shut out
 *   without a new CA; the leases it signs are refused too: CapabilityVerifier). grpc.health.v1 stays
 *   open; other paths are left to grpc-js (UNIMPLEMENTED).
 * - What: a mutating call (Backup, Restore, DeleteBackup, Flatten) must carry the operation lease the coordinator
 *   signed for this agent (metadata `rbdbackup-lease`), and the lease must allow exactly what the
 *   request asks (src/common/grants.ts). Checked before the operation touches anything.
 *
 * Leases that arrive over the agent's own coordinator session do not pass here: the session is the
 * agent's own authenticated connection to the coordinator (coordinator-link.ts checks its far end).
 * Insecure mode (tests only) has no certificates: both checks are off.
 *
 * Every refusal is an audit line and counts in the refusal metric (agents/transfer/authz-audit.ts); a
 * caller refused by the interceptor gets its answer after its request was read (never handled), so the
 * line names the request's target (src/common/call-identity.ts). The interceptor also puts the caller's
 * identity in the call's metadata (CALLER_METADATA_KEY, replacing whatever the client sent), so the
 * handlers can name the caller in their audit lines.
 */
import { readFileSync } from "node:fs";
import {
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  status,
} from "@grpc/grpc-js";
import { callerIdentity, peerCertificate, refusalListener, refuseAfterRequest } from "../../src/common/call-identity";
import { CapabilityVerifier, checkAllows, LEASE_METADATA_KEY } from "../../src/common/capability";
import { backupOperationAsks, deleteOperationAsks, type Fields, restoreOperationAsks } from "../../src/common/grants";
import { describeIdentity, type Identity } from "../../src/common/identity";
import type { Logger } from "../../src/common/log";
import { type Revoked, revokedFingerprint } from "../../src/common/revocations";
import type { TlsConfig } from "../../src/common/tls";
import {
  AGENT_SERVICE,
  type AuthzAudit,
  capabilityReason,
  identityName,
  type RefusalReason,
} from "../transfer/authz-audit";

/** A caller AgentService refuses: the status, the refusal metric's reason, the message. */
export interface Refusal {
  code: status;
  reason: RefusalReason;
  details: string;
}

const AGENT_SERVICE_PREFIX = `/${AGENT_SERVICE}/`;

/** Metadata the interceptor sets (never the client): the caller's identity as in audit lines. */
export const CALLER_METADATA_KEY = "rbdbackup-audit-caller";

/**
 * What an AgentService request is about, for audit lines: the fields a lease would have to allow
 * (Backup, Restore, DeleteBackup), else the image, pool and backup id it names; "" when unreadable.
 */
export function requestTarget(path: string, request: unknown): string {
  if (!request || typeof request !== "object") return "";
  const method = path.slice(path.lastIndexOf("/") + 1);
  try {
    // biome-ignore lint/suspicious/noExplicitAny: a deserialized request of the method named by path
    const r = request as any;
    if (method === "Backup") return describeAsks(backupOperationAsks(r));
    if (method === "Restore") return describeAsks(restoreOperationAsks(r));
    if (method === "DeleteBackup") return describeAsks(deleteOperationAsks(r));
    const im = r.image as { pool?: string; namespace?: string; image?: string } | undefined;
    const parts: Fields = {};
    if (im?.image) parts.image = `${im.pool ?? ""}/${im.namespace ?? ""}/${im.image}`;
    if (typeof r.pool === "string") parts.pool = r.pool;
    if (typeof r.backupId === "string") parts.backupId = r.backupId;
    return describeAsks(parts);
  } catch {
    return "";
  }
}

/**
 * Why a caller may not call AgentService; null when it may (the coordinator). `revoked`: its
 * certificate's fingerprint when this agent's revocation list names it (UNAUTHENTICATED, as at the
 * coordinator); anyone but the coordinator is PERMISSION_DENIED.
 */
export function agentServiceRefusal(id: Identity | null, revoked: string | null = null): Refusal | null {
  if (revoked) {
    return {
      code: status.UNAUTHENTICATED,
      reason: "revoked_certificate",
      details: `this certificate (sha256 ${revoked}) is revoked (this agent's auth.revokedCertificatesFile): use a newly issued one`,
    };
  }
  if (id?.kind === "coordinator") return null;
  return {
    code: status.PERMISSION_DENIED,
    reason: id ? "wrong_kind" : "no_identity",
    details: `AgentService is only for the coordinator (the caller is ${describeIdentity(id)})`,
  };
}

/**
 * The interceptor: AgentService only for the coordinator's certificate. `identityOf` is replaceable
 * for unit tests (a fake call has no TLS).
 */
export function agentServiceInterceptor(opts: {
  insecure: boolean;
  log?: Logger;
  audit?: AuthzAudit;
  identityOf?: (call: ServerInterceptingCallInterface) => Identity | null;
  /** Certificates refused whatever they name (auth.revokedCertificatesFile). */
  revoked?: Revoked;
}): ServerInterceptor {
  const identityOf = opts.identityOf ?? callerIdentity;
  const revokedOf = (call: ServerInterceptingCallInterface): string | null => {
    const raw = opts.revoked ? peerCertificate(call) : undefined;
    return raw ? revokedFingerprint(opts.revoked, raw) : null;
  };
  return (methodDescriptor, call) => {
    const path = methodDescriptor.path;
    return new ServerInterceptingCall(call, {
      start: (next) => {
        next({
          ...refusalListener(call),
          onReceiveMetadata: (md, mdNext) => {
            if (!path.startsWith(AGENT_SERVICE_PREFIX)) return mdNext(md);
            md.remove(CALLER_METADATA_KEY);
            if (opts.insecure) {
              md.set(CALLER_METADATA_KEY, "insecure");
              return mdNext(md);
            }
            const id = identityOf(call);
            md.set(CALLER_METADATA_KEY, identityName(id));
            const refusal = agentServiceRefusal(id, revokedOf(call));
            if (refusal === null) return mdNext(md);
            refuseAfterRequest(call, (request) => {
              const target = requestTarget(path, request);
              opts.log?.warn("refused an AgentService call", { method: path, caller: describeIdentity(id), target });
              opts.audit?.refused({
                identity: identityName(id),
                method: path,
                target,
                reason: refusal.reason,
                message: refusal.details,
                result: status[refusal.code],
              });
              return { code: refusal.code, details: refusal.details };
            });
          },
        });
      },
    });
  };
}

/** Checks the operation lease of a direct AgentService call; a no-op in insecure mode. */
export class LeaseCheck {
  constructor(
    /** null: insecure mode, nothing to check against. */
    readonly verifier: CapabilityVerifier | null,
    /** This agent, the holder every lease presented to it must name. */
    readonly self: { cluster: string; agentId: string },
    readonly log?: Logger,
    readonly audit?: AuthzAudit,
  ) {}

  static fromTls(
    tls: TlsConfig,
    self: { cluster: string; agentId: string },
    log?: Logger,
    audit?: AuthzAudit,
    revoked?: Revoked,
  ): LeaseCheck {
    if (tls.insecure || !tls.ca) return new LeaseCheck(null, self, log, audit);
    return new LeaseCheck(new CapabilityVerifier(readFileSync(tls.ca), Date.now, revoked), self, log, audit);
  }

  /**
   * PERMISSION_DENIED (AppError) unless `lease` is this agent's and allows exactly `asks`. `method` is
   * the method's name ("DeleteBackup"); `caller` the identity the interceptor put in the metadata.
   */
  check(method: string, lease: string | undefined, asks: Fields, caller = "none"): void {
    if (!this.verifier) return;
    try {
      checkAllows(this.verifier.verify(lease, "operation", this.self), asks);
    } catch (e) {
      const message = (e as Error).message;
      const reason = capabilityReason(e);
      this.log?.warn("refused an AgentService call: its lease does not allow it", { method, error: message });
      this.audit?.refused({
        identity: caller,
        method: `${AGENT_SERVICE_PREFIX}${method}`,
        target: describeAsks(asks),
        reason,
        message,
      });
      throw e;
    }
  }

  /** The caller the interceptor recorded in a call's metadata ("none" when it is not there). */
  static callerOf(md: { get(key: string): unknown }): string {
    const v = md.get(CALLER_METADATA_KEY);
    const s = Array.isArray(v) ? v[0] : v;
    return typeof s === "string" && s ? s : "none";
  }

  /** The lease in a call's metadata (nice-grpc's Metadata or grpc-js's). */
  static leaseOf(md: { get(key: string): unknown }): string | undefined {
    const v = md.get(LEASE_METADATA_KEY);
    const s = Array.isArray(v) ? v[0] : v;
    return typeof s === "string" ? s : undefined;
  }
}

/** A request's fields as an audit target: "backupId=… backup=pool/ns/image" (the op itself is the method). */
export function describeAsks(asks: Fields): string {
  return Object.entries(asks)
    .filter(([k, v]) => k !== "op" && v !== "")
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}
