/**
 * The agent's audit of authorization (issue 12): every refused AgentService or TransferService call,
 * and every accepted mutating direct AgentService call when it ends, is one JSON line (the common
 * AuditLog, src/common/audit.ts: the log with `"audit": true`, and the agent config's `audit.file` when
 * set) with the caller's identity (certificate URI, or "none"), the method, the target (what the
 * request or header named, "" when not known), the result (a status name) and, for a refusal, the
 * reason. Refusals also count in rbdbackup_authorization_refusals_total{service, reason} — the
 * coordinator's metric name and reason vocabulary (src/coordinator/audit.ts), on the agent's /metrics.
 *
 * It lives in the transfer layer because both the data plane (transfer-authz.ts, data-plane-server.ts)
 * and AgentService (agents/agent/authz.ts) refuse callers; the counter is passed in (agent/metrics.ts).
 */
import { type AuditLine, AuditLog } from "../../src/common/audit";
import { CapabilityError, type CapabilityRefusalReason } from "../../src/common/capability";
import { AppError, Status } from "../../src/common/errors";
import { type Identity, identityUri } from "../../src/common/identity";
import type { Logger } from "../../src/common/log";

/**
 * Why a call was refused (the metric's reason label; the coordinator's names where they mean the same):
 * - revoked_certificate: the caller's certificate, or the one that signed its capability, is in
 *   auth.revokedCertificatesFile;
 * - no_identity: the certificate names no rbdbackup:// identity;
 * - wrong_kind: an identity of the wrong kind (an agent calling AgentService, a client calling Transfer);
 * - no_capability: the call carries no lease/capability;
 * - bad_capability: malformed, expired, of the wrong scope, not signed by the coordinator;
 * - identity_mismatch: a genuine capability issued to another agent;
 * - not_covered: a genuine capability that does not allow what the request asks.
 */
/** Every refusal reason of an agent (the refusal metric's `reason` values). */
export const REFUSAL_REASONS = [
  "revoked_certificate",
  "no_identity",
  "wrong_kind",
  "no_capability",
  "bad_capability",
  "identity_mismatch",
  "not_covered",
] as const satisfies readonly ("no_identity" | "wrong_kind" | CapabilityRefusalReason)[];
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export const AGENT_SERVICE = "rbdbackup.v1.AgentService";
export const TRANSFER_SERVICE = "rbdbackup.v1.TransferService";
/** The coordinator's session service: this agent refuses a coordinator presenting a revoked certificate. */
export const SESSION_SERVICE = "rbdbackup.v1.CoordinatorAgentService";
export const SESSION_METHOD = `/${SESSION_SERVICE}/Session`;

/** An audit line of the agent: identity is the certificate's URI, "none" or "insecure" (test mode). */
export type AuditEntry = AuditLine & { reason?: RefusalReason };

/** The identity field of an audit line. */
export function identityName(id: Identity | null): string {
  return id ? identityUri(id) : "none";
}

/** The service of a "/pkg.Service/Method" path ("unknown" when it is none). */
export function serviceOf(method: string): string {
  return /^\/([^/]+)\//.exec(method)?.[1] ?? "unknown";
}

/** The reason label of a capability/lease refusal: the CapabilityError's own; bad_capability for anything else. */
export function capabilityReason(e: unknown): RefusalReason {
  return e instanceof CapabilityError ? e.reason : "bad_capability";
}

/** The result field of an error: its status name. */
export function resultOf(e: unknown): string {
  const code = e instanceof AppError ? e.status : (e as { code?: unknown })?.code;
  return typeof code === "number" ? (Status[code] ?? String(code)) : "INTERNAL";
}

/** The message a caller got for an error (a nice-grpc ServerError's details, else the message). */
export function messageOf(e: unknown): string {
  const d = (e as { details?: unknown })?.details;
  if (typeof d === "string") return d;
  return e instanceof Error ? e.message : String(e);
}

export class AuthzAudit {
  readonly #out: AuditLog;

  constructor(
    readonly log: Logger,
    /** Counts a refusal (the agent's metrics); none in tests that only read the lines. */
    readonly count: (service: string, reason: RefusalReason) => void = () => {},
    /** A file the lines are appended to too (agent config `audit.file`); "" = the log only. */
    readonly file = "",
  ) {
    this.#out = new AuditLog(log, file);
  }

  record(e: AuditEntry): void {
    this.#out.record(e);
  }

  close(): void {
    this.#out.close();
  }

  /** SIGHUP: the audit file opened again at its path (log rotation). */
  reopen(): boolean {
    return this.#out.reopen();
  }

  /** A refused call: counted by service and reason, and written. */
  refused(e: Omit<AuditEntry, "result"> & { reason: RefusalReason; result?: string }): void {
    this.count(serviceOf(e.method), e.reason);
    this.record({ result: "PERMISSION_DENIED", ...e });
  }
}
