/**
 * The coordinator's audit log: one JSON line per mutating API call (when it ended, allowed or refused),
 * per agent registration (accepted or refused) and per refused authorization, written by the common
 * AuditLog (src/common/audit.ts: the logger with `"audit": true`, and `auth.auditLog` when set).
 * Refusals also count in rbdbackup_authorization_refusals_total{service, reason} (registered with the
 * coordinator's metrics).
 */
import client from "prom-client";
import { type AuditLine, AuditLog } from "../common/audit";
import type { Logger } from "../common/log";
import { BACKUP_SERVICE, REFUSAL_REASONS, type RefusalReason, SESSION_SERVICE } from "./authz";

/** The services the refusal metric names; any other path a caller sends counts as "other" (bounded labels). */
const COUNTED_SERVICES = [BACKUP_SERVICE, SESSION_SERVICE];

/** An audit line of the coordinator: the caller as authz.ts callerName names it, its reasons. */
export type AuditEntry = AuditLine & { reason?: RefusalReason };

export class Audit {
  readonly refusals = new client.Counter({
    name: "rbdbackup_authorization_refusals_total",
    help: "Calls refused by authentication or authorization, by service and reason (no_credential, bad_token, no_identity, wrong_role, wrong_kind, identity_mismatch, fsid_mismatch, agent_id_taken, duplicate_session, no_lease, unknown_method, revoked_certificate, out_of_scope).",
    labelNames: ["service", "reason"],
    registers: [],
  });
  readonly #out: AuditLog;

  constructor(
    readonly log: Logger,
    readonly file = "",
  ) {
    this.#out = new AuditLog(log, file);
    // Every series the alert takes increase() of exists at 0 from the start (one born at 6 reads as 0).
    for (const service of COUNTED_SERVICES)
      for (const reason of REFUSAL_REASONS) this.refusals.labels(service, reason).inc(0);
  }

  record(e: AuditEntry): void {
    this.#out.record(e);
  }

  /** SIGHUP: the audit file opened again at its path (log rotation). */
  reopen(): boolean {
    return this.#out.reopen();
  }

  /** A refused call: counted by service and reason, and written. */
  refused(service: string, e: AuditEntry & { reason: RefusalReason }): void {
    this.refusals.labels(COUNTED_SERVICES.includes(service) ? service : "other", e.reason).inc();
    this.record(e);
  }

  close(): void {
    this.#out.close();
  }
}
